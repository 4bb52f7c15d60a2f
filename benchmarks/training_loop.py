"""The whole training loop, before and after a change, in one run: `sentmim train` steps per second.

    .venv/bin/python benchmarks/training_loop.py --before c416c71 --after 3b9b3b3 --output benchmarks/training_loop

benchmarks/throughput.py times the model's step (forward, backward, optimizer); this times everything `sentmim
train` does around it too (the loader, the accelerate wrappers, the schedules, logging, validation, checkpoints),
for the library at commit --after (default: as it is in this working tree) and at commit --before (each checked
out into a temporary git worktree, never into the repository). The two take turns, A B B A ..., each a fresh
`python -m sentmim.cli train` process on the same data with the same options, one thread each, so that a change of
load on a shared machine hits both alike; the ratio of their median steps per second is the result. Each run's
time is its own training time (train_results.json: train_seconds, from the first step to the last), not the
start-up.

The default run is the paper's GRU (embedding 300, hidden 512, latent 128) on PTB train at batch 20 for 300 steps,
validating and checkpointing every 100 steps on 200 validation sentences.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--before", required=True, help="git commit of the library to compare with")
    parser.add_argument("--after", default=None, help="git commit of the library measured (default: this tree)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"), help="a dataset folder")
    parser.add_argument("--rounds", type=int, default=3, help="A B B A rounds (each runs both twice)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--output", default=None, help="folder for results.json and results.md")
    parser.add_argument("--work-dir", default=None, help="where the runs are written (default: a temporary folder)")
    return parser.parse_args(argv)


def train_options(data: str, max_steps: int) -> list[str]:
    return ["--dataset", data, "--max-steps", str(max_steps), "--eval-steps", "100", "--logging-steps", "50",
            "--batch-size", "20", "--max-length", "64", "--embedding-size", "300", "--hidden-size", "512",
            "--latent-size", "128", "--vocab-size", "10000", "--seed", "0"]


def run_once(library: Path, data: str, max_steps: int, output_dir: Path) -> float:
    """Steps per second of one `sentmim train` run of the library at `library`."""
    env = {**os.environ, "PYTHONPATH": str(library), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "SENTMIM_FSYNC": "0"}
    command = [sys.executable, "-m", "sentmim.cli", "train", *train_options(data, max_steps), "--output-dir",
               str(output_dir)]
    done = subprocess.run(command, env=env, cwd=library, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{library}: sentmim train failed: {done.stderr.strip().splitlines()[-1:]}")
    seconds = json.loads((output_dir / "train_results.json").read_text())["train_seconds"]
    return max_steps / seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sentmim-training-loop-"))
    libraries = {"after": REPO}
    for name, commit in (("before", args.before), ("after", args.after)):
        if commit is not None:
            libraries[name] = work / name
            subprocess.run(["git", "worktree", "add", "--detach", str(libraries[name]), commit], cwd=REPO, check=True,
                           capture_output=True)
    rates = {"after": [], "before": []}
    try:
        for round_index in range(args.rounds):
            for name in ("after", "before", "before", "after"):  # A B B A: a drift in load hits both alike
                output_dir = work / f"{name}-{round_index}-{len(rates[name])}"
                rates[name].append(run_once(libraries[name], args.data, args.max_steps, output_dir))
                shutil.rmtree(output_dir)
                print(f"round {round_index + 1}: {name} {rates[name][-1]:.2f} steps/s", flush=True)
    finally:
        for library in libraries.values():
            if library != REPO:
                subprocess.run(["git", "worktree", "remove", "--force", str(library)], cwd=REPO, check=False)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    results = {
        "command": " ".join(["python", "benchmarks/training_loop.py", *(argv or sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M"), "before": args.before, "after": args.after or "working tree",
        "max_steps": args.max_steps,
        "steps_per_second": rates, "median_steps_per_second": medians,
        "ratio_after_to_before": medians["after"] / medians["before"],
    }
    print(f"median steps/s: after {medians['after']:.2f}, before {medians['before']:.2f}; "
          f"ratio {results['ratio_after_to_before']:.3f}")
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (output / "results.md").write_text(
            f"# Training loop, before ({args.before}) and after ({results['after']})\n\n"
            f"Command: `{results['command']}`\n\n"
            f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, load average "
            f"{results['machine']['load_average']}; {results['date']}.\n\n"
            "| library | steps/s (each run) | median |\n|---|---|---:|\n"
            + "".join(f"| {name} | {', '.join(f'{v:.2f}' for v in rates[name])} | {medians[name]:.2f} |\n"
                      for name in ("before", "after"))
            + f"\nRatio after / before: **{results['ratio_after_to_before']:.3f}**.\n"
        )
    return results


if __name__ == "__main__":
    main()
