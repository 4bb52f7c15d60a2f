"""Loading a model folder never runs code from it and never ends in a library traceback (issue items 2, 3, 9):
a folder whose JSON files point transformers at its own Python file (auto_map), damaged weights, a config.json that
disagrees with the weights, a disk that fills up during a save."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentmim.cli import main
from sentmim.pipeline import SentenceMIMPipeline
from tests.conftest import TINY_TRAIN, cli_error_line

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")

ROOT = Path(__file__).resolve().parents[1]


# -- item 2: a model folder with code in it ---------------------------------------------------------------------------


def plant_code(folder: Path, marker: Path) -> None:
    """Make `folder` ask transformers to import its own module, which would create `marker` when executed."""
    (folder / "custom_code.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('code from the model folder ran')\n"
        "from transformers import PreTrainedTokenizerFast, PreTrainedConfig\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n"
        "class CustomConfig(PreTrainedConfig):\n    model_type = 'sentmim'\n"
    )
    for name, auto_map in (("tokenizer_config.json", {"AutoTokenizer": ["custom_code.CustomTokenizer", None]}),
                           ("config.json", {"AutoConfig": "custom_code.CustomConfig"})):
        content = json.loads((folder / name).read_text())
        content["auto_map"] = auto_map
        if name == "tokenizer_config.json":
            content["tokenizer_class"] = "CustomTokenizer"
        (folder / name).write_text(json.dumps(content, indent=2))


@pytest.fixture
def planted(cli_run, tmp_path):
    """A copy of a trained run whose model folder and run folder (checkpoints/run) both carry code."""
    folder = tmp_path / "planted"
    shutil.copytree(cli_run, folder)
    marker = tmp_path / "CODE-RAN"
    plant_code(folder, marker)
    plant_code(folder / "checkpoints" / "run", marker)
    return folder, marker


def test_no_path_runs_code_from_the_folder_even_if_the_user_says_yes(planted, corpus_file, tmp_path, monkeypatch,
                                                                      capsys):
    folder, marker = planted
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")  # a user who answers y
    pipe = SentenceMIMPipeline.from_pretrained(folder)
    assert pipe.encode(["the cat sat ."]).shape == (1, 8)
    capsys.readouterr()
    fine_tune = ["train", "--dataset", str(corpus_file), "--init-from", str(folder), "--output-dir",
                 str(tmp_path / "fine-tuned"), *TINY_TRAIN]
    assert main(fine_tune) == 0, capsys.readouterr().err
    more = [arg if arg != "3" else "4" for arg in TINY_TRAIN]
    resume = ["train", "--dataset", str(corpus_file), "--output-dir", str(folder), "--resume", *more]
    assert main(resume) == 0, capsys.readouterr().err
    assert asked == [] and not marker.exists()


@pytest.mark.slow  # a fresh process (~5-10 s); the test above answers y in this one
def test_answering_y_on_stdin_runs_nothing(planted):
    """The real terminal path, in a fresh process: transformers' "Do you wish to run the custom code? [y/N]"."""
    folder, marker = planted
    done = subprocess.run(
        [sys.executable, "-m", "sentmim.cli", "reconstruct", str(folder), "the cat sat ."], input="y\ny\ny\n",
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "custom code" not in done.stdout + done.stderr
    assert not marker.exists()


# -- item 3: damaged weights, full disks -----------------------------------------------------------------------------


def copy_with_truncated_weights(cli_run, tmp_path) -> Path:
    folder = tmp_path / "truncated"
    shutil.copytree(cli_run, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


@pytest.mark.parametrize("command", ["reconstruct", "sample", "evaluate", "init-from"])
def test_truncated_weights_give_one_line_naming_the_file(command, cli_run, corpus_file, tmp_path, capsys):
    folder = copy_with_truncated_weights(cli_run, tmp_path)
    argv = {
        "reconstruct": ["reconstruct", folder, "the cat sat ."],
        "sample": ["sample", folder, "-n", "2"],
        "evaluate": ["evaluate", folder, "--dataset", corpus_file, "--split", "train", "--iw-samples", "2"],
        "init-from": ["train", "--dataset", corpus_file, "--init-from", folder, "--output-dir", tmp_path / "ft",
                      *TINY_TRAIN],
    }[command]
    line = cli_error_line(capsys, *argv)
    assert str(folder / "model.safetensors") in line and "damaged" in line and "copy it again" in line


def test_weights_that_are_not_safetensors(cli_run, tmp_path, capsys):
    folder = tmp_path / "garbage"
    shutil.copytree(cli_run, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
    line = cli_error_line(capsys, "sample", folder)
    assert str(folder / "model.safetensors") in line
    assert "not a safetensors file (SafetensorError: " in line  # the library's reason, with its type


def disk_full(*args, **kwargs):
    """What safetensors raises when the disk fills up (measured on a 64 KiB tmpfs)."""
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_disk_full_during_a_checkpoint(corpus_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("accelerate.utils.other.safe_save_file", disk_full)  # how accelerate's save_state writes
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", tmp_path / "run", *TINY_TRAIN)
    assert "could not write checkpoint" in line and "No space left on device" in line and "--resume" in line
    assert "the previous checkpoint is intact" in line


def test_disk_full_during_the_best_model_publication(corpus_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", disk_full)
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", tmp_path / "run", *TINY_TRAIN)
    assert "could not write the model" in line and "No space left on device" in line
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written beside the output folder


def test_disk_full_for_torch_save(corpus_file, tmp_path, monkeypatch, capsys):
    def torch_disk_full(*args, **kwargs):  # what torch.save raises on a full disk (same tmpfs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr("torch.save", torch_disk_full)
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", tmp_path / "run", *TINY_TRAIN)
    assert "could not write checkpoint" in line and "free disk space" in line


# -- item 9: a config.json that disagrees with the weights -----------------------------------------------------------


@pytest.mark.parametrize("field, value", [("latent_size", 16), ("hidden_size", 24), ("vocab_size", 150)])
def test_config_that_disagrees_with_the_weights(field, value, cli_run, tmp_path, capsys):
    folder = tmp_path / "edited"
    shutil.copytree(cli_run, folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    line = cli_error_line(capsys, "reconstruct", folder, "the cat sat .")
    assert f"{folder / 'config.json'} does not match {folder / 'model.safetensors'}" in line


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "tokenizer.json"])
def test_damaged_json_in_a_model_folder_names_the_file(name, cli_run, tmp_path, capsys):
    folder = tmp_path / "damaged"
    shutil.copytree(cli_run, folder)
    text = (folder / name).read_text()
    (folder / name).write_text(text[: len(text) // 2])
    line = cli_error_line(capsys, "sample", folder)
    assert str(folder / name) in line and "not valid JSON" in line
