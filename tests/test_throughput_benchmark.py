"""benchmarks/throughput.py runs end to end on tiny models and the built-in corpus, and writes its results."""

import json

from benchmarks import throughput


def test_quick_tiny_run_writes_json_and_markdown(tmp_path):
    throughput.main(["--quick", "--tiny", "--data", "builtin", "--output", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"command", "machine", "settings", "data", "models", "training", "decode", "iw_nll", "memory_mib",
            "peak_memory_mib", "targets", "wall_seconds"} <= set(results)
    assert {"cpu_model", "cores", "torch", "threads", "matmul_gflop_per_s"} <= set(results["machine"])
    assert results["machine"]["threads"] == 1
    assert set(results["models"]) == {"gru", "transformer"}
    runs = {(row["architecture"], row["batch_size"], row["variant"]) for row in results["training"]}
    assert runs == {(a, b, v) for a in ("gru", "transformer") for b in (20, 128)
                    for v in ("naive", "fast", "fast_unfused_adam")} | {("gru", 20, "fast_packed"),
                                                                      ("gru", 128, "fast_packed")}
    for row in results["training"]:
        assert row["tokens_per_s"] > 0 and 0 < row["flop_fraction"] and 0 <= row["padding_fraction"] < 1
    for row in results["decode"]:
        assert row["identical_outputs"] and row["mean_generated_tokens"] == row["max_length"]
        assert row["fast_sentences_per_s"] > 0 and row["naive_sentences_per_s"] > 0
    assert {(row["architecture"], row["num_samples"]) for row in results["iw_nll"]} == {
        (a, k) for a in ("gru", "transformer") for k in (100, 500)
    }
    assert {"training_speedup_batch20_gru", "training_flop_fraction_batch128_gru", "decode_speedup_gru"} <= set(
        results["targets"]
    )
    assert results["peak_memory_mib"] > 0
    markdown = (tmp_path / "results.md").read_text()
    for section in ("## Training", "## Greedy decoding", "## IW-NLL", "## Peak resident memory", "## Targets",
                    "## Length-bucketed batches: one padded run or packed"):
        assert section in markdown
    assert results["command"] in markdown
