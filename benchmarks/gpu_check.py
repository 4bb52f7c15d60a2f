"""The first check to run on a GPU: mixed precision, training throughput, decoding, IW-NLL, several GPUs and the
paper preset, in one command bounded in time, writing results.json and results.md.

    .venv/bin/python benchmarks/gpu_check.py --time-budget 900          # on a GPU machine (15 minutes)
    .venv/bin/python benchmarks/gpu_check.py --cpu --time-budget 60     # tiny sizes on the CPU (its test)

Each section gets a share of the budget and stops early when its share runs out; a section that fails is recorded
with its error and the next one runs, so one run yields every number it can.

- precision: the loss of one batch (same weights, same z) under bf16 and fp16 autocast against float32, for the
  GRU and the Transformer; and short training runs of the paper GRU by `sentmim train` in each precision (one
  process each, the three at once; fp16 with accelerate's loss scaling), comparing their loss curves.
- throughput: training tokens/s (forward, backward, clipping, Adam as sentmim.training builds it, fused) of the
  GRU and the Transformer at batch 20 and 128, float32 and bf16 autocast side by side, with useful FLOPs
  (benchmarks/flops.py) as a fraction of the matmul rate measured here in the same dtype; and the host syncs of one
  training step (torch.cuda.set_sync_debug_mode; the library's forward and backward make none).
- decode: greedy sentences/s of model.decode against prefix recomputation (benchmarks/naive.py), same outputs.
- iw_nll: metrics.importance_weighted_nll with K = 500 on validation sentences: sentences/s and FLOP fraction.
- multi_gpu: with more than one GPU, `sentmim train` launched by accelerate on all of them against one GPU
  (skipped with one).
- paper: the paper preset of sentmim.apps.benchmark (sMIM, latent 128; --cpu: tiny sizes) trained for as many steps
  as its share of the budget allows at the measured step rate, then scored (IW-NLL K = 500, BLEU, MI, ...).

Models: the sentenceMIM paper's GRU (embedding 300, hidden 512, latent 128) and a Transformer of similar size
(benchmarks/throughput.py); --cpu uses tiny ones. Data: --data, by default ../shared/data/ptb when it exists, else
the package's built-in corpus.
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flops
import throughput
from machine import machine_info, matmul_rate, write_results

REPO = Path(__file__).resolve().parent.parent
PTB = REPO.parent / "shared" / "data" / "ptb"
SHARES = {"precision": 0.1, "throughput": 0.3, "decode": 0.08, "iw_nll": 0.1, "multi_gpu": 0.12, "paper": 0.3}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--time-budget", type=float, default=900.0, help="seconds for the whole check")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU with tiny models (the rehearsal)")
    parser.add_argument("--data", default=None,
                        help=f'PTB folder or "builtin" (default: {PTB} if it exists, else builtin)')
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "gpu_check"), help="folder for results")
    parser.add_argument("--sections", nargs="+", default=list(SHARES), choices=list(SHARES))
    parser.add_argument("--training-precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                        help="precisions of the short training runs of the precision section")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.time_budget <= 0:
        parser.error(f"--time-budget {args.time_budget}: must be > 0 seconds")
    if args.data is None:
        args.data = str(PTB) if PTB.is_dir() else "builtin"
    return args


class Budget:
    """Seconds left for the whole run, and each section's share of them."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def deadline(self, share: float) -> float:
        return min(self.end, time.monotonic() + share * self.seconds)

    def left(self) -> float:
        return self.end - time.monotonic()


def autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def make_model(architecture: str, tokenizer, tiny: bool, device: torch.device):
    torch.manual_seed(0)
    return throughput.make_model(architecture, tokenizer, tiny).to(device)


def batches_on(device, tokenized_split, batch_size: int, pad: int, seed: int, count: int) -> list[dict]:
    """`count` length-bucketed training batches, already on the device (the copy is not what is timed)."""
    from sentmim.batching import make_dataloader

    loader = make_dataloader(tokenized_split, batch_size, pad, shuffle=True, seed=seed)
    result = []
    while len(result) < count:
        for batch in loader:
            result.append({name: tensor.to(device) for name, tensor in batch.items()})
            if len(result) == count:
                break
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Sections


