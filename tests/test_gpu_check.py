"""benchmarks/gpu_check.py runs every section on the CPU with tiny models (--cpu), so it works when a GPU comes."""

import json

import pytest

from benchmarks import gpu_check


def test_cpu_rehearsal_runs_every_section_and_writes_json_and_markdown(tmp_path):
    # One short training run (a process of its own, ~5 s here) stands for the three a GPU run makes.
    results = gpu_check.main(["--cpu", "--time-budget", "150", "--data", "builtin", "--training-precisions", "bf16",
                              "--output", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["command"] == results["command"]
    sections = results["sections"]
    assert set(sections) == set(gpu_check.SHARES)
    assert {name: s["status"] for name, s in sections.items()} == {
        "precision": "ok", "throughput": "ok", "decode": "ok", "iw_nll": "ok", "multi_gpu": "skipped", "paper": "ok",
    }, {name: s.get("error") for name, s in sections.items()}

    one_batch = sections["precision"]["one_batch"]
    assert {(row["architecture"], row["precision"]) for row in one_batch} == {
        (a, p) for a in ("gru", "transformer") for p in ("fp32", "bf16", "fp16")}
    for row in one_batch:  # bf16 keeps about 3 significant digits; fp32 is the reference itself
        assert row["loss_relative_difference"] < (1e-2 if row["precision"] != "fp32" else 1e-12)
    (run,) = sections["precision"]["training_runs"]
    assert "error" not in run, run["error"]
    assert run["precision"] == "bf16" and run["finite"] and len(run["losses"]) == run["steps"] == 2

    rows = sections["throughput"]["rows"]
    assert {(r["architecture"], r["batch_size"], r["precision"]) for r in rows} == {
        (a, b, p) for a in ("gru", "transformer") for b in (20, 128) for p in ("fp32", "bf16")}
    assert all(r["tokens_per_s"] > 0 and 0 < r["flop_fraction"] for r in rows)
    assert all(row["identical_outputs"] and row["speedup"] > 0 for row in sections["decode"]["rows"])
    assert all(row["num_samples"] == 500 and row["sentences"] > 0 for row in sections["iw_nll"]["rows"])
    paper = sections["paper"]
    assert paper["max_steps"] >= 2 and paper["metrics"]["iw_nll"] > 0
    markdown = (tmp_path / "results.md").read_text()
    for heading in ("## Precision", "## Training throughput", "## Greedy decoding", "## IW-NLL", "## Paper preset"):
        assert heading in markdown


def test_time_budget_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--cpu", "--time-budget", "0"])
    assert "--time-budget 0.0: must be > 0 seconds" in capsys.readouterr().err


def test_without_a_gpu_it_says_to_use_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device here; pass --cpu"):
        gpu_check.main(["--data", "builtin", "--output", str(tmp_path)])
