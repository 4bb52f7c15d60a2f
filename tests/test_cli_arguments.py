"""Every `sentmim` flag reaches the function that uses it, with the documented default when it is left out.

The work itself (training, evaluation, the demo, the pipeline) is replaced by recorders: these tests pin down the
command line -> library wiring in milliseconds; the end-to-end runs are in test_cli*.py."""


import re
import sys

import numpy as np
import pytest

from sentmim import cli
from sentmim import options as opts

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches


@pytest.fixture
def recorded(monkeypatch):
    """Replace each command's worker by a recorder; returns {name: (args, kwargs)} of the calls."""
    import sentmim.apps.demo
    import sentmim.assembly
    import sentmim.evaluate_folder
    import sentmim.reporting

    calls = {}

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls[name] = (args, kwargs)
            return result
        return record

    monkeypatch.setattr(sentmim.assembly, "train_from_options",
                        recorder("train", (None, None, {"step": 1, "best_val_loss": 2.0})))
    monkeypatch.setattr(sentmim.evaluate_folder, "evaluate_folder", recorder("evaluate_folder", {}))
    monkeypatch.setattr(sentmim.reporting, "format_results", recorder("format_results", "table"))
    monkeypatch.setattr(sentmim.apps.demo, "run_demo", recorder("run_demo"))
    return calls


# -- train ---------------------------------------------------------------------------------------------------------

TRAINING_FLAGS = {  # flag value -> TrainingArguments field, every one away from its default
    "--batch-size": ("7", "batch_size", 7), "--eval-batch-size": ("9", "eval_batch_size", 9),
    "--max-steps": ("11", "max_steps", 11), "--epochs": ("2.5", "epochs", 2.5),
    "--learning-rate": ("0.02", "learning_rate", 0.02), "--optimizer": ("adamw", "optimizer", "adamw"),
    "--weight-decay": ("0.1", "weight_decay", 0.1), "--max-grad-norm": ("0.7", "max_grad_norm", 0.7),
    "--lr-scheduler": ("cosine", "lr_scheduler", "cosine"), "--warmup-steps": ("3", "warmup_steps", 3),
    "--gradient-accumulation-steps": ("4", "gradient_accumulation_steps", 4),
    "--mixed-precision": ("bf16", "mixed_precision", "bf16"), "--eval-steps": ("13", "eval_steps", 13),
    "--save-steps": ("17", "save_steps", 17), "--logging-steps": ("19", "logging_steps", 19),
    "--early-stopping-patience": ("5", "early_stopping_patience", 5),
    "--report-to": ("tensorboard", "report_to", "tensorboard"), "--seed": ("23", "seed", 23),
}
RUN_FLAGS = {  # -> RunOptions field
    "--dataset": ("some/folder", "dataset", "some/folder"), "--dataset-config": ("cfg", "dataset_config", "cfg"),
    "--split": ("train[:10]", "split", "train[:10]"), "--text-column": ("body", "text_column", "body"),
    "--max-length": ("40", "max_length", 40), "--overlong": ("truncate", "overlong", "truncate"),
    "--validation-fraction": ("0.2", "validation_fraction", 0.2), "--tokenizer": ("bpe", "tokenizer", "bpe"),
    "--vocab-size": ("500", "vocab_size", 500), "--min-frequency": ("3", "min_frequency", 3),
    "--init-from": ("runs/old", "init_from", "runs/old"),
}
MODEL_FLAGS = {  # -> RunOptions.model entry (SentenceMIMConfig field)
    "--objective": ("vae", "vae"), "--architecture": ("transformer", "transformer"), "--latent-size": ("16", 16),
    "--hidden-size": ("24", 24), "--embedding-size": ("12", 12), "--num-layers": ("2", 2),
    "--num-attention-heads": ("3", 3), "--dropout": ("0.3", 0.3), "--embedding-dropout": ("0.2", 0.2),
    "--word-dropout": ("0.1", 0.1), "--kl-schedule": ("cyclical", "cyclical"), "--kl-anneal-steps": ("77", 77),
    "--kl-cycle-steps": ("88", 88), "--free-bits": ("0.5", 0.5),
}


def test_every_train_flag_reaches_the_run(recorded, capsys):
    argv = ["train", "--output-dir", "runs/x", "--lowercase", "--streaming", "--cpu", "--overwrite"]
    for flags in (TRAINING_FLAGS, RUN_FLAGS):
        for flag, (value, *_) in flags.items():
            argv += [flag, value]
    for flag, (value, _) in MODEL_FLAGS.items():
        argv += [flag, value]
    assert cli.main(argv) == 0
    (dataset, data, tokenizer, model, training), _ = recorded["train"]
    for flag, (_, field, expected) in TRAINING_FLAGS.items():
        assert getattr(training, field) == expected, flag
    assert (training.output_dir, training.cpu, training.overwrite) == ("runs/x", True, True)
    for flag, (_, field, expected) in RUN_FLAGS.items():
        owner = next(part for part in (dataset, data, tokenizer, model) if hasattr(part, field))
        assert getattr(owner, field) == expected, flag
    assert data.lowercase and data.streaming
    for flag, (_, expected) in MODEL_FLAGS.items():
        field = flag[2:].replace("-", "_")
        owner = model if hasattr(model, field) else training
        assert getattr(owner, field) == expected, flag
    assert "trained 1 steps; best validation loss 2.0; model in runs/x" in capsys.readouterr().out


