"""Fault injection: `sentmim train` killed with SIGKILL (kill -9) again and again, resumed after every kill, must end
with weights bitwise equal to those of an uninterrupted run; after every kill, every model folder and checkpoint in
sight must be complete and loadable, and nothing may lie outside the output folder.

    python benchmarks/fault_injection.py --kills 20 --seed 0 --output benchmarks/fault_injection

The run is a tiny GRU sMIM (embedding 16, hidden 32, latent 8, dropout 0.1, plateau learning-rate schedule) on 300
sentences of the built-in corpus, validated every 5 steps and checkpointed every 2. Each launch of the run is killed
at a point drawn (seeded) from these kinds:

    checkpoint_write     a checkpoint's weights file is half written (in its staging folder)
    checkpoint_publish   just before a rename in checkpoints/: a finished checkpoint moving into place, `latest`
    prune                just before an old checkpoint is deleted
    model_write          the best model's weights are half written (in its staging folder)
    model_publish        just before one of the best model's files (config, tokenizer, weights) moves into place
    random               at a uniformly random moment of the training phase

The killed process is this file run with --child: it patches those places (safetensors writes, os.replace, the
pruning of checkpoints) to announce themselves in an events file and to pause at the one the driver picked; the
driver kills it there. The library itself has no test hook. Launches are fresh Python processes (`--launch exec`,
as a user's `sentmim train`) or, for the quick test in the suite, forks of an already started process (`--launch
fork`, which saves the ~5 s of imports per launch).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("checkpoint_write", "checkpoint_publish", "prune", "model_write", "model_publish", "random")
MAX_OCCURRENCE = {"checkpoint_write": 3, "checkpoint_publish": 4, "prune": 2, "model_write": 2, "model_publish": 5}


def train_arguments(corpus: Path, output_dir: Path, max_steps: int) -> list[str]:
    return ["train", "--dataset", str(corpus), "--output-dir", str(output_dir), "--max-steps", str(max_steps),
            "--eval-steps", "5", "--save-steps", "2", "--logging-steps", "2", "--vocab-size", "200", "--max-length",
            "24", "--embedding-size", "16", "--hidden-size", "32", "--latent-size", "8", "--batch-size", "8",
            "--dropout", "0.1", "--lr-scheduler", "plateau", "--seed", "3"]


# ---------------------------------------------------------------------------------------------------------------------
# The child: `sentmim train` with announced (and, at one of them, paused) critical points
# ---------------------------------------------------------------------------------------------------------------------


def child_main(pause_kind: str, occurrence: int, events: Path, argv: list[str]) -> int:
    """Run `sentmim train argv`, announcing every critical point in `events` ("kind count" lines) and pausing
    for good at the `occurrence`-th point of `pause_kind` (the driver kills the process there)."""
    import accelerate.utils.other
    import safetensors.torch
    import transformers.modeling_utils

    from sentmim import assembly, checkpointing, cli

    output_dir = Path(argv[argv.index("--output-dir") + 1]).resolve()
    counts = dict.fromkeys(KINDS, 0)
    stream = open(events, "a", buffering=1)  # noqa: SIM115 - open until the process ends (or is killed)

    def point(kind: str) -> bool:
        """Announce a point; True if the process must now stop (as it were, dying) here."""
        counts[kind] += 1
        stream.write(f"{kind} {counts[kind]} {time.time():.3f}\n")
        return kind == pause_kind and counts[kind] == occurrence

    def pause_forever():
        stream.write(f"paused {pause_kind} {occurrence} {time.time():.3f}\n")
        while True:
            time.sleep(60)

    def half_written(real_save, kind):
        def save(tensors, filename, *args, **kwargs):
            real_save(tensors, filename, *args, **kwargs)
            if point(kind):
                with open(filename, "r+b") as handle:  # as if the process died halfway through the write
                    handle.truncate(os.path.getsize(filename) // 2)
                pause_forever()

        return save

    accelerate.utils.other.safe_save_file = half_written(safetensors.torch.save_file, "checkpoint_write")
    transformers.modeling_utils.safe_save_file = half_written(safetensors.torch.save_file, "model_write")

    real_replace = os.replace

    def replace(source, target):
        target_path = Path(target).resolve()
        if output_dir in target_path.parents:
            relative = target_path.relative_to(output_dir)
            if relative.parts[0] == "checkpoints" and point("checkpoint_publish"):
                pause_forever()
            from_staging = Path(source).parent.name.startswith(".tmp-")  # a best-model file moving into place
            if len(relative.parts) == 1 and from_staging and point("model_publish"):
                pause_forever()
        return real_replace(source, target)

    os.replace = replace
    real_discard = getattr(checkpointing, "discard", None)  # how this library deletes an old checkpoint

    def discard(folder):
        if point("prune"):
            pause_forever()
        return real_discard(folder)

    if real_discard is not None:
        checkpointing.discard = discard
    real_train = assembly.train

    def train(*args, **kwargs):
        stream.write(f"train_start 1 {time.time():.3f}\n")
        return real_train(*args, **kwargs)

    assembly.train = train
    status = cli.main(argv)
    stream.write(f"exit {status} {time.time():.3f}\n")
    return status


class Child:
    """One launch of the run: a fresh interpreter (exec) or a fork of this process (fork)."""

    def __init__(self, launch: str, pause_kind: str, occurrence: int, events: Path, argv: list[str], log: Path):
        self.events, self.status = events, None
        if launch == "exec":
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            with open(log, "a") as output:
                self.process = subprocess.Popen(
                    [sys.executable, __file__, "--child", pause_kind, str(occurrence), str(events), "--", *argv],
                    stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                )
            self.pid = self.process.pid
            return
        self.process = None
        self.pid = os.fork()
        if self.pid == 0:  # the child
            status = 1
            try:
                descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(descriptor, 1)
                os.dup2(descriptor, 2)
                status = child_main(pause_kind, occurrence, events, argv)
            finally:
                os._exit(status)

    def poll(self) -> int | None:
        if self.status is None:
            if self.process is not None:
                self.status = self.process.poll()
            else:
                pid, code = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = os.waitstatus_to_exitcode(code)
        return self.status

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.005)
        return self.status

    def seen(self, word: str) -> float | None:
        """When the events file first showed a line starting with `word` (None: not yet)."""
        if not self.events.is_file():
            return None
        for line in self.events.read_text().splitlines():
            if line.startswith(word + " "):
                return float(line.split()[-1])
        return None


# ---------------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------------


def step_of(folder: Path) -> int:
    return int(folder.name.split("_")[1])


def check_visible_state(run: Path, runs_dir: Path) -> dict:
    """Everything a reader can see after a kill is complete: the model folder loads, every step_N checkpoint loads,
    and nothing was written beside the output folder. Returns what was loaded."""
    import torch
    from accelerate import Accelerator

    from sentmim import SentenceMIMConfig, SentenceMIMModel, checkpointing
    from sentmim.pipeline import SentenceMIMPipeline

    outside = sorted(set(os.listdir(runs_dir)) - {run.name})
    assert not outside, f"written outside the output folder: {outside}"
    loaded = {"model": False, "checkpoints": []}
    if (run / "model.safetensors").exists():
        SentenceMIMPipeline.from_pretrained(run)  # a one-line error if incomplete or mismatched
        loaded["model"] = True
    checkpoints = run / "checkpoints"
    for folder in sorted(checkpoints.glob("step_*"), key=step_of):
        missing = checkpointing.missing_files(folder)
        assert not missing, f"{folder} lacks {missing}"
        model = SentenceMIMModel(SentenceMIMConfig.from_pretrained(checkpoints / "run"))
        optimizer = torch.optim.Adam(model.parameters())
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)  # the run's --lr-scheduler plateau
        accelerator = Accelerator(cpu=True)
        accelerator.prepare(model, optimizer, scheduler)
        with torch.random.fork_rng():  # load_checkpoint restores the run's random state: keep ours
            state = checkpointing.load_checkpoint(accelerator, folder)
        assert state["step"] == step_of(folder)
        loaded["checkpoints"].append(folder.name)
    if loaded["checkpoints"]:
        assert checkpointing.latest_checkpoint(checkpoints).name in loaded["checkpoints"]
    return loaded


def launch_flags(run: Path) -> list[str]:
    from sentmim import checkpointing

    if checkpointing.latest_checkpoint(run / "checkpoints") is not None:
        return ["--resume"]
    return ["--overwrite"] if run.exists() else []


def checkpoint_step_reached(run: Path) -> int:
    from sentmim import checkpointing

    latest = checkpointing.latest_checkpoint(run / "checkpoints")
    return step_of(latest) if latest else 0


def log_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "elapsed_s"} for record in records]


def same_tensors(first: Path, second: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(first), load_file(second)
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def run_fault_injection(work: Path, kills: int, seed: int = 0, launch: str = "exec", kinds=KINDS,
                        timeout: float = 300.0, log=print) -> dict:
    """Kill the run `kills` times (kind drawn from `kinds`, seeded), resume each time, finish, compare. Returns the
    figures; raises AssertionError at the first violation."""
    from sentmim.apps.corpus import builtin_sentences

    started = time.time()
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(builtin_sentences(300, seed=0)) + "\n")
    runs_dir, events_dir = work / "runs", work / "events"
    for folder in (runs_dir, events_dir, work / "reference"):
        shutil.rmtree(folder, ignore_errors=True)
    runs_dir.mkdir()
    events_dir.mkdir()
    run, reference = runs_dir / "run", work / "reference" / "run"
    max_steps = max(40, 8 * kills)
    child_log = work / "children.log"
    child_log.write_text("")

    reference_child = Child(launch, "none", 0, events_dir / "reference", train_arguments(corpus, reference, max_steps),
                            child_log)
    assert reference_child.wait() == 0, f"the reference run failed: see {child_log}"
    seconds_per_step = (reference_child.seen("exit") - reference_child.seen("train_start")) / max_steps
    rng = random.Random(seed)
    plan = [kinds[index % len(kinds)] for index in range(kills)]
    rng.shuffle(plan)
    record, launches = [], 0
    for kind in plan:
        occurrence = rng.randint(1, MAX_OCCURRENCE.get(kind, 1))
        flags = launch_flags(run)
        events = events_dir / f"launch_{launches}"
        launches += 1
        child = Child(launch, kind if kind != "random" else "none", occurrence, events,
                      [*train_arguments(corpus, run, max_steps), *flags], child_log)
        deadline = time.time() + timeout
        killed_at = None
        if kind == "random":
            while child.poll() is None and child.seen("train_start") is None and time.time() < deadline:
                time.sleep(0.005)
            done = checkpoint_step_reached(run)  # stay within the steps left, so that the kill lands
            delay = rng.uniform(0.0, 0.8 * seconds_per_step * (max_steps - done))
            time.sleep(delay)
            killed_at = f"{delay:.2f} s into training"
        else:
            while child.poll() is None and child.seen("paused") is None and time.time() < deadline:
                time.sleep(0.005)
            if child.seen("paused") is not None:
                killed_at = f"{kind} #{occurrence}"
        assert time.time() < deadline, f"launch {launches} hung: see {child_log}"
        finished = child.poll() is not None
        if not finished:
            child.kill()
        else:
            assert child.status == 0, f"launch {launches} failed with status {child.status}: see {child_log}"
        state = check_visible_state(run, runs_dir)
        record.append({"kind": kind, "occurrence": occurrence, "resumed": "--resume" in flags,
                       "killed": not finished, "where": killed_at if not finished else "finished first",
                       "checkpoints_after": state["checkpoints"], "model_after": state["model"]})
        log(f"launch {launches:2d} {' '.join(flags) or '(new)':<11} {kind:<18} #{occurrence}: "
            f"{'killed at ' + str(killed_at) if not finished else 'finished before that point'}; "
            f"visible: model={state['model']}, checkpoints={state['checkpoints']}")
        if finished:
            break

    flags = launch_flags(run)
    final = Child(launch, "none", 0, events_dir / "final", [*train_arguments(corpus, run, max_steps), *flags],
                  child_log)
    assert final.wait() == 0, f"the final resume failed: see {child_log}"
    launches += 1
    check_visible_state(run, runs_dir)
    last = f"checkpoints/step_{max_steps}/model.safetensors"
    results = {
        "kills": sum(entry["killed"] for entry in record),
        "kills_by_kind": {kind: sum(1 for e in record if e["killed"] and e["kind"] == kind) for kind in kinds},
        "launches": launches,
        "max_steps": max_steps,
        "launch": launch,
        "seed": seed,
        "best_model_bitwise_equal": same_tensors(run / "model.safetensors", reference / "model.safetensors"),
        "final_checkpoint_bitwise_equal": same_tensors(run / last, reference / last),
        "log_equal": log_records(run) == log_records(reference),
        "train_results_equal": {k: v for k, v in json.loads((run / "train_results.json").read_text()).items()
                                if k != "train_seconds"}
        == {k: v for k, v in json.loads((reference / "train_results.json").read_text()).items()
            if k != "train_seconds"},
        "wall_seconds": round(time.time() - started, 1),
        "record": record,
    }
    return results


def write_report(results: dict, output: Path, command: str) -> None:
    from benchmarks.machine import machine_info

    output.mkdir(parents=True, exist_ok=True)
    results = {"command": command, "machine": machine_info(threads=1), **results}
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launch", choices=["exec", "fork"], default="exec")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", default=None, help="write results.json here")
    args = parser.parse_args(argv)
    import tempfile

    import transformers

    transformers.utils.logging.disable_progress_bar()  # the checks load models after every kill

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sentmim-fault-injection-"))
    results = run_fault_injection(work, args.kills, args.seed, args.launch)
    summary = {key: value for key, value in results.items() if key != "record"}
    print(json.dumps(summary, indent=2))
    if args.output:
        command = "python benchmarks/fault_injection.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(results, Path(args.output), command)
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's sentmim, whatever is installed
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, occurrence, events = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
        sys.exit(child_main(kind, occurrence, events, sys.argv[sys.argv.index("--") + 1:]))
    main()
