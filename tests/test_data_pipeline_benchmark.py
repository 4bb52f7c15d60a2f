"""benchmarks/data_pipeline.py runs end to end in quick mode on the built-in corpus and writes its results."""

import json

from benchmarks import data_pipeline


def test_quick_run_writes_json_and_markdown(tmp_path):
    output, work = tmp_path / "results", tmp_path / "work"
    data_pipeline.main(["--quick", "--data", "builtin", "--sentences", "5000", "--output", str(output),
                        "--work-dir", str(work)])
    results = json.loads((output / "results.json").read_text())
    assert {"command", "machine", "load_average", "settings", "corpora", "tokenizer", "speed", "memory", "targets",
            "wall_seconds"} <= set(results)
    assert {"cpu_model", "cores", "python", "torch", "datasets", "tokenizers"} <= set(results["machine"])
    speed = results["speed"]
    assert speed["corpus_lines"] == 5000 and set(speed["stages"]) == {"load", "clean", "tokenize", "bucket", "collate"}
    assert all(stage["wall_s"] >= 0 and stage["items_per_s"] > 0 for stage in speed["stages"].values())
    train_counts = speed["tokenize_counts"]["train"]
    assert train_counts["num_sentences"] == speed["train_sentences"] + train_counts["num_dropped"]
    runs = results["memory"]["runs"]
    assert set(runs) == {"streaming", "in_memory"} and all(set(r) == {"0.1x", "0.5x"} for r in runs.values())
    for path_runs in runs.values():
        small, large = path_runs["0.1x"], path_runs["0.5x"]
        assert 0 < small["sentences"] < large["sentences"] and small["peak_rss_mib"] > 0
        assert large["batches"] == -(-large["sentences"] // 32)
    assert {"tokenize_plus_bucket_wall_s", "speed_met", "streaming_peak_ratio", "streaming_flat"} <= set(
        results["targets"]
    )
    assert list(work.iterdir()) == []  # corpora and caches are removed
    markdown = (output / "results.md").read_text()
    assert results["command"] in markdown and "## Speed" in markdown and "## Memory" in markdown
