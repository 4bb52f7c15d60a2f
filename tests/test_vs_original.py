"""benchmarks/vs_original.py runs side by side with the original sentenceMIM code on tiny models and writes its
results; without the original code it says so and writes nothing."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks import vs_original

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sentencemim-demo"


@pytest.mark.skipif(not (REFERENCE / "model.py").is_file(),
                    reason=f"the original sentenceMIM code is not at {REFERENCE} (loaded at run time, never copied)")
def test_tiny_run_measures_every_variant(tmp_path):
    results = vs_original.main(["--tiny", "--data", "builtin", "--reference", str(REFERENCE),
                                "--output", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["command"] == results["command"]
    variants = results["variants"]
    expected = {"original", "sentmim", "sentmim_same_batches", "sentmim_same_batches_over_padding",
                "sentmim_z_every_step"}
    if results["before_revision"]:
        expected |= {"sentmim_before", "sentmim_before_same_batches"}
    assert set(variants) == expected
    assert all(row["steps"] == 2 and row["tokens_per_s"] > 0 for row in variants.values())
    # the original and sentmim on its batches saw the same sentences; bucketing leaves much less padding
    assert variants["original"]["targets"] == variants["sentmim_same_batches"]["targets"]
    assert variants["sentmim"]["padding_fraction"] < variants["original"]["padding_fraction"]
    assert set(results["targets"]) == {"own_batching_vs_original", "same_batches_vs_original"}
    assert "| original |" in (tmp_path / "results.md").read_text()


def test_missing_original_code_is_reported_and_nothing_is_written(tmp_path, capsys):
    assert vs_original.main(["--tiny", "--data", "builtin", "--reference", str(tmp_path / "absent"),
                             "--output", str(tmp_path / "out")]) is None
    assert "the original sentenceMIM code is not in" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_same_batches_hold_the_original_batch_in_sentmim_layout():
    demo_batch = {"input": torch.tensor([[2, 5, 6, 0, 0], [2, 7, 0, 0, 0]]),
                  "target": torch.tensor([[5, 6, 3, 0, 0], [7, 3, 0, 0, 0]]), "length": torch.tensor([3, 2])}
    batch = vs_original.as_sentmim_batch(demo_batch)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 7, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_demo_style_rows_are_padded_to_the_maximum_sequence_length():
    row = vs_original.DemoStyleSentences([[2, 5, 6, 3]], max_sequence_length=6, pad_token_id=0)[0]
    assert row["input"].tolist() == [2, 5, 6, 0, 0, 0] and row["target"].tolist() == [5, 6, 3, 0, 0, 0]
    assert row["length"] == 3