def test_train_defaults_are_the_libraries_defaults(recorded):
    assert cli.main(["train", "--output_dir", "runs/y"]) == 0  # the underscore spelling works too
    (dataset, data, tokenizer, model, training), _ = recorded["train"]
    assert training == opts.TrainingOptions(output_dir="runs/y")
    assert (dataset, data, tokenizer, model) == (opts.DatasetOptions(), opts.DataOptions(), opts.TokenizerOptions(),
                                                 opts.ModelOptions())


def test_train_needs_an_output_dir_and_checks_choices(recorded, capsys):
    bad_choices = [["--tokenizer", "char"], ["--overlong", "wrap"], ["--optimizer", "sgd"]]
    assert cli.main(["train"]) == 2
    assert "--output-dir" in capsys.readouterr().err
    for flag, value in bad_choices:  # refused by the parser, which names the flag, before anything runs
        assert cli.main(["train", "--output-dir", "x", flag, value]) == 2
        assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err
    assert "train" not in recorded
    for flag, values in {"--overlong": ("drop", "truncate"), "--tokenizer": ("word", "bpe", "unigram"),
                         "--optimizer": ("adam", "adamw"), "--report-to": ("none", "tensorboard")}.items():
        for value in values:  # every documented choice is accepted
            assert cli.main(["train", "--output-dir", "x", flag, value]) == 0, (flag, value)


# -- evaluate, demo, benchmark --------------------------------------------------------------------------------------


def test_evaluate_flags_and_defaults(recorded, capsys):
    assert cli.main(["evaluate", "runs/m"]) == 0
    args, kwargs = recorded["evaluate_folder"]
    assert args == ("runs/m", "builtin")
    assert kwargs == dict(dataset_config=None, split="test", text_column=None, batch_size=64, iw_samples=500,
                          max_sentences=None, seed=0, plots_dir=None, progress=True, split_sentences=False,
                          width_sentences=200)
    assert cli.main(["evaluate", "runs/m", "--dataset", "d", "--dataset-config", "c", "--split", "validation",
                     "--text-column", "t", "--batch-size", "8", "--iw-samples", "9", "--max-sentences", "10",
                     "--plots", "p", "--seed", "4", "--split-sentences", "--width-sentences", "11"]) == 0
    args, kwargs = recorded["evaluate_folder"]
    assert args == ("runs/m", "d")
    assert kwargs == dict(dataset_config="c", split="validation", text_column="t", batch_size=8, iw_samples=9,
                          max_sentences=10, seed=4, plots_dir="p", progress=True, split_sentences=True,
                          width_sentences=11)
    assert capsys.readouterr().out == "table\ntable\n"


def test_demo_flags_and_defaults(recorded):
    from sentmim.apps.demo import DemoOptions

    assert cli.main(["demo"]) == 0
    assert recorded["run_demo"][0] == (DemoOptions(output_dir="runs/demo", max_steps=6000, mim_warmup_steps=3000,
                                                   seed=0),)
    assert cli.main(["demo", "--output-dir", "d", "--max-steps", "5", "--mim-warmup-steps", "3", "--seed", "2"]) == 0
    assert recorded["run_demo"][0] == (DemoOptions(output_dir="d", max_steps=5, mim_warmup_steps=3, seed=2),)


# -- the text commands ----------------------------------------------------------------------------------------------


class RecordingPipeline:
    """Stands in for SentenceMIMPipeline: records each call, answers with one line per input."""

    def __init__(self):
        self.calls = []

    def reconstruct(self, sentences, **kwargs):
        self.calls.append(("reconstruct", sentences, kwargs))
        return [f"out {index}" for index, _ in enumerate(sentences)]

    def interpolate(self, *args):
        self.calls.append(("interpolate", args))
        return ["a", "b", "c"]

    def sample(self, n, **kwargs):
        self.calls.append(("sample", n, kwargs))
        return [f"sample {index}" for index in range(n)]

    def encode(self, sentences):
        import torch

        self.calls.append(("encode", sentences))
        return torch.ones(len(sentences), 3)


@pytest.fixture
def pipeline(monkeypatch):
    fake = RecordingPipeline()
    monkeypatch.setattr(cli, "load_pipeline", lambda model_dir: fake)
    return fake


