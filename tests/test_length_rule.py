"""One length rule: a trained model's saved limit is the --max-length its training used (fine-tuning included), its
config records what training did with longer sentences, and evaluation does the same and says how many."""

import json

import pytest

from sentmim.model_folder import load_config
from sentmim.pipeline import SentenceMIMPipeline
from tests.conftest import cli_error_line, run_cli

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

SHORT = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "a cat and a dog ran ."] * 6
LONG = "the cat sat on the mat and the dog ran in the park and the bird sang ."  # 17 words: 19 tokens
TINY = ["--embedding-size", "8", "--hidden-size", "8", "--latent-size", "4", "--batch-size", "4", "--max-steps", "2",
        "--eval-steps", "2", "--tokenizer", "word", "--validation-fraction", "0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.txt").write_text("\n".join(SHORT + [LONG] * 4) + "\n")
    (folder / "test.txt").write_text("\n".join(SHORT[:4] + [LONG]) + "\n")
    return folder


def train(capsys, data, output, *flags):
    status, out, err = run_cli(capsys, "train", "--dataset", data, "--output-dir", output, *TINY, *flags)
    assert status == 0, err
    return out


def test_a_fine_tuned_model_keeps_the_limit_it_was_trained_with(data, tmp_path, capsys):
    train(capsys, data, tmp_path / "first", "--max-length", "12")
    assert load_config(tmp_path / "first").max_position_embeddings == 12
    train(capsys, data, tmp_path / "tuned", "--init-from", tmp_path / "first", "--max-length", "20",
          "--overlong", "truncate")
    config, pipe = load_config(tmp_path / "tuned"), SentenceMIMPipeline.from_pretrained(tmp_path / "tuned")
    assert (config.max_position_embeddings, config.overlong) == (20, "truncate")
    assert pipe.tokenizer.model_max_length == 20 and pipe.max_length == 20


@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_evaluation_treats_long_sentences_as_training_did(overlong, data, tmp_path, capsys):
    out = train(capsys, data, tmp_path / "run", "--max-length", "12", "--overlong", overlong)
    assert f"(sentences over 12 tokens: {overlong})" in out
    output = tmp_path / "scores.json"
    status, out, err = run_cli(capsys, "evaluate", tmp_path / "run", "--dataset", data, "--iw-samples", "0",
                               "--output", output)
    assert status == 0, err
    scores = json.loads(output.read_text())
    assert (scores["max_length"], scores["overlong"]) == (12, overlong)
    if overlong == "drop":
        assert (scores["num_sentences"], scores["num_dropped"], scores["num_truncated"]) == (4, 1, 0)
    else:
        assert (scores["num_sentences"], scores["num_dropped"], scores["num_truncated"]) == (5, 0, 1)
    done = "dropped" if overlong == "drop" else "truncated"
    assert f"1 sentences longer than 12 tokens were {done}, as in training" in out


def test_learned_positions_cannot_grow_by_fine_tuning(data, tmp_path, capsys):
    transformer = ["--architecture", "transformer", "--num-attention-heads", "2"]
    train(capsys, data, tmp_path / "first", "--max-length", "14", *transformer)
    line = cli_error_line(capsys, "train", "--dataset", data, "--output-dir", tmp_path / "longer", *TINY,
                          "--init-from", tmp_path / "first", "--max-length", "20")
    assert "--max-length 20" in line and "learned positions for 14 tokens" in line
    train(capsys, data, tmp_path / "shorter", "--init-from", tmp_path / "first", "--max-length", "10")
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "shorter")
    assert pipe.model.config.max_position_embeddings == 14  # one row per position kept; the tokenizer holds 10
    assert pipe.max_length == 10