def check_precision(ctx, deadline: float) -> dict:
    """Losses under bf16 / fp16 autocast against float32: one batch with the same z, then short training runs."""
    rows = []
    pad = ctx.tokenizer.pad_token_id
    batch = batches_on(ctx.device, ctx.tokenized["train"], 20, pad, ctx.seed, 1)[0]
    for architecture in ("gru", "transformer"):
        model = make_model(architecture, ctx.tokenizer, ctx.tiny, ctx.device).eval()
        reference = None
        for name, dtype in PRECISIONS.items():
            row = {"architecture": architecture, "precision": name}
            try:
                torch.manual_seed(ctx.seed)  # the same z for every precision
                with torch.no_grad(), autocast(ctx.device, dtype):
                    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False)
                loss, log_likelihood = out.loss.float().item(), out.log_likelihood.double()
                reference = reference or (loss, log_likelihood)
                targets = batch["attention_mask"][:, 1:].sum()
                row.update(loss=loss, loss_relative_difference=abs(loss - reference[0]) / abs(reference[0]),
                           max_log_likelihood_difference_per_token=float(
                               ((log_likelihood - reference[1]).abs() / targets).max()))
            except RuntimeError as error:  # e.g. a dtype this device's autocast does not support
                row["error"] = one_line(error)
            rows.append(row)
    runs = short_training_runs(ctx, 2 if ctx.tiny else 30, deadline)
    fp32 = next((run["losses"] for run in runs if run["precision"] == "fp32" and "losses" in run), None)
    for run in runs:
        if fp32 and "losses" in run:
            run["max_loss_relative_difference"] = max(abs(a - b) / abs(b) for a, b in zip(run["losses"], fp32,
                                                                                          strict=True))
    return {"one_batch": rows, "training_runs": runs}


