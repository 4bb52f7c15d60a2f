"""What data preparation tells the user: tokenize_dataset's counts (text kept, unknown tokens) against direct loops,
the one summary line, the warning when a split loses more than 5% of its text, and --split-sentences wired through
`sentmim train`, `sentmim evaluate` and recipes/train.py."""

import json
import logging

import pytest
from datasets import Dataset, DatasetDict

from sentmim.preprocessing import lost_text_warning, preparation_summary, tokenize_dataset
from sentmim.sentences import split_sentences
from sentmim.tokenization import train_tokenizer
from tests.conftest import run_cli
from tests.recipe_loader import load_recipe

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

VOCABULARY_TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang in the park ."] * 3
TEXTS = [
    "the cat sat on the mat .",
    "a zebra ran in the <unk> park .",  # 1 word the vocabulary lacks, 1 <unk> written in the text
    "the bird sang and the bird sang and the cat sat on the mat in the park .",  # 18 tokens
    "<unk> <unk> yak",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(VOCABULARY_TEXTS, kind="word")


@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_counts_of_kept_text_and_unknown_tokens_match_a_direct_loop(tokenizer, overlong):
    max_length = 10
    vocabulary = tokenizer.get_vocab()
    _, stats = tokenize_dataset(Dataset.from_dict({"text": TEXTS}), tokenizer, max_length, overlong)
    kept_chars = unknown = in_text = tokens = 0
    for text in TEXTS:
        words = text.split()
        if len(words) + 2 > max_length:
            if overlong == "drop":
                continue
            words = words[: max_length - 2]  # BOS and EOS kept
        kept_chars += len(" ".join(words))
        unknown += sum(word not in vocabulary or word == "<unk>" for word in words)
        in_text += words.count("<unk>")
        tokens += len(words) + 2
    assert stats["num_chars"] == sum(map(len, TEXTS))
    assert (stats["num_chars_kept"], stats["num_unknown"], stats["num_unknown_in_text"], stats["num_tokens"]) == (
        kept_chars, unknown, in_text, tokens)
    assert stats[f"num_{'dropped' if overlong == 'drop' else 'truncated'}"] == 1


def test_summary_line_and_lost_text_warning(tokenizer):
    splits = DatasetDict({"train": Dataset.from_dict({"text": TEXTS}),
                          "validation": Dataset.from_dict({"text": TEXTS[:2]})})
    _, stats = tokenize_dataset(splits, tokenizer, 10, "drop")
    lost = len(TEXTS[2]) / sum(map(len, TEXTS))
    line = preparation_summary(stats, 10, "drop", {"train": {"num_rows": 3, "num_sentences": 4}})
    assert line == ("data (sentences over 10 tokens: drop): train: 3 rows split into 4 sentences, 3 kept "
                    f"(0 truncated), 1 dropped, {lost:.1%} of the text lost; validation: 2 sentences, 2 kept "
                    "(0 truncated), 0 dropped, 0.0% of the text lost")
    warning = lost_text_warning(stats, 10, "drop", split_sentences=False)
    assert warning.startswith(f"train {lost:.1%} of the text is dropped as longer than --max-length 10 tokens")
    assert all(remedy in warning for remedy in ("--split-sentences", "--max-length", "--overlong truncate"))
    assert "--split-sentences" not in lost_text_warning(stats, 10, "drop", split_sentences=True)
    _, short = tokenize_dataset(splits, tokenizer, 40, "drop")
    assert lost_text_warning(short, 40, "drop", split_sentences=False) is None


# -- through the command line -----------------------------------------------------------------------------------------

PARAGRAPHS = [
    "The cat sat on the mat. The dog ran in the park! Did the bird sing? It sang in the park.",
    "A dog and a cat sat in the park. The bird sang. The cat ran on the mat.",
    "The park was green. A bird sat on the cat. The dog sang!",
] * 8
TRAIN = ["--max-steps", "2", "--eval-steps", "2", "--max-length", "14", "--embedding-size", "8", "--hidden-size", "8",
         "--latent-size", "4", "--batch-size", "4", "--tokenizer", "word", "--validation-fraction", "0.25"]


@pytest.fixture
def paragraphs(tmp_path):
    path = tmp_path / "paragraphs.jsonl"
    path.write_text("".join(json.dumps({"text": paragraph}) + "\n" for paragraph in PARAGRAPHS))
    return path


def test_training_on_paragraphs_warns_and_names_the_remedies(paragraphs, tmp_path, capsys, caplog):
    status, out, err = run_cli(capsys, "train", "--dataset", paragraphs, "--output-dir", tmp_path / "run", *TRAIN,
                               "--overlong", "truncate")
    assert status == 0, err
    summary = [line for line in out.splitlines() if line.startswith("data (")]
    assert len(summary) == 1 and "train: 18 sentences, 18 kept (18 truncated), 0 dropped" in summary[0]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "remedies" in r.getMessage()]
    assert len(warnings) == 1 and "--split-sentences" in warnings[0] and "--max-length 14" in warnings[0]


