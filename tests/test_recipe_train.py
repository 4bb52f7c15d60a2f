"""recipes/train.py end to end: 3 steps on a tiny train/valid/test .txt folder, then the test-split evaluation."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sentmim.apps.corpus import builtin_sentences
from sentmim.pipeline import SentenceMIMPipeline
from tests.recipe_loader import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train.py"
TINY = ["--max_steps", "3", "--eval_steps", "2", "--vocab_size", "200", "--max_length", "24", "--embedding_size",
        "16", "--hidden_size", "32", "--latent_size", "8", "--per_device_train_batch_size", "8", "--iw_samples",
        "5", "--disable_tqdm", "--tokenizer", "word"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ptb-like")
    sentences = builtin_sentences(140, seed=0)
    (path / "train.txt").write_text("\n".join(sentences[:100]) + "\n")
    (path / "valid.txt").write_text("\n".join(sentences[100:120]) + "\n")
    (path / "test.txt").write_text("\n".join(sentences[120:]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("runs") / "mim"
    results = load_recipe("train").main(["--dataset_name", str(data_dir), "--output_dir", str(output_dir), *TINY])
    return output_dir, results


def test_trains_and_evaluates_on_the_test_split(trained, capfd):
    output_dir, results = trained
    assert results["train"]["step"] == 3
    test = results["test"]
    assert test["num_sentences"] == 20 and test["iw_samples"] == 5
    assert test["iw_nll"] > 0 and test["bleu4_corpus"] is not None
    saved = json.loads((output_dir / "eval_results_test.json").read_text())
    assert saved["iw_nll"] == pytest.approx(test["iw_nll"])
    pipe = SentenceMIMPipeline.from_pretrained(output_dir)
    assert pipe.model.config.latent_size == 8 and pipe.model.config.objective == "mim"
    # validation came from valid.txt (20 sentences), not carved out of train
    validation = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()
                  if "val_loss" in json.loads(line)]
    assert [record["step"] for record in validation] == [2, 3]


def test_prints_the_results_table(data_dir, tmp_path, capsys):
    load_recipe("train").main(["--dataset_name", str(data_dir), "--output_dir", str(tmp_path / "vae"),
                               "--objective", "vae", "--kl_schedule", "linear", "--kl_anneal_steps", "10", *TINY])
    out = capsys.readouterr().out
    assert "IW-NLL (K=5, proposal q(z|x)" in out and "BLEU-4 corpus" in out and "MELBO is NOT" in out
    assert "objective=vae" in out
    assert "eval_results_test.json" in out


def test_resume_from_checkpoint(trained, tmp_path, data_dir):
    import shutil

    output_dir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    more = [arg if arg != "3" else "5" for arg in TINY]
    results = load_recipe("train").main(["--dataset_name", str(data_dir), "--output_dir", str(copy),
                                  "--resume_from_checkpoint", "--test_split", "", *more])
    assert results["train"]["step"] == 5 and "test" not in results


def test_fine_tune_from_a_trained_model(trained, tmp_path, data_dir):
    output_dir, _ = trained
    other = tmp_path / "other.txt"
    other.write_text("\n".join(builtin_sentences(60, seed=3)) + "\n")
    results = load_recipe("train").main(["--init_from", str(output_dir), "--dataset_name", str(other), "--text_column",
                                  "text", "--output_dir", str(tmp_path / "ft"), *TINY])
    assert results["train"]["step"] == 3
    assert "test" not in results  # a single file has no test split: training is kept, evaluation skipped
    original = SentenceMIMPipeline.from_pretrained(output_dir).tokenizer.get_vocab()
    assert SentenceMIMPipeline.from_pretrained(tmp_path / "ft").tokenizer.get_vocab() == original


def test_fine_tuning_changes_dropout_in_the_modules_and_keeps_the_weights(trained):
    import torch

    from sentmim import SentenceMIMModel
    from sentmim.assembly import build_model
    from sentmim.options import DataOptions, ModelOptions

    output_dir, _ = trained
    changed = {"dropout": 0.2, "embedding_dropout": 0.3, "word_dropout": 0.1}
    options = ModelOptions(init_from=str(output_dir), **changed)
    model = build_model(DataOptions(), options, tokenizer=None, output_dir=None, resume=False)
    assert (model.dropout.p, model.decoder_input_dropout.p, model.config.word_dropout) == (0.2, 0.3, 0.1)
    original = SentenceMIMModel.from_pretrained(output_dir).state_dict()
    assert all(torch.equal(value, original[name]) for name, value in model.state_dict().items())
    with pytest.raises(ValueError, match="--latent-size=7: .* was trained with latent_size="):
        build_model(DataOptions(), ModelOptions(init_from=str(output_dir), latent_size=7), None, None, resume=False)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        load_recipe("train").parse_args(
            ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "--overwrite_output_dir"]
        )


def test_docstring_commands_use_real_flags():
    """Every --flag in the docstring's launch commands is one the parser knows, and the first command parses."""
    recipe = load_recipe("train")
    known = set(re.findall(r"--[\w-]+", recipe.build_parser().format_help()))
    used = set(re.findall(r"--\w+", recipe.__doc__)) - {"--multi_gpu", "--num_processes", "--nproc_per_node"}
    assert len(used) > 10 and used <= known, sorted(used - known)
    lines = recipe.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("python recipes/train.py"))
    command = lines[start].replace("\\", "") + lines[start + 1]  # one continuation line
    dataset, _, _, model, training, _ = recipe.parse_args(shlex.split(command.split("recipes/train.py", 1)[1]))
    assert (dataset.dataset, training.output_dir, model.objective, training.max_steps) == (
        "../shared/data/ptb", "runs/ptb-mim", "mim", 20000)


def test_two_cpu_processes_with_torchrun(data_dir, tmp_path):
    """The docstring's CPU command: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train.py ..."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(RECIPE),
               "--dataset_name", str(data_dir), "--output_dir", str(tmp_path / "ddp"), *TINY]
    done = subprocess.run(command, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    step_3 = tmp_path / "ddp" / "checkpoints" / "step_3"
    assert (step_3 / "random_states_0.pkl").is_file() and (step_3 / "random_states_1.pkl").is_file()
    assert done.stdout.count("IW-NLL (K=5") == 1  # evaluated once, by the main process
    assert SentenceMIMPipeline.from_pretrained(tmp_path / "ddp").encode(["a sentence ."]).shape == (1, 8)