def short_training_runs(ctx, steps: int, deadline: float) -> list[dict]:
    """`steps` steps of the paper GRU by `sentmim train` in each precision of --training-precisions, one process each
    (accelerate keeps one precision per process; fp16 gets its loss scaling). On a GPU machine the processes run at
    once; on the CPU one after the other, one thread each (at once they would only fight over the cores)."""
    modes = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
    sizes = ["--embedding-size", "16", "--hidden-size", "32", "--latent-size", "8", "--max-length", "32"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"} if ctx.device.type == "cpu" else None
    runs = []
    with tempfile.TemporaryDirectory(prefix="sentmim-gpu-check-") as folder:

        def start(name):
            command = [sys.executable, "-m", "sentmim.cli", "train", "--dataset", ctx.data, "--output-dir",
                       str(Path(folder) / name), "--max-steps", str(steps), "--batch-size", "20", "--logging-steps",
                       "1", "--eval-steps", str(steps), "--max-validation-sentences", "64", "--mixed-precision",
                       modes[name], "--seed", str(ctx.seed), "--disable-tqdm", *(sizes if ctx.tiny else []),
                       *(["--cpu"] if ctx.force_cpu else [])]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       cwd=REPO, env=environment)
            return process, time.perf_counter()

        def finish(name, process, started) -> dict:
            try:
                # A started run gets at least a minute: importing the Hugging Face stack alone takes seconds, and
                # several times that on a loaded machine, which must not read as a failed precision.
                _, stderr = process.communicate(timeout=max(60.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                return {"precision": name, "error": "out of time"}
            if process.returncode != 0:
                return {"precision": name, "error": (stderr.strip().splitlines() or ["no output"])[-1]}
            log = Path(folder) / name / "log.jsonl"
            losses = [record["train_loss"] for record in map(json.loads, log.read_text().splitlines())
                      if "train_loss" in record]
            return {"precision": name, "steps": steps, "seconds": time.perf_counter() - started, "losses": losses,
                    "finite": all(map(math.isfinite, losses))}

        if ctx.device.type == "cuda":
            started = {name: start(name) for name in ctx.training_precisions}
            runs = [finish(name, *started[name]) for name in ctx.training_precisions]
        else:
            runs = [finish(name, *start(name)) for name in ctx.training_precisions]
    return runs


def measure_throughput(ctx, deadline: float) -> dict:
    """Training tokens/s and FLOP fraction, float32 and bf16 autocast taking turns on the same batches."""
    from sentmim.options import TrainingOptions
    from sentmim.training import build_optimizer, fused_adam_supported

    rates = {name: matmul_rate(ctx.matmul_size, repeats=3, device=str(ctx.device), dtype=dtype or torch.float32)
             for name, dtype in PRECISIONS.items() if name != "fp16"}
    rows, syncs = [], {}
    configurations = [(architecture, size) for architecture in ("gru", "transformer") for size in (20, 128)]
    for index, (architecture, batch_size) in enumerate(configurations):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(configurations) - index)
        model = make_model(architecture, ctx.tokenizer, ctx.tiny, ctx.device).train()
        optimizer = build_optimizer(model, TrainingOptions("unused"), fused=fused_adam_supported(ctx.device))
        batches = batches_on(ctx.device, ctx.tokenized["train"], batch_size, ctx.tokenizer.pad_token_id, ctx.seed,
                             ctx.max_steps + 2)
        totals = {name: {"seconds": 0.0, "targets": 0, "flops": 0, "steps": 0} for name in rates}
        for step, batch in enumerate(batches):
            for name in rates:  # float32 and bf16 take turns on the same batch
                seconds = timed_training_step(model, optimizer, batch, PRECISIONS[name], ctx.device)
                if step >= 2:  # warm-up: allocator, kernel choices
                    lengths = batch["attention_mask"].sum(1)
                    total = totals[name]
                    total["seconds"] += seconds
                    total["steps"] += 1
                    total["targets"] += int(lengths.sum()) - lengths.numel()
                    total["flops"] += flops.training_flops(model.config, lengths.tolist())
            if step >= 2 and time.monotonic() > share_end:
                break
        for name, total in totals.items():
            if total["steps"]:
                useful = total["flops"] / total["seconds"] / 1e9
                rows.append({"architecture": architecture, "batch_size": batch_size, "precision": name,
                             "steps": total["steps"], "tokens_per_s": total["targets"] / total["seconds"],
                             "useful_gflop_per_s": useful, "matmul_gflop_per_s": rates[name],
                             "flop_fraction": useful / rates[name]})
        if batch_size == 20:
            syncs[architecture] = {name: count_host_syncs(model, optimizer, batches[0], PRECISIONS[name], ctx.device)
                                   for name in rates}
    return {"matmul_gflop_per_s": rates, "rows": rows, "host_syncs_per_training_step": syncs,
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}


def training_step(model, optimizer, batch, dtype, device) -> None:
    with autocast(device, dtype):
        loss = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()


def timed_training_step(model, optimizer, batch, dtype, device) -> float:
    throughput.synchronize(device)
    start = time.perf_counter()
    training_step(model, optimizer, batch, dtype, device)
    throughput.synchronize(device)
    return time.perf_counter() - start


def count_host_syncs(model, optimizer, batch, dtype, device) -> int | str:
    """Host syncs in one training step, as torch.cuda's sync debug mode reports them (CUDA only)."""
    if device.type != "cuda":
        return "n/a (no CUDA device)"
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            training_step(model, optimizer, batch, dtype, device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def measure_decode(ctx, deadline: float) -> dict:
    rows = []
    for architecture in ("gru", "transformer"):
        if time.monotonic() > deadline:
            rows.append({"architecture": architecture, "skipped": "out of time"})
            continue
        model = make_model(architecture, ctx.tokenizer, ctx.tiny, ctx.device)
        sentences, naive_sentences = (20, 10) if ctx.tiny else (2000, 200)
        rows.append(throughput.measure_decode(model, sentences, naive_sentences, 100, ctx.seed, lambda: None))
    return {"rows": rows}


def measure_iw_nll(ctx, deadline: float) -> dict:
    rows = []
    for index, architecture in enumerate(("gru", "transformer")):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (2 - index)
        model = make_model(architecture, ctx.tokenizer, ctx.tiny, ctx.device)
        row = throughput.measure_iw_nll(model, ctx.tokenized["validation"], 4 if ctx.tiny else 1000, 500, ctx.seed,
                                        ctx.tokenizer.pad_token_id, lambda: None, deadline=share_end)
        row["flop_fraction"] = row["useful_gflop_per_s"] / ctx.rate_fp32
        rows.append(row)
    return {"rows": rows}


def run_multi_gpu(ctx, deadline: float) -> dict:
    """`sentmim train` on every GPU through accelerate, against the same command on one GPU."""
    count = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    if count < 2:
        return {"skipped": f"{count} GPU(s): needs more than one"}
    runs = {}
    for processes in (1, count):
        seconds_left = deadline - time.monotonic()
        if seconds_left < 30:
            runs[processes] = {"skipped": "out of time"}
            continue
        runs[processes] = launch_training(ctx, processes, timeout=seconds_left / (2 if processes == 1 else 1))
    return {"gpus": count, "runs": runs}


def launch_training(ctx, processes: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="sentmim-multi-gpu-") as folder:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                    "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "bf16",
                    *(["--multi_gpu"] if processes > 1 else []), "-m", "sentmim.cli", "train"]
        command = launcher + ["--dataset", ctx.data, "--output-dir", folder, "--max-steps", "200",
                              "--batch-size", "20", "--logging-steps", "50", "--eval-steps", "1000000",
                              "--max-validation-sentences", "64", "--mixed-precision", "bf16", "--disable-tqdm"]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish in {timeout:.0f} s"}
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "command": shlex.join(command)}
        records = [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]
    timed = [record for record in records if "elapsed_s" in record]
    first, last = timed[0], timed[-1]
    steps_per_s = (last["step"] - first["step"]) / max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    return {"processes": processes, "wall_seconds": time.perf_counter() - started, "steps_per_s": steps_per_s,
            "sentences_per_s": steps_per_s * 20 * processes, "final_train_loss": last.get("train_loss")}


