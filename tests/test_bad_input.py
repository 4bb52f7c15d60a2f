"""One clear line instead of a traceback or silence (issue items 9 and 10): latent codes of the wrong shape or with
nan / inf, a None sentence, infinite temperatures, numeric arguments out of range (stating the range, before any data
is read), the file name `encode` really writes, and only the main process printing the results of a run."""

import json
import math

import pytest
import torch

from sentmim import SentenceMIMModel
from sentmim.cli import main
from sentmim.pipeline import SentenceMIMPipeline
from tests.conftest import TINY_TRAIN, cli_error_line

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")


@pytest.fixture(scope="module")
def pipe(cli_run):
    return SentenceMIMPipeline.from_pretrained(cli_run)


# -- the library ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 5), (8,), (1, 2, 8), (0, 3)])
def test_decode_refuses_latents_of_the_wrong_shape(shape, tiny_config):
    model = SentenceMIMModel(tiny_config()).eval()  # latent size 4
    with pytest.raises(ValueError, match=r"z must be a tensor \[batch, 4\], got " + re_shape(shape)):
        model.decode(torch.zeros(shape))


def re_shape(shape) -> str:
    return r"\(" + r",\s*".join(str(size) for size in shape) + (",?" if len(shape) == 1 else "") + r"\)"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_decode_refuses_nan_and_inf(bad, tiny_config, pipe):
    model = SentenceMIMModel(tiny_config()).eval()
    z = torch.zeros(3, 4)
    z[2, 1] = bad
    with pytest.raises(ValueError, match="z holds nan or inf values \\(first in row 2\\)"):
        model.decode(z)
    z = torch.zeros(2, 8)
    z[0, 0] = bad
    with pytest.raises(ValueError, match="nan or inf"):
        pipe.decode(z)


def test_encode_names_the_item_that_is_not_text(pipe):
    with pytest.raises(TypeError, match=r"sentences\[2\] is NoneType, not a string"):
        pipe.encode(["a sentence .", "another one .", None])
    with pytest.raises(TypeError, match=r"sentences\[300\] is int"):  # past the first batch of 256
        pipe.encode(["a sentence ."] * 300 + [7])


@pytest.mark.parametrize("option, value", [
    ("temperature", math.inf), ("temperature", math.nan), ("temperature", -1.0),
    ("latent_temperature", math.inf), ("latent_temperature", math.nan), ("latent_temperature", -0.5),
])
def test_sample_refuses_temperatures_that_are_not_finite(option, value, pipe):
    with pytest.raises(ValueError, match=f"{option}=.*: must be a finite number >= 0"):
        pipe.sample(n=2, **{option: value})


def test_sampling_decoder_refuses_an_infinite_temperature(tiny_config):
    model = SentenceMIMModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="temperature=inf: must be finite and > 0"):
        model.decode(torch.zeros(1, 4), do_sample=True, temperature=math.inf)


# -- the command line -----------------------------------------------------------------------------------------------


FLOAT_OPTIONS = ("--learning-rate", "--epochs", "--dropout", "--validation-fraction", "--free-bits")


@pytest.mark.parametrize("option, value, valid", [
    ("--batch-size", "0", "an integer >= 1"),
    ("--max-steps", "-3", "an integer >= 1"),
    ("--learning-rate", "inf", "a finite number > 0"),
    ("--epochs", "nan", "a finite number > 0"),
    ("--dropout", "1.5", "a number >= 0 and < 1"),
    ("--validation-fraction", "1", "a number >= 0 and < 1"),
    ("--latent-size", "0", "an integer >= 1"),
    ("--max-length", "2", "an integer >= 3"),
    ("--seed", "-1", "an integer >= 0 and <= 4294967295"),
    ("--free-bits", "-0.1", "a finite number >= 0"),
    ("--warmup-steps", "1.5", None),
])
def test_train_states_the_valid_range_before_reading_data(option, value, valid, tmp_path, capsys):
    line = cli_error_line(capsys, "train", "--dataset", tmp_path / "missing.txt", "--output-dir", tmp_path / "run",
                      *[arg for arg in TINY_TRAIN], option, value)
    assert line.startswith(f"sentmim train: error: argument {option}: ")
    parsed = str(float(value)) if option in FLOAT_OPTIONS else value  # as argparse read it
    assert (f"{parsed} is out of range: must be {valid}" if valid else f"'{value}' is not an integer") in line
    assert "missing.txt" not in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, option", [
    (["sample", "{model}", "--temperature", "inf"], "--temperature"),
    (["sample", "{model}", "-n", "0"], "--num-samples"),
    (["reconstruct", "{model}", "a .", "--num-beams", "0"], "--num-beams"),
    (["evaluate", "{model}", "--iw-samples", "-1"], "--iw-samples"),
    (["evaluate", "{model}", "--batch-size", "0"], "--batch-size"),
])
def test_text_commands_state_the_valid_range(argv, option, cli_run, capsys):
    line = cli_error_line(capsys, *[arg.format(model=cli_run) for arg in argv])
    assert f"argument {option}: " in line and "is out of range: must be" in line


