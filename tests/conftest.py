"""Hermetic test environment: no Hub access, a throw-away HF cache. Set before transformers/datasets import."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="sentmim-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SENTMIM_FSYNC", "0")  # tests do not survive power losses; tests/test_files.py checks fsync

import pytest
import torch

# Test models are tiny: one thread avoids oversubscribing CI's two cores (10x faster under load).
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    """A config small enough for exact checks in milliseconds; pass overrides as keyword arguments."""
    from sentmim import SentenceMIMConfig

    def make(**overrides):
        settings = dict(
            vocab_size=23, embedding_size=8, hidden_size=16, latent_size=4, num_layers=1,
            num_attention_heads=2, max_position_embeddings=32, num_memory_slots=2,
        )
        settings.update(overrides)
        return SentenceMIMConfig(**settings)

    return make


@pytest.fixture
def batch():
    """Three right-padded sentences: BOS=2 ... EOS=3, pad=0."""
    input_ids = torch.tensor(
        [
            [2, 5, 6, 7, 8, 9, 3],
            [2, 10, 11, 3, 0, 0, 0],
            [2, 12, 3, 0, 0, 0, 0],
        ]
    )
    return input_ids, (input_ids != 0).long()


@pytest.fixture(scope="session")
def builtin_splits():
    """(tokenizer, tokenized splits) of 200 / 40 / 10 built-in corpus sentences of at most 32 tokens."""
    return builtin_splits_data()


def builtin_splits_data():
    """What the builtin_splits fixture holds (also for tests that train in a fresh process)."""
    from sentmim.apps.corpus import load_builtin_corpus
    from sentmim.preprocessing import tokenize_dataset
    from sentmim.tokenization import train_tokenizer

    raw = load_builtin_corpus(num_train=200, num_validation=40, num_test=10)
    tokenizer = train_tokenizer(raw["train"]["text"], vocab_size=300)
    splits, _ = tokenize_dataset(raw, tokenizer, max_length=32)
    return tokenizer, splits


# A tiny model trained through the CLI, shared by the tests of bad input and reliability (copy it before changing it).
TINY_TRAIN = ["--max-steps", "3", "--eval-steps", "2", "--vocab-size", "400", "--max-length", "24", "--embedding-size",
              "16", "--hidden-size", "32", "--latent-size", "8", "--batch-size", "8", "--tokenizer", "word"]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """100 built-in sentences in a .txt file."""
    from sentmim.apps.corpus import builtin_sentences

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(builtin_sentences(100, seed=0)) + "\n")
    return path


@pytest.fixture(scope="session")
def cli_run(corpus_file, tmp_path_factory):
    """The output folder of `sentmim train --dataset corpus_file ... TINY_TRAIN` (3 steps, checkpoints at 2 and 3)."""
    from sentmim.cli import main

    output_dir = tmp_path_factory.mktemp("cli-run") / "run"
    assert main(["train", "--dataset", str(corpus_file), "--output-dir", str(output_dir), *TINY_TRAIN]) == 0
    return output_dir


@pytest.fixture
def quiet_progress_bars():
    """The libraries' progress bars also go to stderr; without them stderr holds only what the CLI itself says."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    yield
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `sentmim argv...` called in-process; no traceback may ever reach the user."""
    from sentmim.cli import main

    capsys.readouterr()
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return status, out, err


def cli_error_line(capsys, *argv) -> str:
    """Run a command that must fail: exit status 2 and exactly one line on stderr, which is returned."""
    status, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sentmim {argv[0]}: error: ")
    return lines[0]
