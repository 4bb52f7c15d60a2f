"""Data pipeline speed and memory (issue #6): tokenizing and bucketing a million sentences, and streaming memory.

    .venv/bin/python benchmarks/data_pipeline.py            # full run (~3 min on 2 busy cores): the committed results
    .venv/bin/python benchmarks/data_pipeline.py --quick    # 20k sentences, 0.1x / 0.5x PTB (seconds)
    .venv/bin/python benchmarks/data_pipeline.py --data builtin --output /tmp/data_pipeline

Corpora are generated in a temporary folder under /tmp (--work-dir), deleted at the end, never in the repository:
PTB is for research use only and is read from --data (default ../shared/data/ptb, or "builtin": the package's own
corpus). The word tokenizer is trained on PTB train, as `sentmim train --tokenizer word` does.

1. Speed. A corpus of --sentences lines (default 1,000,000, drawn with replacement from PTB train, seed 0) goes
   through the library's steps with their defaults, as `sentmim.assembly` chains them: `load_text_dataset`
   (Arrow cache, a 5% validation split carved), `clean_dataset`, `tokenize_dataset` (max_length 64, overlong
   sentences dropped, `num_proc` as given, default the library's None), then bucketing: `make_dataloader` on the
   train split and one full epoch of batch indices from its `LengthBucketSampler`, and collating the first
   --collate-fraction of the epoch's batches. Each step's wall and CPU seconds (this process and its pool workers).
   Target: tokenizing + bucketing well under 60 s on 2 cores.
2. Memory. One epoch of length-bucketed, padded batches over PTB train repeated 1x and 10x, streaming
   (`load_text_dataset(..., streaming=True)` -> clean -> tokenize -> `make_dataloader`'s window bucketing) and in
   memory (Arrow-cached, `LengthBucketSampler`). Each run is its own forked process; its peak resident memory is
   the kernel's high-water mark (VmHWM, reset when the process starts), and "above start" subtracts the resident
   memory it started with (the interpreter with torch, transformers and datasets loaded). Target: the streaming
   peak at 10x within 20% of the one at 1x.

The machine may be shared: the load average before and after is recorded, and CPU seconds are less sensitive to
other jobs than wall seconds.
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 60.0  # tokenize + bucket, 1M sentences, 2 cores
FLAT_RATIO = 1.2  # streaming peak at the largest corpus / at the smallest
MAX_LENGTH = 64
BATCH_SIZE = 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k sentences and 0.1x / 0.5x PTB (seconds)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "data_pipeline"), help="folder for results")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"),
                        help='folder with ptb.train.txt, or "builtin"')
    parser.add_argument("--sentences", type=int, help="size of the speed corpus (default 1,000,000; quick 20,000)")
    parser.add_argument("--scales", type=float, nargs="+", help="PTB copies for the memory runs (default 1 10)")
    parser.add_argument("--num-proc", type=int, default=None, help="processes for datasets.map (default: None)")
    parser.add_argument("--collate-fraction", type=float, default=0.05, help="share of the epoch to collate")
    parser.add_argument("--work-dir", default=None, help="a new folder for corpora and caches is made here (/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep that folder")
    args = parser.parse_args(argv)
    args.sentences = args.sentences or (20_000 if args.quick else 1_000_000)
    args.scales = args.scales or ([0.1, 0.5] if args.quick else [1.0, 10.0])
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
    except OSError:
        pass


def peak_mib() -> float:
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (datasets' num_proc pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Stage:
    """Times a block: `with Stage(stages, "tokenize", num_sentences): ...` adds wall and CPU seconds to stages."""

    def __init__(self, stages: dict, name: str, items: int):
        self.stages, self.name, self.items = stages, name, items

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        self.stages[self.name] = {
            "wall_s": round(wall, 2), "cpu_s": round(cpu_seconds() - self.cpu, 2), "items": self.items,
            "items_per_s": round(self.items / max(wall, 1e-9)),
        }


def in_child(function, **kwargs) -> dict:
    """Run function(**kwargs) in a forked process (its own peak memory; the parent's imports are shared)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(send, function, kwargs))
    process.start()
    send.close()
    try:
        ok, result = receive.recv()
    except EOFError:
        ok, result = False, "the child process died without an answer"
    process.join()
    if not ok:
        raise RuntimeError(f"{function.__name__} failed in its process:\n{result}")
    return result


def _child_main(send, function, kwargs) -> None:
    try:
        import datasets

        datasets.config.HF_DATASETS_CACHE = Path(kwargs.pop("cache_dir"))  # a fresh cache: nothing is reused
        datasets.disable_progress_bars()
        _reset_peak()
        send.send((True, function(**kwargs)))
    except BaseException:
        send.send((False, traceback.format_exc()))
        raise
    finally:
        send.close()


# ---------------------------------------------------------------------------------------------------------------------
# The two measurements, each run in its own process
# ---------------------------------------------------------------------------------------------------------------------


def time_pipeline(corpus: str, tokenizer, num_proc: int | None, collate_fraction: float) -> dict:
    from sentmim.batching import make_dataloader
    from sentmim.data import load_text_dataset
    from sentmim.preprocessing import clean_dataset, tokenize_dataset

    stages: dict = {}
    with open(corpus, encoding="utf-8") as lines:
        num_lines = sum(1 for _ in lines)
    with Stage(stages, "load", num_lines):
        raw = load_text_dataset(corpus)
    with Stage(stages, "clean", num_lines):
        cleaned = clean_dataset(raw, num_proc=num_proc)
    num_cleaned = sum(len(split) for split in cleaned.values())
    with Stage(stages, "tokenize", num_cleaned):
        tokenized, counts = tokenize_dataset(cleaned, tokenizer, max_length=MAX_LENGTH, num_proc=num_proc)
    train = tokenized["train"]
    with Stage(stages, "bucket", len(train)):
        loader = make_dataloader(train, BATCH_SIZE, tokenizer.pad_token_id, shuffle=True, seed=0)
        loader.batch_sampler.set_epoch(0)
        num_batches = sum(1 for _ in loader.batch_sampler)
    to_collate = max(1, round(collate_fraction * num_batches))
    batches = iter(loader)
    with Stage(stages, "collate", to_collate * BATCH_SIZE):
        for _ in range(to_collate):
            next(batches)
    collate_s = stages["collate"]["wall_s"]
    return {
        "corpus_lines": num_lines, "train_sentences": len(train), "batches_per_epoch": num_batches,
        "tokenize_counts": counts, "stages": stages,
        "collate": {"batches": to_collate, "ms_per_batch": round(1000 * collate_s / to_collate, 3),
                    "epoch_estimate_s": round(collate_s * num_batches / to_collate, 1)},
    }


def epoch_memory(corpus: str, streaming: bool, tokenizer, expected_sentences: int) -> dict:
    from sentmim.batching import make_dataloader
    from sentmim.data import load_text_dataset
    from sentmim.preprocessing import clean_dataset, tokenize_dataset

    start_mib = _status_mib("VmRSS") or peak_mib()
    start = time.perf_counter()
    raw = load_text_dataset(corpus, streaming=streaming)
    tokenized, _ = tokenize_dataset(clean_dataset(raw), tokenizer, max_length=MAX_LENGTH)
    loader = make_dataloader(tokenized["train"], BATCH_SIZE, tokenizer.pad_token_id, shuffle=True, seed=0)
    ready = time.perf_counter()
    sample_every = max(1, expected_sentences // BATCH_SIZE // 10)
    num_batches = num_sentences = 0
    rss_samples = []
    for batch in loader:
        num_batches += 1
        num_sentences += len(batch["input_ids"])
        if num_batches % sample_every == 0:
            rss_samples.append(round(_status_mib("VmRSS") or 0.0))
    end = time.perf_counter()
    peak = peak_mib()
    return {
        "streaming": streaming, "sentences": num_sentences, "batches": num_batches,
        "prepare_s": round(ready - start, 2), "epoch_s": round(end - ready, 2),
        "batches_per_s": round(num_batches / max(end - ready, 1e-9), 1),
        "sentences_per_s": round(num_sentences / max(end - start, 1e-9)),
        "start_rss_mib": round(start_mib, 1), "peak_rss_mib": round(peak, 1),
        "peak_above_start_mib": round(peak - start_mib, 1), "rss_samples_mib": rss_samples,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Corpora, machine, report
# ---------------------------------------------------------------------------------------------------------------------


def source_sentences(data: str) -> tuple[list[str], str]:
    if data == "builtin":
        from sentmim.apps.corpus import load_builtin_corpus

        return list(load_builtin_corpus()["train"]["text"]), "builtin corpus, train split"
    path = Path(data) / "ptb.train.txt"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data FOLDER with ptb.train.txt, or --data builtin")
    return path.read_text(encoding="utf-8").splitlines(), str(path)


def write_corpora(lines: list[str], args, work_dir: Path) -> tuple[Path, dict[str, tuple[Path, int]]]:
    """The speed corpus (sampled with replacement) and the source repeated at each scale (name -> path, lines)."""
    rng = random.Random(0)
    speed = work_dir / f"sampled_{args.sentences}.txt"
    with open(speed, "w", encoding="utf-8") as out:
        for start in range(0, args.sentences, 100_000):
            count = min(100_000, args.sentences - start)
            out.write("\n".join(rng.choices(lines, k=count)) + "\n")
    scaled = {}
    for scale in args.scales:
        name = f"{scale:g}x"
        path = work_dir / f"source_{name}.txt"
        whole, part = int(scale), round((scale - int(scale)) * len(lines))
        with open(path, "w", encoding="utf-8") as out:
            out.writelines("\n".join(lines) + "\n" for _ in range(whole))
            if part:
                out.write("\n".join(lines[:part]) + "\n")
        scaled[name] = (path, whole * len(lines) + part)
    return speed, scaled


def machine_info() -> dict:
    import datasets
    import numpy
    import pyarrow
    import tokenizers
    import torch
    import transformers

    memory = _meminfo_gib()
    return {
        "cpu_model": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
        "pyarrow": pyarrow.__version__, "numpy": numpy.__version__,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
    }


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            return round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def write_report(results: dict, output: Path) -> str:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    speed, memory, machine = results["speed"], results["memory"], results["machine"]
    lines = [
        "# Data pipeline benchmark (issue #6)", "",
        f"Command: `{results['command']}`", "",
        (
            f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python "
            f"{machine['python']}, torch {machine['torch']}, datasets {machine['datasets']}, tokenizers "
            f"{machine['tokenizers']}, transformers {machine['transformers']}, pyarrow {machine['pyarrow']}. "
            f"Load average (1/5/15 min) before: {results['load_average']['before']}, after: "
            f"{results['load_average']['after']}. Total run: {results['wall_seconds']} s."
        ),
        "",
        f"## Speed: {speed['corpus_lines']:,} sentences", "",
        (
            f"Corpus: {results['corpora']['speed']}. Word tokenizer ({results['tokenizer']['vocab_size']} words) "
            f"trained on {results['corpora']['source']} in {results['tokenizer']['train_s']} s. num_proc: "
            f"{results['settings']['num_proc']}. Items are the sentences each step receives."
        ),
        "",
        "| step | wall s | CPU s | sentences/s |", "|---|---|---|---|",
    ]
    for name, stage in speed["stages"].items():
        lines.append(f"| {name} | {stage['wall_s']} | {stage['cpu_s']} | {stage['items_per_s']:,} |")
    collate = speed["collate"]
    target = results["targets"]
    lines += [
        "",
        (
            f"Collating: {collate['ms_per_batch']} ms per batch of {BATCH_SIZE} ({collate['batches']} batches), "
            f"{collate['epoch_estimate_s']} s for the epoch's {speed['batches_per_epoch']:,} batches."
        ),
        "",
        (
            f"**Tokenize + bucket: {target['tokenize_plus_bucket_wall_s']} s wall** "
            f"({target['tokenize_plus_bucket_cpu_s']} s CPU); load + clean + tokenize + bucket: "
            f"{target['pipeline_wall_s']} s. Target < {TARGET_SECONDS:g} s: "
            f"{'met' if target['speed_met'] else 'NOT met'}."
        ),
        "",
        "## Memory: one epoch of batches", "",
        "| path | corpus | sentences | batches | peak RSS MiB | above start MiB | prepare s | epoch s | batches/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path_name, runs in memory["runs"].items():
        for scale, run in runs.items():
            lines.append(
                f"| {path_name} | {scale} | {run['sentences']:,} | {run['batches']:,} | {run['peak_rss_mib']} | "
                f"{run['peak_above_start_mib']} | {run['prepare_s']} | {run['epoch_s']} | {run['batches_per_s']} |"
            )
    lines += [
        "",
        (
            f"Streaming peak, largest / smallest corpus: {target['streaming_peak_ratio']} (above start: "
            f"{target['streaming_above_start_ratio']}). Target <= {FLAT_RATIO}: "
            f"{'met' if target['streaming_flat'] else 'NOT met'}."
        ),
        "",
        "Resident memory sampled every tenth of the epoch (MiB):", "",
    ]
    for path_name, runs in memory["runs"].items():
        for scale, run in runs.items():
            lines.append(f"- {path_name} {scale}: {run['rss_samples_mib']}")
    text = "\n".join(lines) + "\n"
    (output / "results.md").write_text(text)
    return text


# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    began, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked children: no Rust thread pool to inherit
    from sentmim.tokenization import train_tokenizer

    Path(args.work_dir or "/tmp").mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="sentmim-data-pipeline-", dir=args.work_dir or "/tmp"))
    try:
        lines, source = source_sentences(args.data)
        speed_corpus, scaled = write_corpora(lines, args, work_dir)
        start = time.perf_counter()
        tokenizer = train_tokenizer(lines, kind="word", vocab_size=10_000)
        train_s = round(time.perf_counter() - start, 2)

        def child(function, **kwargs):
            cache = tempfile.mkdtemp(prefix="hf-cache-", dir=work_dir)
            try:
                return in_child(function, cache_dir=cache, tokenizer=tokenizer, **kwargs)
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        print(f"speed: {args.sentences:,} sentences ...", flush=True)
        speed = child(time_pipeline, corpus=str(speed_corpus), num_proc=args.num_proc,
                      collate_fraction=args.collate_fraction)
        runs: dict = {"streaming": {}, "in_memory": {}}
        for path_name, streaming in (("streaming", True), ("in_memory", False)):
            for name, (path, count) in scaled.items():
                print(f"memory: {path_name} {name} ({count:,} lines) ...", flush=True)
                runs[path_name][name] = child(epoch_memory, corpus=str(path), streaming=streaming,
                                              expected_sentences=count)
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    stages = speed["stages"]
    streams = list(runs["streaming"].values())
    results = {
        "command": shlex.join([".venv/bin/python", "benchmarks/data_pipeline.py", *argv]),
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"max_length": MAX_LENGTH, "batch_size": BATCH_SIZE, "num_proc": args.num_proc,
                     "collate_fraction": args.collate_fraction, "quick": args.quick},
        "corpora": {"source": source, "speed": f"{args.sentences:,} lines drawn with replacement (seed 0)",
                    "scales": {name: count for name, (_, count) in scaled.items()}},
        "tokenizer": {"kind": "word", "vocab_size": len(tokenizer), "train_s": train_s},
        "speed": speed,
        "memory": {"runs": runs},
    }
    tokenize_bucket = stages["tokenize"]["wall_s"] + stages["bucket"]["wall_s"]
    results["targets"] = {
        "tokenize_plus_bucket_wall_s": round(tokenize_bucket, 2),
        "tokenize_plus_bucket_cpu_s": round(stages["tokenize"]["cpu_s"] + stages["bucket"]["cpu_s"], 2),
        "pipeline_wall_s": round(sum(stages[name]["wall_s"] for name in ("load", "clean", "tokenize", "bucket")), 2),
        "speed_target_s": TARGET_SECONDS,
        "speed_met": tokenize_bucket < TARGET_SECONDS,
        "streaming_peak_ratio": round(streams[-1]["peak_rss_mib"] / streams[0]["peak_rss_mib"], 3),
        "streaming_above_start_ratio": round(
            streams[-1]["peak_above_start_mib"] / max(streams[0]["peak_above_start_mib"], 1e-9), 3
        ),
        "flat_ratio_target": FLAT_RATIO,
    }
    results["targets"]["streaming_flat"] = results["targets"]["streaming_peak_ratio"] <= FLAT_RATIO
    results["wall_seconds"] = round(time.perf_counter() - began, 1)
    print(write_report(results, Path(args.output)))
    return results


if __name__ == "__main__":
    main()
