"""No vocabulary wall: a new model trained on arbitrary text gets byte-level BPE, which maps nothing to <unk>; the
pre-tokenized corpora keep word-level vocabularies where they are named: the benchmark presets, the demo, and every
documented command that trains on PTB."""

import re
from pathlib import Path

import pytest

from sentmim.options import TokenizerOptions
from sentmim.pipeline import SentenceMIMPipeline
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["The cat sat on the mat.", "A dog ran in the park!", "Prices rose 3.5% in Tokyo.", "Did the bird sing?"] * 10


def test_a_new_model_on_any_text_gets_byte_level_bpe_and_no_unknown_token(tmp_path, capsys):
    assert TokenizerOptions().tokenizer == "bpe"
    data = tmp_path / "text.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    status, _, err = run_cli(capsys, "train", "--dataset", data, "--output-dir", tmp_path / "run", "--max-steps", "1",
                             "--eval-steps", "1", "--vocab-size", "300", "--embedding-size", "8", "--hidden-size",
                             "8", "--latent-size", "4", "--batch-size", "8")
    assert status == 0, err
    tokenizer = SentenceMIMPipeline.from_pretrained(tmp_path / "run").tokenizer
    unseen = "Zyzzyvas ate 12 ñandú eggs — quickly 🙂"
    ids = tokenizer(unseen)["input_ids"]
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids[1:-1]) == unseen


def test_the_benchmark_presets_and_the_demo_pin_word_level(monkeypatch):
    from sentmim.apps import benchmark_settings, demo

    for preset in benchmark_settings.PRESETS:
        assert benchmark_settings.benchmark_settings(preset).tokenizer.tokenizer == "word", preset
    seen = []

    def capture(dataset, data, tokenizer, *rest, **options):
        seen.append(tokenizer.tokenizer)
        raise KeyboardInterrupt  # enough: the demo's first run is configured

    monkeypatch.setattr(demo, "train_from_options", capture)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(demo.DemoOptions(output_dir="unused"))
    assert seen == ["word"]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every shell command in the README, the recipes' docstrings and the benchmarks' READMEs,
    continuation lines joined."""
    files = [ROOT / "README.md", *sorted((ROOT / "recipes").glob("*.py")),
             *sorted(ROOT.glob("benchmarks/*/README.md"))]
    commands = []
    for path in files:
        joined = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
        commands += [(path.name, line.strip()) for line in joined.splitlines()
                     if re.search(r"(sentmim train|recipes/train\.py|recipes/finetune\.py)\s", line)]
    return commands


def test_every_documented_training_on_ptb_pins_word_level():
    commands = documented_commands()
    assert len(commands) >= 10
    on_ptb = [(name, command) for name, command in commands
              if re.search(r"--dataset[-_]?(name)?\s+\S*ptb", command) and not re.search(r"--init[-_]from", command)]
    assert len(on_ptb) >= 6
    assert [(name, command) for name, command in on_ptb if re.search(r"--tokenizer\s+word", command) is None] == []
