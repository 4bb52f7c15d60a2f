"""sentmim.console: a quiet console. A command's stderr holds no library progress bars (transformers' "Loading
weights" / "Writing model shards", datasets' map bars), no environment dump, no sacreBLEU warnings about our
deliberate tokenize='none' and no INFO lines, unless --verbose (sentmim's INFO lines) or --debug (the libraries'
too); our own bars draw on a terminal only."""

import contextlib
import io
import logging
import shutil
import warnings

import datasets
import huggingface_hub.utils
import pytest
import torch
from transformers.utils import logging as transformers_logging

from sentmim import SentenceMIMModel, metrics
from sentmim.cli import main
from sentmim.console import configure_console
from sentmim.evaluation import evaluate
from tests.conftest import TINY_TRAIN

LIBRARY_BARS = ("Loading weights", "Writing model shards", "Generating train split", "examples/s", "it/s")


@contextlib.contextmanager
def fresh_console(**options):
    """configure_console(**options) as in a new `sentmim` process: no handler on the root logger yet (pytest's are
    set aside meanwhile); every global switch it touches is restored afterwards. Yields the Python warnings shown
    meanwhile (pytest records them in place of printing them)."""
    root = logging.getLogger()
    loggers = {name: logging.getLogger(name).level for name in ("sentmim", "accelerate")}
    saved = (root.handlers[:], root.level, transformers_logging.get_verbosity(), datasets.logging.get_verbosity(),
             datasets.are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled(),
             huggingface_hub.utils.are_progress_bars_disabled())
    root.handlers = []
    try:
        with warnings.catch_warnings(record=True) as shown:
            configure_console(**options)
            yield shown
    finally:
        handlers, level, transformers_level, datasets_level, datasets_off, transformers_on, hub_off = saved
        root.handlers = handlers
        root.setLevel(level)
        for name, logger_level in loggers.items():
            logging.getLogger(name).setLevel(logger_level)
        transformers_logging.set_verbosity(transformers_level)
        datasets.logging.set_verbosity(datasets_level)
        (datasets.disable_progress_bars if datasets_off else datasets.enable_progress_bars)()
        (transformers_logging.enable_progress_bar if transformers_on else transformers_logging.disable_progress_bar)()
        (huggingface_hub.utils.disable_progress_bars if hub_off else huggingface_hub.utils.enable_progress_bars)()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def model_dir(cli_run, tmp_path):
    """A copy of the session's tiny trained run (evaluate writes its results beside the model)."""
    return shutil.copytree(cli_run, tmp_path / "run")


def evaluate_command(model_dir, corpus_file, *flags) -> list[str]:
    # The training split: every word in the model's vocabulary, so nothing calls for a warning.
    return [*flags, "evaluate", str(model_dir), "--dataset", str(corpus_file), "--split", "train",
            "--max-sentences", "20", "--iw-samples", "2", "--batch-size", "4"]


def test_evaluate_writes_nothing_on_stderr_by_default(model_dir, corpus_file, capfd):
    capfd.readouterr()
    with fresh_console(verbose=False) as shown:
        assert main(evaluate_command(model_dir, corpus_file)) == 0
    out, err = capfd.readouterr()
    assert "IW-NLL" in out
    assert err == ""  # no bars (ours draw on a terminal only), no INFO lines, no logged warnings
    assert [str(warning.message) for warning in shown] == []


def test_verbose_shows_sentmims_info_lines_and_still_no_library_bars(model_dir, corpus_file, capfd):
    capfd.readouterr()
    with fresh_console(verbose=True):
        assert main(evaluate_command(model_dir, corpus_file, "--verbose")) == 0
    err = capfd.readouterr().err
    info = [line for line in err.splitlines() if " - INFO - " in line]
    assert info and all(" - INFO - sentmim." in line for line in info), err
    assert any("carved" in line for line in info)  # the validation split is cut from train, as in training
    assert not any(bar in err for bar in LIBRARY_BARS), err