def test_library_arguments_state_their_range():
    from sentmim.options import DataOptions, TrainingOptions

    with pytest.raises(ValueError, match=r"max_grad_norm=nan is invalid: must be a finite number > 0"):
        TrainingOptions(output_dir="x", max_grad_norm=math.nan)
    with pytest.raises(ValueError, match=r"learning_rate=inf is invalid: must be a finite number > 0"):
        TrainingOptions(output_dir="x", learning_rate=math.inf)
    with pytest.raises(ValueError, match=r"seed=-1 is invalid: must be an integer >= 0 and <= 4294967295"):
        TrainingOptions(output_dir="x", seed=-1)
    with pytest.raises(ValueError, match=r"validation_fraction=1.0 is invalid: must be a number >= 0 and < 1"):
        DataOptions(validation_fraction=1.0)
    with pytest.raises(ValueError, match=r"max_length=2 is invalid: must be an integer >= 3"):
        DataOptions(max_length=2)


def test_encode_prints_the_name_it_writes(cli_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["encode", str(cli_run), "a sentence .", "--output", "lat"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("posterior means to lat.npy")
    assert (tmp_path / "lat.npy").is_file() and not (tmp_path / "lat").exists()


# -- item 10: only the main process prints ----------------------------------------------------------------------------


def train_on_two_processes(corpus: str, output_dir: str, report_dir: str) -> None:
    """Run by each of debug_launcher's processes: `sentmim train`, its stdout kept per process."""
    import contextlib
    import io
    import os

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["train", "--dataset", corpus, "--output-dir", output_dir, "--cpu", *TINY_TRAIN])
    with open(os.path.join(report_dir, f"rank_{torch.distributed.get_rank()}.json"), "w") as report:
        json.dump({"status": status, "stdout": stdout.getvalue()}, report)


def test_only_the_main_process_prints_the_results(corpus_file, tmp_path, monkeypatch):
    from accelerate import debug_launcher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    debug_launcher(train_on_two_processes, args=(str(corpus_file), str(tmp_path / "run"), str(tmp_path)),
                   num_processes=2)
    main_report, other = (json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1))
    assert main_report["status"] == other["status"] == 0
    best = json.loads((tmp_path / "run" / "train_results.json").read_text())["best_val_loss"]
    summary, result = main_report["stdout"].splitlines()  # what became of the data, then the result
    assert summary.startswith("data (sentences over 24 tokens: drop): train: 95 sentences")
    assert result == f"trained 3 steps; best validation loss {best}; model in {tmp_path / 'run'}"
    assert other["stdout"] == ""


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "argument --batch-size: 0 is out of range: must be an integer >= 1"),
    ("--learning-rate", "nan", "argument --learning-rate: nan is out of range: must be a finite number > 0"),
    ("--dropout", "2", "argument --dropout: 2.0 is out of range: must be a number >= 0 and < 1"),
])
def test_benchmark_refuses_bad_settings_before_writing(option, value, message, tmp_path, capsys):
    line = cli_error_line(capsys, "benchmark", "--preset", "smoke", "--output-dir", tmp_path / "bench", option, value)
    assert message in line
    assert not (tmp_path / "bench").exists()  # no settings.json holding the bad value, to be refused next time
