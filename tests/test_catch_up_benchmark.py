"""benchmarks/vae_collapse/catch_up.py tabulates and plots the validation records of one-model benchmark folders."""

import json

from benchmarks.vae_collapse import catch_up


def fake_run(root, name: str, objective: str, records: list[dict]):
    model_dir = root / name / "models" / f"{objective}-z128"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"objective": objective}))
    train_line = {"step": 500, "train_loss": 1.0}  # not a validation record: left out
    (model_dir / "log.jsonl").write_text("\n".join(json.dumps(row) for row in [train_line, *records]) + "\n")
    return root / name


def test_table_rows_follow_the_logs_and_the_plot_is_written(tmp_path, capsys):
    mim = fake_run(tmp_path, "catchup-mim", "mim", [
        {"step": 1000, "val_recon_nll": 131.3, "val_active_units": 97, "val_mi_whole_split": 6.01},
        {"step": 2000, "val_recon_nll": 121.25, "val_active_units": 110, "val_mi_whole_split": 6.0}])
    ae = fake_run(tmp_path, "catchup-ae", "ae", [
        {"step": 1000, "val_recon_nll": 93.8, "val_active_units": 128, "val_mi_whole_split": 4.6}])
    catch_up.main([str(mim), str(ae), "--plot", str(tmp_path / "plots")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| step | catchup-mim: -log p(x\\|z)") and "catchup-ae:" in lines[0]
    assert lines[2] == "| 1,000 | 131.3 / 97 / 6.01 | 93.8 / 128 / n/a |"  # an AE's MI describes nothing
    assert lines[3] == "| 2,000 | 121.2 / 110 / 6.00 | - |"
    assert (tmp_path / "plots" / "catch_up.png").stat().st_size > 1000