def test_training_shows_no_shard_bars_no_environment_dump_no_info(corpus_file, tmp_path, capfd):
    capfd.readouterr()
    with fresh_console(verbose=False) as shown:
        assert main(["train", "--dataset", str(corpus_file), "--output-dir", str(tmp_path / "run"), *TINY_TRAIN]) == 0
    err = capfd.readouterr().err
    assert [str(warning.message) for warning in shown] == []
    assert "Writing model shards" not in err and "Distributed environment" not in err and "Num processes" not in err
    assert " - INFO - " not in err
    assert "\r" not in err  # not a terminal: no bar at all


@pytest.mark.parametrize(("options", "lowest"), [
    ({}, {"sentmim": "WARNING", "libraries": "WARNING"}),
    ({"verbose": True}, {"sentmim": "INFO", "libraries": "WARNING"}),
    ({"debug": True}, {"sentmim": "DEBUG", "libraries": "INFO"}),
    ({"verbose": True, "main_process": False}, {"sentmim": "ERROR", "libraries": "ERROR"}),
])
def test_log_levels(options, lowest, capfd):
    """The lowest level each logger shows: accelerate's INFO (its environment, every state it saves) and that of
    transformers and datasets only with debug; a process other than the main one only reports errors."""
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    capfd.readouterr()
    with fresh_console(**options):
        for name in ("sentmim.training", "accelerate.checkpointing"):
            for level in levels:
                logging.getLogger(name).log(getattr(logging, level), "%s from %s", level, name)
        # transformers and datasets write through handlers of their own, bound to the stderr of their import
        assert transformers_logging.get_verbosity() == getattr(logging, lowest["libraries"])
        assert datasets.logging.get_verbosity() == getattr(logging, lowest["libraries"])
    err = capfd.readouterr().err
    for name, shown_from in (("sentmim", lowest["sentmim"]), ("accelerate", lowest["libraries"])):
        for level in levels:
            expected = levels.index(level) >= levels.index(shown_from)
            assert (f"{level} from {name}." in err) == expected, (name, level, err)


def test_bleu_logs_no_warning_about_tokenized_text(capfd):
    """tokenize='none' is deliberate (the texts are space-joined tokens): sacreBLEU's "forgot to detokenize"
    warnings, three per call from 100 sentences ending in " .", must not reach the console."""
    sentences = [f"sentence number {index} ends here ." for index in range(150)]
    capfd.readouterr()
    with fresh_console() as shown:
        assert metrics.corpus_bleu(sentences, sentences) == pytest.approx(100.0)
        assert metrics.mean_sentence_bleu1(sentences, sentences) == pytest.approx(1.0)
        assert "tok:none" in metrics.bleu_signature()
    assert capfd.readouterr().err == "" and not shown


@pytest.mark.parametrize("debug", [False, True])
def test_only_unactionable_warnings_are_hidden_and_not_with_debug(debug):
    with fresh_console(debug=debug) as shown:
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("`is_gradient_checkpointing` is slow", UserWarning, stacklevel=1)  # another category
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    messages = [str(warning.message) for warning in shown]
    assert ("`is_gradient_checkpointing` is deprecated and will be removed in v6." in messages) == debug
    assert "`is_gradient_checkpointing` is slow" in messages and "something else is deprecated" in messages


def test_library_bars_only_when_asked_for_progress_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", Terminal())
    with fresh_console():
        assert not datasets.are_progress_bars_disabled()
        assert not transformers_logging.is_progress_bar_enabled()  # weights loaded and written: never a bar
    with fresh_console(progress=False):
        assert datasets.are_progress_bars_disabled()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file
    with fresh_console():
        assert datasets.are_progress_bars_disabled() and not transformers_logging.is_progress_bar_enabled()


def test_the_evaluation_bar_draws_on_a_terminal_only(tiny_config, batch, monkeypatch):
    input_ids, attention_mask = batch
    model = SentenceMIMModel(tiny_config())
    batches = [{"input_ids": input_ids, "attention_mask": attention_mask}]
    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        torch.manual_seed(0)
        evaluate(model, batches, iw_samples=0, bleu=False, progress=True)
        assert ("evaluate: 100%" in stream.getvalue()) == drawn
