"""benchmarks/profile_step.py profiles the library's training step and splits its time by operator."""

from benchmarks import profile_step


def test_tiny_profile_reports_the_matrix_products_share(capsys):
    report = profile_step.main(["--tiny", "--data", "builtin", "--batch-sizes", "4", "--steps", "2"])
    assert set(report) == {4}
    row = report[4]
    assert row["wall_seconds"] > 0 and 0 < row["matrix_product_share"] < 1
    assert "aten::mm" in row["operators"] and "GRURecurrence" in row["operators"]  # the CPU's written-out GRU loop
    assert "gru, batch 4:" in capsys.readouterr().out
