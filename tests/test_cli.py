"""The `sentmim` console script, called in-process: train from every kind of local data, resume, fine-tune, the text
commands on a trained model, and one clear line on stderr (exit status 2, no traceback) for every bad input."""

import json
import logging
import re
import shutil

import datasets
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from sentmim.apps.corpus import builtin_sentences
from sentmim.assembly import load_training_splits
from sentmim.cli import main
from sentmim.options import DataOptions, DatasetOptions
from sentmim.pipeline import SentenceMIMPipeline
from tests.conftest import cli_error_line as error_line
from tests.conftest import run_cli as run

TINY = ["--max-steps", "3", "--eval-steps", "2", "--vocab-size", "200", "--max-length", "24", "--embedding-size", "16",
        "--hidden-size", "32", "--latent-size", "8", "--batch-size", "8", "--tokenizer", "word"]
SENTENCES = builtin_sentences(100, seed=0)
NEW_WORDS = ["the zyzzyva met a quokka .", "a quokka and the zyzzyva sat ."]  # words the first run never saw
pytestmark = pytest.mark.usefixtures("quiet_progress_bars")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    (path / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    (path / "other.txt").write_text("\n".join(builtin_sentences(40, seed=7) + NEW_WORDS * 5) + "\n")
    rows = [{"text": sentence, "label": index % 2} for index, sentence in enumerate(SENTENCES)]
    (path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    datasets.Dataset.from_list(rows).to_parquet(str(path / "corpus.parquet"))
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": SENTENCES[:80]}),
        "validation": datasets.Dataset.from_dict({"sentence": SENTENCES[80:]}),
    }).save_to_disk(str(path / "saved"))
    return path


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A tiny MIM trained for 3 steps on corpus.txt through the CLI."""
    output_dir = tmp_path_factory.mktemp("runs") / "mim"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    assert main(["train", "--dataset", str(data_dir / "corpus.txt"), "--output-dir", str(output_dir), *TINY]) == 0
    return output_dir


def copy_run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# -- train ---------------------------------------------------------------------------------------------------------


def test_train_from_txt(trained, capsys):
    results = json.loads((trained / "train_results.json").read_text())
    assert results["step"] == 3 and results["best_val_loss"] is not None
    pipe = SentenceMIMPipeline.from_pretrained(trained)
    assert pipe.encode(["the cat sat ."]).shape == (1, 8)
    assert pipe.model.config.objective == "mim" and pipe.model.config.hidden_size == 32
    assert len(pipe.tokenizer) <= 200
    assert pipe.max_length == 24


@pytest.mark.parametrize("source, extra", [
    ("corpus.jsonl", []),
    ("corpus.parquet", []),
    ("saved", ["--text-column", "sentence"]),
    ("saved", ["--text_column", "sentence", "--split", "train"]),  # HF-style spelling too
    ("corpus.jsonl", ["--streaming"]),  # read lazily, as for a corpus larger than memory
])
def test_train_from_other_formats(source, extra, data_dir, tmp_path, capsys):
    status, out, err = run(capsys, "train", "--dataset", data_dir / source, "--output-dir", tmp_path / "out",
                           *TINY, *extra)
    assert status == 0, err
    assert "trained 3 steps" in out
    assert SentenceMIMPipeline.from_pretrained(tmp_path / "out").encode(["a sentence ."]).shape == (1, 8)


def test_streaming_needs_max_steps(data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "out",
                      "--streaming")
    assert "no length" in line and "--max-steps" in line


def test_same_seed_same_model(data_dir, tmp_path, capsys):
    for name, state in (("a", 1), ("b", 2)):
        torch.manual_seed(state)  # whatever random state the process happens to be in: --seed decides
        status, _, err = run(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / name,
                             "--seed", "3", *TINY)
        assert status == 0, err
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_resume_continues_to_more_steps(trained, data_dir, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    more = [arg if arg != "3" else "5" for arg in TINY]  # --max-steps 5
    status, out, err = run(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", run_dir,
                           "--resume", *more)
    assert status == 0, err
    assert "trained 5 steps" in out
    assert json.loads((run_dir / "train_results.json").read_text())["step"] == 5
    train_steps = [r["step"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
                   if "train_loss" in r]
    assert train_steps == [3, 5]  # logged at the last step of each run (logging_steps 50): once each


def test_fine_tune_keeps_the_tokenizer_and_warns_of_unknown_words(trained, data_dir, tmp_path, capsys, caplog):
    status, _, err = run(capsys, "train", "--dataset", data_dir / "other.txt", "--init-from", trained,
                         "--output-dir", tmp_path / "ft", "--objective", "ae", *TINY)
    assert status == 0, err
    warnings = [record.getMessage() for record in caplog.records  # a WARNING: shown without --verbose
                if record.levelno == logging.WARNING and "words the vocabulary lacks" in record.getMessage()]
    assert len(warnings) == 1 and str(trained) in warnings[0] and "--extend-vocabulary N" in warnings[0]
    fine_tuned = SentenceMIMPipeline.from_pretrained(tmp_path / "ft")
    original = SentenceMIMPipeline.from_pretrained(trained)
    assert fine_tuned.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    # The rate the warning states, counted directly: the training sentences' words missing from the vocabulary.
    train = load_training_splits(DatasetOptions(dataset=str(data_dir / "other.txt")), DataOptions(), seed=0)["train"]
    words = [word for text in train["text"] for word in text.split()]
    missing = sum(word not in original.tokenizer.get_vocab() for word in words)
    assert f"{missing / len(words):.1%} of the training tokens" in warnings[0]
    assert fine_tuned.model.config.objective == "ae"  # objective settings may change
    pairs = zip(fine_tuned.model.parameters(), original.model.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_fine_tune_refuses_another_architecture(trained, data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "other.txt", "--init-from", trained,
                      "--output-dir", tmp_path / "ft", *TINY, "--hidden-size", "64")
    assert "--hidden-size=64" in line and "hidden_size=32" in line
    assert not (tmp_path / "ft").exists()


def test_fine_tune_from_a_folder_without_weights(trained, data_dir, tmp_path, capsys):
    folder = tmp_path / "tokenizer-only"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(trained / name, folder / name)
    line = error_line(capsys, "train", "--dataset", data_dir / "other.txt", "--init-from", folder,
                      "--output-dir", tmp_path / "ft", *TINY)
    assert str(folder) in line


def test_overlong_line_is_dropped_and_counted(data_dir, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="sentmim")
    path = tmp_path / "long.txt"
    path.write_text("\n".join(SENTENCES) + "\n" + "word " * 20_000 + "\n" + "x" * 100_000 + "\n")
    status, _, err = run(capsys, "--verbose", "train", "--dataset", path, "--output-dir", tmp_path / "out", *TINY)
    assert status == 0, err
    dropped = [int(match.group(1)) for record in caplog.records
               if (match := re.search(r"(\d+) longer than 24 tokens dropped", record.getMessage()))]
    assert sum(dropped) == 1  # the 20,000-word line; the single 100,000-character word is cut to one <unk>


# -- bad input: one line, exit status 2 ------------------------------------------------------------------------------


def test_missing_file(tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", tmp_path / "nope.txt", "--output-dir", tmp_path / "o", *TINY)
    assert "nope.txt" in line


def test_unknown_hub_dataset_offline(tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", "someorg/nonexistent", "--output-dir", tmp_path / "o", *TINY)
    assert "someorg/nonexistent" in line and "HF_HUB_OFFLINE" in line


def test_text_column_needed_or_missing(tmp_path, capsys):
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({"sentence": s, "title": "t"}) + "\n" for s in SENTENCES[:30]))
    line = error_line(capsys, "train", "--dataset", path, "--output-dir", tmp_path / "o", *TINY)
    assert "two.jsonl" in line and "sentence" in line and "text_column" in line
    line = error_line(capsys, "train", "--dataset", path, "--text-column", "body", "--output-dir", tmp_path / "o",
                      *TINY)
    assert "'body'" in line and "sentence" in line


def test_blank_file(tmp_path, capsys):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n\n")
    line = error_line(capsys, "train", "--dataset", path, "--output-dir", tmp_path / "o", *TINY)
    assert "blank.txt" in line and "empty" in line


def test_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("\n".join(SENTENCES[:10]).encode() + "\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"))
    line = error_line(capsys, "train", "--dataset", path, "--output-dir", tmp_path / "o", *TINY)
    assert "latin1.txt" in line and "line 11" in line


def test_every_sentence_too_long(data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "o",
                      *TINY, "--max-length", "4")
    assert "--max-length 4" in line


def test_vocabulary_too_small(data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "o",
                      *TINY, "--vocab-size", "0")
    assert "--vocab-size: 0 is out of range: must be an integer >= 5" in line
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "o",
                      *TINY, "--tokenizer", "unigram", "--vocab-size", "6")
    assert "--vocab-size 6" in line


def test_output_dir_of_another_run(trained, data_dir, capsys):
    before = (trained / "model.safetensors").read_bytes()
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", trained, *TINY)
    assert str(trained) in line and "--overwrite" in line and "--resume" in line
    assert (trained / "model.safetensors").read_bytes() == before


def test_resume_without_checkpoint(data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "new",
                      "--resume", *TINY)
    assert "no run to resume" in line and "without --resume" in line


def test_corrupted_checkpoint(trained, data_dir, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", run_dir, "--resume",
                      *TINY)
    assert str(latest) in line and "unreadable" in line


def test_bad_training_argument(data_dir, tmp_path, capsys):
    line = error_line(capsys, "train", "--dataset", data_dir / "corpus.txt", "--output-dir", tmp_path / "o",
                      *TINY, "--learning-rate", "-1")
    assert "--learning-rate: -1.0 is out of range: must be a finite number > 0" in line


# -- reconstruct / interpolate / sample / encode ----------------------------------------------------------------------


FIRST, SECOND = SENTENCES[0], SENTENCES[1]


def test_reconstruct(trained, capsys):
    status, out, err = run(capsys, "reconstruct", trained, FIRST, SECOND)
    assert status == 0, err
    expected = SentenceMIMPipeline.from_pretrained(trained).reconstruct([FIRST, SECOND])
    assert re.findall(r"^input:  (.*)$", out, re.MULTILINE) == [FIRST, SECOND]
    assert re.findall(r"^output: ?(.*)$", out, re.MULTILINE) == expected


def test_interpolate(trained, capsys):
    # Two sentences whose reconstructions differ (a barely trained model maps many sentences to the same output),
    # so that endpoints in the wrong order would show.
    pipe = SentenceMIMPipeline.from_pretrained(trained)
    reconstructions = dict(zip(SENTENCES[:20], pipe.reconstruct(SENTENCES[:20]), strict=True))
    first = SENTENCES[0]
    second = next(s for s in SENTENCES[1:20] if reconstructions[s] != reconstructions[first])
    status, out, err = run(capsys, "interpolate", trained, first, second, "--steps", "4")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 6
    assert [int(line.split()[0]) for line in lines] == list(range(6))
    sentences = [line[5:] for line in lines]
    assert [sentences[0], sentences[-1]] == [reconstructions[first], reconstructions[second]]
    assert sentences == pipe.interpolate(first, second, steps=4)


def test_interpolate_without_steps_between(trained, capsys):
    status, out, err = run(capsys, "interpolate", trained, FIRST, SECOND, "--steps", "0", "--method", "slerp")
    assert status == 0, err
    assert len(out.splitlines()) == 2


def test_interpolate_negative_steps(trained, capsys):
    line = error_line(capsys, "interpolate", trained, FIRST, SECOND, "--steps", "-1")
    assert "--steps: -1 is out of range: must be an integer >= 0" in line


def test_sample_is_reproducible_with_a_seed(trained, capsys):
    status, out, err = run(capsys, "sample", trained, "-n", "3", "--seed", "1")
    assert status == 0, err
    assert len(out.splitlines()) == 3
    assert run(capsys, "sample", trained, "-n", "3", "--seed", "1")[1] == out


def test_sample_from_the_aggregate_posterior_that_training_stored(trained, tmp_path, capsys):
    status, out, err = run(capsys, "sample", trained, "-n", "3", "--seed", "1", "--prior", "aggregate",
                           "--temperature", "0", "--no-repeat-ngram-size", "2")
    assert status == 0, err
    pipe = SentenceMIMPipeline.from_pretrained(trained)  # training wrote aggregate_posterior.safetensors
    z = pipe.aggregate_posterior.sample(3, torch.Generator().manual_seed(1))
    assert out.splitlines() == pipe.decode(z.float(), no_repeat_ngram_size=2)
    run_dir = copy_run(trained, tmp_path)
    (run_dir / "aggregate_posterior.safetensors").unlink()
    assert "no aggregate posterior in" in error_line(capsys, "sample", run_dir, "--prior", "aggregate")


def test_unseeded_sampling_leaves_the_global_random_state_alone(trained):
    pipe = SentenceMIMPipeline.from_pretrained(trained)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, second = pipe.sample(n=4), pipe.sample(n=4)
    assert torch.equal(torch.get_rng_state(), before)  # torch.seed() would have re-seeded it
    assert len(first) == len(second) == 4


def test_encode_writes_posterior_means(trained, tmp_path, capsys):
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(SENTENCES[:5]) + "\n\n")
    status, _, err = run(capsys, "encode", trained, "--input", source, "--output", tmp_path / "z.npy")
    assert status == 0, err
    latents = np.load(tmp_path / "z.npy")
    assert latents.shape == (5, 8) and latents.dtype == np.float32
    expected = SentenceMIMPipeline.from_pretrained(trained).encode(SENTENCES[:5]).numpy()
    np.testing.assert_array_equal(latents, expected)


def test_encode_missing_input_file(trained, tmp_path, capsys):
    line = error_line(capsys, "encode", trained, "--input", tmp_path / "none.txt", "--output", tmp_path / "z.npy")
    assert "none.txt" in line


def test_model_folder_without_tokenizer(trained, tmp_path, capsys):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(trained / name, folder / name)
    line = error_line(capsys, "reconstruct", folder, FIRST)
    assert "no tokenizer" in line and str(folder) in line


def test_not_a_model_folder(tmp_path, capsys):
    line = error_line(capsys, "sample", tmp_path / "missing")
    assert "missing" in line and "config.json" in line


def test_debug_shows_the_traceback_instead_of_one_line(tmp_path):
    from sentmim.data import DataError

    with pytest.raises(DataError, match="nope.txt"):
        main(["--debug", "train", "--dataset", str(tmp_path / "nope.txt"), "--output-dir", str(tmp_path / "o"),
              *TINY])