def test_split_sentences_trains_and_evaluates_on_sentences(paragraphs, tmp_path, capsys, caplog):
    status, out, err = run_cli(capsys, "train", "--dataset", paragraphs, "--output-dir", tmp_path / "run", *TRAIN,
                               "--split-sentences")
    assert status == 0, err
    # 18 of the 24 rows are train, the seeded other 6 validation; each row holds 3 or 4 sentences.
    total = sum(len(split_sentences(row)) for row in PARAGRAPHS)
    summary = next(line for line in out.splitlines() if line.startswith("data ("))
    train = int(summary.split("train: 18 rows split into ")[1].split(" ")[0])
    assert 3 * 18 <= train <= 4 * 18 and f"validation: 6 rows split into {total - train} sentences" in summary
    assert "0.0% of the text lost" in summary
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "remedies" in r.getMessage()]

    output = tmp_path / "scores.json"
    status, _, err = run_cli(capsys, "evaluate", tmp_path / "run", "--dataset", paragraphs, "--split", "train[:5]",
                             "--split-sentences", "--iw-samples", "0", "--output", output)
    assert status == 0, err
    scores = json.loads(output.read_text())
    assert scores["num_sentences"] == sum(len(split_sentences(row)) for row in PARAGRAPHS[:5])
    assert scores["split_sentences"] is True and scores["num_dropped"] == 0


def test_recipe_train_splits_sentences(paragraphs, tmp_path):
    flags = ["--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag for flag in TRAIN]
    results = load_recipe("train").main(["--dataset_name", str(paragraphs), "--output_dir", str(tmp_path / "r"),
                                         *flags, "--split_sentences", "--test_split", "train[:5]", "--iw_samples",
                                         "0", "--disable_tqdm"])
    assert results["test"]["num_sentences"] == sum(len(split_sentences(row)) for row in PARAGRAPHS[:5])


def test_a_stream_is_split_into_sentences_as_it_is_read(paragraphs, tmp_path, capsys):
    status, out, err = run_cli(capsys, "train", "--dataset", paragraphs, "--output-dir", tmp_path / "run", *TRAIN,
                               "--split-sentences", "--streaming")
    assert status == 0, err
    assert "train streamed (counted as it is read)" in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val_loss" in record for record in log)  # the streamed validation sentences were read and scored


def test_the_lost_text_warning_starts_above_five_percent():
    def stats(kept_chars):
        return {"train": {"num_chars": 1000, "num_chars_kept": kept_chars}}

    assert lost_text_warning(stats(950), 10, "drop", split_sentences=False) is None  # 5.0%: no warning
    assert lost_text_warning(stats(949), 10, "drop", split_sentences=False).startswith("train 5.1% of the text")
