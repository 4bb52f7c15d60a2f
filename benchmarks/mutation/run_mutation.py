"""Mutation testing of the modules that wire sentmim together, with mutmut 3, one module at a time.

    make mutation                                                    # every module, the current working tree
    .venv/bin/python benchmarks/mutation/run_mutation.py --label after --modules training generation
    .venv/bin/python benchmarks/mutation/run_mutation.py --label before --ref 2c08f43   # a commit, its own tests
    .venv/bin/python benchmarks/mutation/run_mutation.py --label after --rerun-survivors # after adding tests

Each module is mutated in a throw-away copy of the repository (under --workdir, default /tmp/sentmim-mutation), so
the working tree is never touched, and only that module's relevant test files run (MODULES below; mutmut further
runs, for each mutant, only the tests that executed the mutated function). A module with more mutants than its
sample size is sampled deterministically: the mutants whose names have the smallest SHA-1 digests, so the same
code gives the same sample on every machine and before and after new tests.

Writes benchmarks/mutation/results/<label>.json: per module the number of mutants, the sample, the count of each
outcome, the score (killed / sampled; a mutant that no selected test reaches counts as surviving) and the diff of
every surviving mutant. benchmarks/mutation/README.md holds the judgement of each survivor.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"

# module -> (test files that exercise its wiring, sample size). Files missing at a --ref are left out.
MODULES = {
    "objectives": (["tests/test_objectives.py", "tests/test_modeling.py", "tests/test_training.py",
                    "tests/test_wiring_training.py", "tests/test_mim_warmup.py"], 200),
    "training": (["tests/test_training.py", "tests/test_training_options.py", "tests/test_streaming_training.py",
                  "tests/test_wiring_training.py", "tests/test_wiring_distributed.py", "tests/test_resume_safety.py",
                  "tests/test_bad_input.py", "tests/test_run_folder.py", "tests/test_mim_warmup.py"], 60),
    "generation": (["tests/test_generation.py", "tests/test_pipeline.py", "tests/test_wiring_generation.py",
                    "tests/test_wiring_pipeline.py"], 80),
    "pipeline": (["tests/test_pipeline.py", "tests/test_cli.py", "tests/test_wiring_generation.py",
                  "tests/test_wiring_pipeline.py", "tests/test_bad_input.py", "tests/test_transformers_pipeline.py",
                  "tests/test_aggregate_posterior.py", "tests/test_length_rule.py"], 60),
    "evaluation": (["tests/test_evaluation.py", "tests/test_recipes_eval.py", "tests/test_cli_evaluate.py",
                    "tests/test_wiring_evaluation.py", "tests/test_unknown_tokens.py",
                    "tests/test_widened_importance_sampling.py", "tests/test_length_rule.py"], 70),
    # test_cli_demo.py is left out: it takes seconds and every parser mutant would run it; the demo's flags are
    # covered by test_cli_arguments.py
    "cli": (["tests/test_cli.py", "tests/test_cli_evaluate.py", "tests/test_cli_arguments.py",
             "tests/test_bad_input.py", "tests/test_resume_safety.py", "tests/test_unknown_tokens.py"], 60),
}
PYTEST_ARGS = ["-p", "no:cacheprovider", "-x", "-q", "-m", "not slow"]
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def copy_tree(destination: Path, ref: str | None) -> None:
    """The repository's files (tracked and untracked-but-not-ignored), or those of commit `ref`, into destination."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    if ref:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def configure(workdir: Path, module: str, test_files: list[str]) -> list[str]:
    present = [name for name in test_files if (workdir / name).is_file()]
    settings = [
        "", "[tool.mutmut]", 'source_paths = ["sentmim"]', f'only_mutate = ["sentmim/{module}.py"]',
        'also_copy = ["recipes", "benchmarks"]',  # tests load recipes and benchmark helpers from the tree
        f"pytest_add_cli_args_test_selection = {json.dumps(present)}",
        f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
    ]
    with (workdir / "pyproject.toml").open("a") as handle:
        handle.write("\n".join(settings) + "\n")
    return present