def test_text_commands_pass_their_options(pipeline, tmp_path, capsys):
    assert cli.main(["reconstruct", "m", "one", "two"]) == 0
    assert pipeline.calls[-1] == ("reconstruct", ["one", "two"], {"mode": "mean", "num_beams": 1})
    assert cli.main(["reconstruct", "m", "one", "--mode", "perturb", "--num-beams", "3"]) == 0
    assert pipeline.calls[-1] == ("reconstruct", ["one"], {"mode": "perturb", "num_beams": 3})
    assert cli.main(["interpolate", "m", "x", "y"]) == 0
    assert pipeline.calls[-1] == ("interpolate", ("x", "y", 8, "linear"))
    assert cli.main(["interpolate", "m", "x", "y", "--steps", "2", "--method", "slerp"]) == 0
    assert pipeline.calls[-1] == ("interpolate", ("x", "y", 2, "slerp"))
    assert cli.main(["sample", "m"]) == 0
    defaults = {"temperature": 1.0, "seed": None, "prior": "standard", "repetition_penalty": 1.0,
                "no_repeat_ngram_size": 0}
    assert pipeline.calls[-1] == ("sample", 10, defaults)
    assert cli.main(["sample", "m", "-n", "2", "--temperature", "0.5", "--seed", "7", "--prior", "aggregate",
                     "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "3"]) == 0
    assert pipeline.calls[-1] == ("sample", 2, {"temperature": 0.5, "seed": 7, "prior": "aggregate",
                                                "repetition_penalty": 1.2, "no_repeat_ngram_size": 3})
    assert cli.main(["sample", "m", "--prior", "uniform"]) == 2
    output = tmp_path / "z.npy"
    assert cli.main(["encode", "m", "s1", "s2", "--output", str(output)]) == 0
    assert pipeline.calls[-1] == ("encode", ["s1", "s2"]) and np.load(output).shape == (2, 3)
    out = capsys.readouterr().out
    assert "input:  one\noutput: out 0" in out and "  1  b" in out and "sample 1" in out


def test_the_benchmark_preset_on_the_command_given_sets_its_defaults():
    """main(argv) takes the preset from argv, not from the process's own command line."""
    from sentmim.apps.benchmark_settings import PRESETS
    from sentmim.cli import build_parser

    argv = ["benchmark", "--preset", "smoke", "--output-dir", "out"]
    args = build_parser(argv).parse_args(argv)
    assert (args.max_steps, args.dataset, args.latent_sizes) == (
        PRESETS["smoke"]["max_steps"], PRESETS["smoke"]["dataset"], PRESETS["smoke"]["latent_sizes"])


def test_the_console_script_takes_the_benchmark_preset_from_its_command_line(monkeypatch):
    """The installed `sentmim` calls main() with no argv: the preset then comes from sys.argv."""
    from sentmim.apps.benchmark_settings import PRESETS
    from sentmim.cli import build_parser

    argv = ["benchmark", "--preset", "smoke", "--output-dir", "out"]
    monkeypatch.setattr(sys, "argv", ["sentmim", *argv])
    args = build_parser().parse_args(argv)
    assert args.max_steps == PRESETS["smoke"]["max_steps"] != PRESETS["cpu"]["max_steps"]


def test_a_word_where_a_number_goes_is_named_in_one_line(capsys):
    from sentmim.cli import main

    assert main(["train", "--output-dir", "out", "--learning-rate", "fast"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sentmim train: error: argument --learning-rate: 'fast' is not a number (see sentmim train --help)")


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "reconstruct", "interpolate", "encode", "demo",
                                     "benchmark"])
def test_help_shows_each_default_once(command, capsys):
    # An option whose help gives its default in words (what None stands for) used to show "(default: None)" after
    # it; under a benchmark preset, the words must give way to the preset's value.
    with pytest.raises(SystemExit):
        cli.build_parser([command]).parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None) (default:" not in text
    doubled = re.findall(r"\(default: [^)]*\) \(default: [^)]*\)", text)
    assert not doubled, doubled
    if command == "train":  # the model config's values, given in words
        assert "token embedding width (default: 300)" in text
        # each option once, under its --kebab-case spelling (the snake_case and HF spellings are hidden twins)
        assert "--batch-size" in text and "--batch_size" not in text and "--per_device_train_batch_size" not in text
    if command == "benchmark":  # the cpu preset's values
        assert "token embedding width (default: 128)" in text
        assert "GRU state size or Transformer width (default: 256)" in text


def test_a_real_default_replaces_the_default_given_in_words(capsys):
    from dataclasses import dataclass, field

    @dataclass
    class Sizes:
        width: int = field(default=5, metadata={"help": "a width (default: 3)"})
        depth: int | None = field(default=None, metadata={"help": "a depth (default: 2)"})

    with pytest.raises(SystemExit):
        cli.Parser([Sizes]).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a width (default: 5)" in text and "(default: 3)" not in text
    assert "a depth (default: 2)" in text and "(default: None)" not in text
