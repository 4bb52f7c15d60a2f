"""Does sMIM's reconstruction catch up with the AE's as the budget grows? Reads two benchmark runs' training logs.

The cpu preset gives every model the same short budget; this follows one sMIM and one AE (same preset, latent 128)
for many more steps and tabulates, at each validation of the training loop: -log p(x|z) of the validation sentences
with one z ~ q(z|x) (the AE's z is the posterior mean; sMIM's q is a near-delta, sigma = 0.0067), active units and
He et al.'s whole-split MI.

    OMP_NUM_THREADS=1 sentmim benchmark --preset cpu --objectives mim --latent-sizes 128 --max-steps 20000 \\
        --eval-steps 1000 --logging-steps 200 --output-dir runs/catchup-mim     # and the same for ae, catchup-ae
    python benchmarks/vae_collapse/catch_up.py runs/catchup-mim runs/catchup-ae --plot benchmarks/vae_collapse/plots
"""

import argparse
import json
from pathlib import Path

from sentmim.files import read_jsonl
from sentmim.plots import plot_training_curves


def model_folder(run_dir: Path) -> Path:
    """The only model folder of a one-model benchmark folder."""
    (model_dir,) = sorted((run_dir / "models").iterdir())
    return model_dir


def validation_rows(run_dir: Path) -> tuple[str, list[dict]]:
    """(run folder name, the validation records of its model's log.jsonl) of a one-model benchmark folder."""
    model_dir = model_folder(run_dir)
    rows = [row for row in read_jsonl(model_dir / "log.jsonl") if "val_recon_nll" in row]
    if json.loads((model_dir / "config.json").read_text())["objective"] == "ae":
        for row in rows:  # an AE never trains q's variance: its MI describes nothing
            row["val_mi_whole_split"] = None
    return run_dir.name, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="benchmark output folders, one model each (distinct names)")
    parser.add_argument("--plot", type=Path, default=None, help="folder for catch_up.png")
    args = parser.parse_args(argv)
    runs = dict(validation_rows(run) for run in args.runs)
    names = list(runs)
    steps = sorted({row["step"] for rows in runs.values() for row in rows})
    by_step = {name: {row["step"]: row for row in rows} for name, rows in runs.items()}
    print("| step | " + " | ".join(f"{name}: -log p(x\\|z) / active units / MI" for name in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for step in steps:
        cells = []
        for name in names:
            row = by_step[name].get(step)
            if row is None:
                cells.append("-")
                continue
            mi = "n/a" if row["val_mi_whole_split"] is None else f"{row['val_mi_whole_split']:.2f}"
            cells.append(f"{row['val_recon_nll']:.1f} / {row['val_active_units']} / {mi}")
        print(f"| {step:,} | " + " | ".join(cells) + " |")
    if args.plot:
        logs = {run.name: model_folder(run) / "log.jsonl" for run in args.runs}
        plot_training_curves(logs, args.plot / "catch_up.png", keys=("recon_nll",))  # training and validation
        print(f"wrote {args.plot / 'catch_up.png'}")


if __name__ == "__main__":
    main()