def mutmut(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"mutmut {args[0]} failed in {workdir}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def exit_codes(workdir: Path, module: str) -> dict:
    return json.loads((workdir / "mutants" / "sentmim" / f"{module}.py.meta").read_text())["exit_code_by_key"]


def sample(names: list[str], size: int) -> list[str]:
    return sorted(sorted(names, key=lambda name: hashlib.sha1(name.encode()).hexdigest())[:size])


def run_module(module: str, label: str, ref: str | None, workroot: Path, max_children: int,
               previous: dict | None = None) -> dict:
    """Run the module's sample; with `previous` (its earlier result), rerun only the mutants that survived there
    and keep the other outcomes."""
    test_files, size = MODULES[module]
    workdir = workroot / label / module
    copy_tree(workdir, ref)
    selected = configure(workdir, module, test_files)
    started = time.time()
    # mutmut generates every mutant and runs the selected tests once (which test reaches which function) before
    # it looks at the names asked for; a name that matches nothing stops it right there, mutants listed.
    mutmut(workdir, "run", "--max-children", str(max_children), "list-only-no-such-mutant", check=False)
    everything = list(exit_codes(workdir, module))
    chosen = sample(everything, size)
    outcomes = {}
    if previous:  # killed earlier (a timeout counts as killed, as in mutmut's score)
        outcomes = {name: "killed" for name in chosen if name not in previous["survivors"]}
        killed_before = previous["counts"].get("killed", 0) + previous["counts"].get("timeout", 0)
        assert killed_before == len(outcomes), "the sample changed since the previous run: run the whole module"
    to_run = [name for name in chosen if name not in outcomes]
    print(f"{module}: {len(everything)} mutants, running {len(to_run)} of a sample of {len(chosen)} against "
          f"{' '.join(selected)}", flush=True)
    if to_run:
        mutmut(workdir, "run", "--max-children", str(max_children), *to_run)
    codes = exit_codes(workdir, module)
    outcomes |= {name: STATUS.get(codes[name], f"exit {codes[name]}") for name in to_run}
    counts = {status: sum(1 for value in outcomes.values() if value == status) for status in set(outcomes.values())}
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survivors = {name: mutmut(workdir, "show", name).stdout.split("\n", 1)[1] for name, status in outcomes.items()
                 if status in ("survived", "no tests")}
    return {"mutants": len(everything), "sampled": len(chosen), "counts": counts,
            "score": round(100 * killed / len(chosen), 1), "test_files": selected,
            "minutes": round((time.time() - started) / 60, 1),
            "survivors": {name: {"status": outcomes[name], "diff": diff} for name, diff in survivors.items()}}


def dirty() -> bool:
    status = subprocess.run(["git", "status", "--porcelain", "--", "sentmim", "tests"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return bool(status.strip())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="results/<label>.json (default: after)")
    parser.add_argument("--ref", default=None, help="a git commit to test instead of the working tree")
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sentmim-mutation"))
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1: a shared box)")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="rerun only the mutants that survived in results/<label>.json (after adding tests)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / f"{args.label}.json"
    report = json.loads(output.read_text()) if output.is_file() else {"modules": {}}
    commit = args.ref or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    report.update(label=args.label, tool=f"mutmut {version('mutmut')}",
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    command = " ".join(["python benchmarks/mutation/run_mutation.py", *(argv or sys.argv[1:])])
    for module in args.modules:
        previous = report["modules"].get(module) if args.rerun_survivors else None
        result = run_module(module, args.label, args.ref, args.workdir, args.max_children, previous)
        report["modules"][module] = {"commit": commit, "uncommitted_changes": args.ref is None and dirty(),
                                     "command": command, **result}
        output.write_text(json.dumps(report, indent=1) + "\n")  # after each module: a long run keeps what it did
        result = report["modules"][module]
        print(f"{module}: score {result['score']}% of {result['sampled']} ({result['counts']}), "
              f"{result['minutes']} min", flush=True)


if __name__ == "__main__":
    main()