def run_paper_preset(ctx, deadline: float) -> dict:
    """The paper preset for as many steps as the time allows (about 60% of the share training, the rest scoring)."""
    from sentmim.apps.benchmark import run_benchmark
    from sentmim.apps.benchmark_settings import benchmark_settings

    seconds = deadline - time.monotonic()
    step_seconds = ctx.gru_step_seconds or 0.5
    max_steps = max(2, min(4 if ctx.tiny else 20_000, int(0.6 * seconds / step_seconds)))
    overrides = dict(dataset=ctx.data, objectives=["mim"], latent_sizes=[128], max_steps=max_steps,
                     eval_steps=max_steps, logging_steps=max(1, max_steps // 20), max_validation_sentences=500,
                     max_eval_sentences=500, cpu=ctx.force_cpu, disable_tqdm=True)
    if ctx.tiny:
        overrides.update(embedding_size=16, hidden_size=32, latent_sizes=[8], vocab_size=800, max_length=32,
                         max_validation_sentences=32, max_eval_sentences=8, iw_samples=4, eval_batch_size=32,
                         num_examples=1, interpolation_steps=2)
    with tempfile.TemporaryDirectory(prefix="sentmim-paper-") as folder:
        settings = benchmark_settings("paper", output_dir=str(Path(folder) / "bench"), **overrides)
        results = run_benchmark(settings, preset="paper", log=lambda _: None)
    model = results["models"][0]
    keep = ("iw_nll", "iw_ppl", "elbo_nll", "kl", "mi_whole_split", "active_units", "bleu4_corpus",
            "bleu1_sentence_mean")
    return {"max_steps": max_steps, "estimated_step_seconds": step_seconds, "wall_seconds": results["wall_seconds"],
            "train": model.get("train"), "metrics": {k: v for k, v in model["metrics"].items() if k in keep},
            "settings": {k: v for k, v in overrides.items() if k not in ("cpu", "disable_tqdm")}}


SECTIONS = {"precision": check_precision, "throughput": measure_throughput, "decode": measure_decode,
            "iw_nll": measure_iw_nll, "multi_gpu": run_multi_gpu, "paper": run_paper_preset}


# ---------------------------------------------------------------------------------------------------------------------
# The run


class Context:
    """What every section shares: device, data, sizes, and what earlier sections measured."""

    def __init__(self, args):
        self.device = torch.device("cpu" if args.cpu else "cuda")
        self.tiny, self.seed, self.data = args.cpu, args.seed, args.data
        self.training_precisions = args.training_precisions
        self.matmul_size = 256 if args.cpu else 8192
        self.max_steps = 3 if args.cpu else 200
        self.tokenizer, self.tokenized, self.data_info = throughput.load_data(args.data, 300 if args.cpu else None)
        self.rate_fp32 = matmul_rate(self.matmul_size, repeats=3, device=str(self.device))
        self.gru_step_seconds = None  # set by the throughput section (GRU, batch 20, float32)
        # Training asked to stay off a GPU that is there. Without one the default already runs on the CPU, and a
        # process keeps the accelerate settings it first trained with (a test process may have trained before).
        self.force_cpu = args.cpu and torch.cuda.is_available()


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def run(args, argv) -> dict:
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; pass --cpu for the CPU rehearsal with tiny models")
    torch.set_num_threads(1 if args.cpu else torch.get_num_threads())
    budget = Budget(args.time_budget)
    started = time.perf_counter()
    ctx = Context(args)
    results = {"command": " ".join([".venv/bin/python benchmarks/gpu_check.py", *map(shlex.quote, argv)]),
               "machine": machine_info(torch.get_num_threads()), "device": device_name(ctx.device),
               "data": ctx.data_info, "time_budget_s": args.time_budget, "sections": {}}
    for name in args.sections:
        deadline = budget.deadline(SHARES[name])
        section_start = time.perf_counter()
        print(f"-- {name} ({deadline - time.monotonic():.0f} s)", flush=True)
        try:
            result = SECTIONS[name](ctx, deadline)
            result.setdefault("status", "skipped" if "skipped" in result else "ok")
        except Exception as error:  # noqa: BLE001 - a first GPU run should still report every other section
            result = {"status": "error", "error": one_line(error), "traceback": traceback.format_exc(limit=-3)}
        result["seconds"] = time.perf_counter() - section_start
        results["sections"][name] = result
        if name == "throughput" and result["status"] == "ok":
            ctx.gru_step_seconds = gru_step_seconds(result)
    results["wall_seconds"] = time.perf_counter() - started
    return results


def gru_step_seconds(throughput_result: dict) -> float | None:
    for row in throughput_result["rows"]:
        if (row["architecture"], row["batch_size"], row["precision"]) == ("gru", 20, "fp32"):
            return 20 * 23 / row["tokens_per_s"]  # ~23 targets per PTB sentence
    return None


def device_name(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": "cpu"}
    properties = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": properties.name, "count": torch.cuda.device_count(),
            "memory_gib": properties.total_memory / 2**30, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


# ---------------------------------------------------------------------------------------------------------------------
# Report


def to_markdown(results: dict) -> str:
    machine, device, sections = results["machine"], results["device"], results["sections"]
    where = device.get("name", "CPU (rehearsal, tiny models)")
    lines = [
        "# GPU check", "",
        (f"Command: `{results['command']}` ({results['wall_seconds']:.0f} s of a {results['time_budget_s']:.0f} s "
        "budget)"), "",
        (f"Device: {where}; {json.dumps(device)}. Host: {machine['cpu_model']}, {machine['cores']} cores, torch "
        f"{machine['torch']}. Data: {results['data']['source']}."), "",
        "| section | status | seconds |", "|---|---|---:|",
        *[f"| {name} | {s['status']}{': ' + s['error'] if 'error' in s else ''}"
          f"{': ' + s['skipped'] if 'skipped' in s else ''} | {s['seconds']:.0f} |" for name, s in sections.items()],
        "",
    ]
    precision = sections.get("precision", {})
    if "one_batch" in precision:
        lines += ["## Precision: one batch, same weights and z", "",
                  "| model | precision | loss | relative difference | max log p(x|z) difference per token |",
                  "|---|---|---:|---:|---:|"]
        for row in precision["one_batch"]:
            if "error" in row:
                lines.append(f"| {row['architecture']} | {row['precision']} | {row['error']} | | |")
            else:
                lines.append(f"| {row['architecture']} | {row['precision']} | {row['loss']:.4f} | "
                             f"{row['loss_relative_difference']:.2e} | "
                             f"{row['max_log_likelihood_difference_per_token']:.2e} |")
        lines += ["", "Short training runs (GRU, sentmim.training):", "",
                  "| precision | steps | finite | max loss difference vs fp32 | seconds |", "|---|---:|---|---:|---:|"]
        for run in precision["training_runs"]:
            if "losses" not in run:
                lines.append(f"| {run['precision']} | {run.get('error') or run.get('skipped')} | | | |")
                continue
            difference = run.get("max_loss_relative_difference")
            lines.append(f"| {run['precision']} | {run['steps']} | {run['finite']} | "
                         f"{'' if difference is None else f'{difference:.2e}'} | {run['seconds']:.1f} |")
        lines.append("")
    if "rows" in sections.get("throughput", {}):
        section = sections["throughput"]
        lines += ["## Training throughput (forward, backward, clipping, fused Adam)", "",
                  "| model | batch | precision | tokens/s | useful GFLOP/s | matmul GFLOP/s | of matmul | steps |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['architecture']} | {r['batch_size']} | {r['precision']} | {r['tokens_per_s']:,.0f} | "
                  f"{r['useful_gflop_per_s']:,.1f} | {r['matmul_gflop_per_s']:,.0f} | {r['flop_fraction']:.0%} | "
                  f"{r['steps']} |" for r in section["rows"]]
        lines += ["", (f"Host syncs in one training step: {json.dumps(section['host_syncs_per_training_step'])}; "
                  f"TF32: {json.dumps(section['tf32'])}."), ""]
    if "rows" in sections.get("decode", {}):
        lines += ["## Greedy decoding (max length 30)", "",
                  "| model | sentences/s | prefix recomputation | speedup | same output |", "|---|---:|---:|---:|---|"]
        lines += [f"| {r['architecture']} | {r['fast_sentences_per_s']:,.0f} | {r['naive_sentences_per_s']:,.1f} | "
                  f"{r['speedup']:.1f}x | {r['identical_outputs']} |" for r in sections["decode"]["rows"]
                  if "skipped" not in r]
        lines.append("")
    if "rows" in sections.get("iw_nll", {}):
        lines += ["## IW-NLL, K = 500", "", "| model | sentences | sentences/s | useful GFLOP/s | of fp32 matmul |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['architecture']} | {r['sentences']} | {r['sentences_per_s']:.2f} | "
                  f"{r['useful_gflop_per_s']:,.1f} | {r['flop_fraction']:.0%} |" for r in sections["iw_nll"]["rows"]]
        lines.append("")
    if "runs" in sections.get("multi_gpu", {}):
        lines += ["## Several GPUs (accelerate, bf16, batch 20 per GPU)", "", "```",
                  json.dumps(sections["multi_gpu"]["runs"], indent=2), "```", ""]
    if "metrics" in sections.get("paper", {}):
        paper = sections["paper"]
        lines += [f"## Paper preset, {paper['max_steps']} steps", "", "```", json.dumps(paper["metrics"], indent=2),
                  "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = run(args, argv)
    write_results(args.output, results, to_markdown(results))
    return results


if __name__ == "__main__":
    main()
