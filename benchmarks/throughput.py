"""Training, decoding and evaluation throughput of sentmim on this machine, against straightforward baselines.

    .venv/bin/python benchmarks/throughput.py                  # full run (~10 min, 1 thread): the committed results
    .venv/bin/python benchmarks/throughput.py --quick          # a few steps of everything (~1 min)
    .venv/bin/python benchmarks/throughput.py --sections compile --output benchmarks/throughput/compile

Models: the sentenceMIM paper configuration (GRU, embedding 300, hidden 512, latent 128, MIM objective) and a
Transformer of similar size (hidden 512, 8 heads, one encoder and one decoder block), with the word vocabulary of
PTB train (`--data`, default ../shared/data/ptb; "builtin" uses the package's own corpus). Sentences keep their
real lengths (at most 64 tokens, as in training). Sections, each measured within this one run:

- training: tokens/s of forward + backward + Adam step. "naive" (benchmarks/naive.py): random batches padded to
  their longest sentence, the output layer at every position, cross-entropy with ignore_index. "fast": the library
  (length-bucketed batches from `make_dataloader`, `model(..., return_logits=False)`, Adam as `sentmim.training`
  builds it: fused where torch has the kernel, CPU included); "fast_unfused_adam" is the same with the default Adam
  that "naive" uses too, to show the optimizer's share.
  For the GRU, "fast_packed" is the fast path with the GRUs skipping the padding of every batch (packed layout)
  instead of running length-bucketed batches as one padded run: the check of sentmim.modeling's
  PADDED_RUN_MAX_PADDING on bucketed batches.
  The variants take turns step by step, so a change of load on a shared machine hits them alike.
- decode: greedy sentences/s of `model.decode` (recurrent state / key-value cache, finished rows dropped) against
  re-running the model on the whole prefix at every step. The models are untrained; their EOS logit is pushed
  down so that every sentence runs to the max length (30), the same work for both.
- iw_nll: sentences/s of `metrics.importance_weighted_nll` with K = 100 and K = 500 on PTB validation sentences.
- Useful FLOPs (benchmarks/flops.py: real tokens only) per second, as a fraction of the float32 matmul rate of
  this machine under the same load (machine.MatmulReference: 2048 x 2048 products at the same thread count, timed
  before and after each section and in each round of its measurement, a tenth of the time), and of the fastest
  single product (a quiet moment).
- Peak resident memory (ru_maxrss) of each section.

Tokens are predicted targets: words + EOS, the count perplexity uses.
"""

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flops
import naive
import throughput_report
from machine import MatmulReference, machine_info, write_results

REPO = Path(__file__).resolve().parent.parent
MAX_LENGTH = 64  # tokens, BOS and EOS included (the training default); longer sentences are dropped
DECODE_LENGTH = 30


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps and sentences of every section (~1 min)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data (for the tests, seconds)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "throughput"), help="folder for results")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"),
                        help='folder with ptb.{train,valid,test}.txt, or "builtin"')
    parser.add_argument("--architectures", nargs="+", default=["gru", "transformer"], choices=["gru", "transformer"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[20, 128])
    parser.add_argument("--sections", nargs="+", default=["training", "decode", "iw_nll"],
                        choices=["training", "decode", "iw_nll", "compile"],
                        help="compile: eager vs torch.compile of the fast training step (minutes of compiling)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def plan(args) -> dict:
    """How much of each section to run."""
    if args.tiny:
        return dict(train_steps={20: 2, 128: 1}, warmup=1, decode_sentences=20, naive_decode_sentences=10,
                    decode_batch=10, iw={100: 2, 500: 1}, matmul_size=256, compile_steps=2, max_train_sentences=300)
    if args.quick:
        return dict(train_steps={20: 3, 128: 1}, warmup=1, decode_sentences=200, naive_decode_sentences=20,
                    decode_batch=100, iw={100: 4, 500: 2}, matmul_size=2048, compile_steps=3, max_train_sentences=None)
    return dict(train_steps={20: 20, 128: 4}, warmup=2, decode_sentences=1000, naive_decode_sentences=100,
                decode_batch=100, iw={100: 16, 500: 8}, matmul_size=2048, compile_steps=10, max_train_sentences=None)


# ---------------------------------------------------------------------------------------------------------------------
# Machine, data, models


def load_data(source: str, max_train_sentences: int | None, max_length: int = MAX_LENGTH):
    """(word tokenizer of the whole train vocabulary, tokenized splits without the sentences longer than
    max_length tokens, a description of the data)."""
    from sentmim.console import library_progress_bars
    from sentmim.data import load_text_dataset
    from sentmim.preprocessing import clean_dataset, tokenize_dataset
    from sentmim.tokenization import train_tokenizer

    if source != "builtin" and not Path(source).is_dir():
        raise SystemExit(f"--data {source}: no such folder (give the PTB folder or 'builtin')")
    with library_progress_bars(False):
        splits = clean_dataset(load_text_dataset(source))
        if max_train_sentences is not None:
            splits["train"] = splits["train"].select(range(min(max_train_sentences, len(splits["train"]))))
        tokenizer = train_tokenizer(splits["train"]["text"], kind="word", vocab_size=1_000_000)  # whole vocabulary
        tokenized, _ = tokenize_dataset(splits, tokenizer, max_length=max_length)
    lengths = tokenized["train"]["length"][:]
    info = {"source": source, "vocab_size": len(tokenizer), "train_sentences": len(lengths),
            "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths), "max_length": max_length}
    return tokenizer, tokenized, info


def make_model(architecture: str, tokenizer, tiny: bool):
    from sentmim import SentenceMIMConfig, SentenceMIMModel

    sizes = dict(embedding_size=16, hidden_size=32, latent_size=8) if tiny else \
        dict(embedding_size=300, hidden_size=512, latent_size=128)
    config = SentenceMIMConfig(
        vocab_size=len(tokenizer), architecture=architecture, objective="mim", num_layers=1,
        num_attention_heads=8 if not tiny else 2, max_position_embeddings=MAX_LENGTH, **sizes,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, unk_token_id=tokenizer.unk_token_id,
    )
    torch.manual_seed(0)
    return SentenceMIMModel(config)


def model_info(model) -> dict:
    keys = ("architecture", "embedding_size", "hidden_size", "latent_size", "num_layers", "vocab_size",
            "num_attention_heads", "intermediate_size", "dropout", "tie_word_embeddings")
    info = {key: getattr(model.config, key) for key in keys}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["train_flops_per_target_25"] = flops.training_flops(model.config, [25]) / 24  # a 23-word sentence
    return info


# ---------------------------------------------------------------------------------------------------------------------
# Sections


class Section:
    """A section of the run: its wall time, its peak resident memory, and the matmul rate of the machine while it
    ran (machine.MatmulReference: products timed before, after, and whenever the measurement calls `tick()`
    between its rounds, for a tenth of the time, so that the reference sees the same load as the measured work)."""

    def __init__(self, name: str, matmul_size: int, memory: dict, rates: list):
        self.name, self.matmul_size, self.memory, self.rates = name, matmul_size, memory, rates

    def tick(self) -> None:
        self.reference.sample()

    def __enter__(self):
        _reset_peak_memory()
        self.reference = MatmulReference(self.matmul_size)
        self.tick()
        self.start = time.perf_counter()
        print(f"-- {self.name}", flush=True)
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.tick()
        self.rate, self.best_rate = self.reference.rate, self.reference.best
        self.rates.append((self.rate, self.best_rate))
        self.memory[self.name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
        print(f"   {self.seconds:.1f} s, matmul {self.rate:.1f} GFLOP/s under the same load (best "
              f"{self.best_rate:.1f}), peak RSS {self.memory[self.name]:.0f} MiB")


def _reset_peak_memory() -> None:
    """Reset the peak RSS (Linux: writing 5 to clear_refs), so that each section reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def synchronize(device: torch.device) -> None:
    """Wait for the queued work of an accelerator, so that a timer read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _targets(batch) -> int:
    return int(batch["attention_mask"][:, 1:].sum())


def training_variants(model, tokenized_train, batch_size: int, seed: int, pad_token_id: int) -> dict:
    """name -> (batch iterator, loss function, optimizer)."""
    from sentmim import modeling
    from sentmim.batching import make_dataloader
    from sentmim.options import TrainingOptions
    from sentmim.training import build_optimizer, fused_adam_supported

    def loader(bucket: bool):
        return iter(make_dataloader(tokenized_train, batch_size, pad_token_id, shuffle=True, seed=seed, bucket=bucket))

    def fast_loss(ids, mask):
        return model(ids, attention_mask=mask, return_logits=False).loss

    def naive_loss(ids, mask):
        return naive.padded_loss(model, ids, mask)

    def fast_loss_packed(ids, mask):
        default = modeling.PADDED_RUN_MAX_PADDING
        modeling.PADDED_RUN_MAX_PADDING = -1.0  # no batch qualifies for the padded run: always packed
        try:
            return fast_loss(ids, mask)
        finally:
            modeling.PADDED_RUN_MAX_PADDING = default

    arguments = TrainingOptions(output_dir="unused")
    plain_adam = build_optimizer(model, arguments, fused=False)  # what straightforward code gets from torch.optim
    library_adam = build_optimizer(model, arguments, fused=fused_adam_supported(model.device))
    variants = {
        "naive": (loader(bucket=False), naive_loss, plain_adam),
        "fast": (loader(bucket=True), fast_loss, library_adam),
        "fast_unfused_adam": (loader(bucket=True), fast_loss, plain_adam),
    }
    if model.config.architecture == "gru" and model.config.num_layers == 1:
        variants["fast_packed"] = (loader(bucket=True), fast_loss_packed, library_adam)
    return variants


def train_step(loss_fn, optimizer, batch) -> float:
    start = time.perf_counter()
    loss = loss_fn(batch["input_ids"], batch["attention_mask"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure_training(model, tokenized_train, batch_size, steps, warmup, seed, pad_token_id, tick) -> list[dict]:
    model.train()
    variants = training_variants(model, tokenized_train, batch_size, seed, pad_token_id)
    totals = {name: {"seconds": 0.0, "targets": 0, "positions": 0, "flops": 0, "steps": 0} for name in variants}
    for step in range(warmup + steps):
        for name, (batches, loss_fn, optimizer) in variants.items():  # take turns: equal exposure to load changes
            batch = next(batches)
            seconds = train_step(loss_fn, optimizer, batch)
            if step < warmup:
                continue
            total = totals[name]
            total["seconds"] += seconds
            total["steps"] += 1
            total["targets"] += _targets(batch)
            total["positions"] += batch["input_ids"][:, 1:].numel()
            total["flops"] += flops.training_flops(model.config, batch["attention_mask"].sum(1).tolist())
        tick()
    rows = []
    for name, total in totals.items():
        rows.append({
            "architecture": model.config.architecture, "batch_size": batch_size, "variant": name,
            "steps": total["steps"], "seconds": total["seconds"], "targets": total["targets"],
            "tokens_per_s": total["targets"] / total["seconds"],
            "padding_fraction": 1 - total["targets"] / total["positions"],
            "useful_gflop_per_s": total["flops"] / total["seconds"] / 1e9,
        })
    return rows


def measure_compile(model, tokenized_train, batch_size, steps, seed, pad_token_id, tick) -> dict:
    """Eager vs torch.compile(dynamic=True) of the fast training loss, taking turns on the same batches."""
    model.train()
    variants = training_variants(model, tokenized_train, batch_size, seed, pad_token_id)
    batches, eager_loss, optimizer = variants["fast"]
    compiled_loss = torch.compile(eager_loss, dynamic=True)
    start = time.perf_counter()
    for _ in range(2):  # compiles (and may recompile once for the second shape)
        train_step(compiled_loss, optimizer, next(batches))
    compile_seconds = time.perf_counter() - start
    seconds = {"eager": 0.0, "compiled": 0.0}
    targets = 0
    for _ in range(steps):
        batch = next(batches)
        targets += _targets(batch)
        seconds["eager"] += train_step(eager_loss, optimizer, batch)
        seconds["compiled"] += train_step(compiled_loss, optimizer, batch)
        tick()
    return {"architecture": model.config.architecture, "batch_size": batch_size, "steps": steps,
            "compile_seconds": compile_seconds, "eager_tokens_per_s": targets / seconds["eager"],
            "compiled_tokens_per_s": targets / seconds["compiled"],
            "speedup": seconds["eager"] / seconds["compiled"]}


@torch.no_grad()
def measure_decode(model, num_sentences, num_naive, batch_size, seed, tick) -> dict:
    """Both decoders on the same latents. The untrained model's EOS logit is pushed down so that every sentence
    runs to DECODE_LENGTH tokens: the same, known amount of work for both (restored afterwards)."""
    model.eval()
    eos_bias = model.lm_head.bias[model.config.eos_token_id].item()
    model.lm_head.bias[model.config.eos_token_id] = -1e4
    try:
        return _measure_decode(model, num_sentences, num_naive, batch_size, seed, tick)
    finally:
        model.lm_head.bias[model.config.eos_token_id] = eos_bias


def _measure_decode(model, num_sentences, num_naive, batch_size, seed, tick) -> dict:
    z = torch.randn(num_sentences, model.config.latent_size, generator=torch.Generator().manual_seed(seed))
    z = z.to(model.device)

    def timed(decode, latents):
        synchronize(model.device)
        start = time.perf_counter()
        outputs = [decode(chunk) for chunk in latents.split(batch_size)]
        synchronize(model.device)
        return time.perf_counter() - start, outputs

    def fast(chunk):
        return model.decode(chunk, max_length=DECODE_LENGTH)

    def slow(chunk):
        return naive.greedy_by_recomputing_prefix(model, chunk, DECODE_LENGTH)

    pad = model.config.pad_token_id

    def sentences(outputs) -> list[list[int]]:
        return [[token for token in row if token != pad] for out in outputs for row in out.tolist()]

    # The fast path runs before and after the slow one: a change of load in between hits both alike.
    first_seconds, fast_outputs = timed(fast, z)
    tick()
    naive_seconds, naive_outputs = timed(slow, z[:num_naive])
    tick()
    fast_seconds = (first_seconds + timed(fast, z)[0]) / 2
    decoded = sentences(fast_outputs)
    lengths = [len(sentence) for sentence in decoded]
    identical = decoded[:num_naive] == sentences(naive_outputs)
    fast_rate, naive_rate = num_sentences / fast_seconds, num_naive / naive_seconds
    return {
        "architecture": model.config.architecture, "max_length": DECODE_LENGTH, "batch_size": batch_size,
        "sentences": num_sentences, "naive_sentences": num_naive, "mean_generated_tokens": sum(lengths) / len(lengths),
        "fast_sentences_per_s": fast_rate, "naive_sentences_per_s": naive_rate, "speedup": fast_rate / naive_rate,
        "identical_outputs": identical,
        "fast_useful_gflop_per_s": flops.decode_flops(model.config, lengths) / fast_seconds / 1e9,
    }


@torch.no_grad()
def measure_iw_nll(model, tokenized_valid, num_sentences, num_samples, seed, pad_token_id, tick,
                   deadline: float | None = None) -> dict:
    """IW-NLL of num_sentences validation sentences in batches of 64 (fewer when time.monotonic() passes deadline
    after a batch)."""
    from sentmim import metrics
    from sentmim.batching import make_dataloader

    model.eval()
    chosen = torch.randperm(len(tokenized_valid), generator=torch.Generator().manual_seed(seed))[:num_sentences]
    subset = tokenized_valid.select(sorted(chosen.tolist()))
    loader = make_dataloader(subset, 64, pad_token_id, shuffle=False)  # as evaluation batches them
    generator = torch.Generator(model.device).manual_seed(seed)
    seconds, lengths = 0.0, []
    for batch in loader:
        batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
        start = time.perf_counter()
        metrics.importance_weighted_nll(model, batch["input_ids"], batch["attention_mask"], num_samples=num_samples,
                                        generator=generator)
        synchronize(model.device)
        seconds += time.perf_counter() - start
        lengths += batch["attention_mask"].sum(1).tolist()
        tick()
        if deadline is not None and time.monotonic() > deadline:
            break
    return {
        "architecture": model.config.architecture, "num_samples": num_samples, "sentences": len(lengths),
        "sentences_per_s": len(lengths) / seconds, "seconds": seconds,
        "useful_gflop_per_s": flops.iw_nll_flops(model.config, lengths, num_samples) / seconds / 1e9,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Main


def run(args, argv: list[str]) -> dict:
    from sentmim import modeling

    torch.set_num_threads(args.threads)
    settings = plan(args)
    command = " ".join([".venv/bin/python benchmarks/throughput.py", *map(shlex.quote, argv)])
    results = {"command": command, "machine": machine_info(args.threads), "settings": settings, "memory_mib": {},
               "padded_run_max_padding": modeling.PADDED_RUN_MAX_PADDING,
               "training": [], "compile": [], "decode": [], "iw_nll": []}
    rates = []
    with Section("data", settings["matmul_size"], results["memory_mib"], rates):
        tokenizer, tokenized, results["data"] = load_data(args.data, settings["max_train_sentences"])
    pad = tokenizer.pad_token_id
    results["models"] = {}
    for architecture in args.architectures:
        model = make_model(architecture, tokenizer, args.tiny)
        results["models"][architecture] = model_info(model)
        if "training" in args.sections:
            for batch_size in args.batch_sizes:
                steps = settings["train_steps"].get(batch_size, settings["train_steps"][20])
                with Section(f"training {architecture} batch {batch_size}", settings["matmul_size"],
                             results["memory_mib"], rates) as section:
                    rows = measure_training(model, tokenized["train"], batch_size, steps, settings["warmup"],
                                            args.seed, pad, section.tick)
                for row in rows:
                    row["flop_fraction"] = row["useful_gflop_per_s"] / section.rate
                    row["flop_fraction_of_best"] = row["useful_gflop_per_s"] / section.best_rate
                    row["matmul_gflop_per_s"] = section.rate
                results["training"] += rows
        if "compile" in args.sections:
            with Section(f"compile {architecture}", settings["matmul_size"], results["memory_mib"], rates) as section:
                results["compile"].append(measure_compile(model, tokenized["train"], min(args.batch_sizes),
                                                          settings["compile_steps"], args.seed, pad, section.tick))
        if "decode" in args.sections:
            with Section(f"decode {architecture}", settings["matmul_size"], results["memory_mib"], rates) as section:
                row = measure_decode(model, settings["decode_sentences"], settings["naive_decode_sentences"],
                                     settings["decode_batch"], args.seed, section.tick)
            row["fast_flop_fraction"] = row["fast_useful_gflop_per_s"] / section.rate
            results["decode"].append(row)
        if "iw_nll" in args.sections:
            for num_samples, num_sentences in settings["iw"].items():
                with Section(f"iw_nll {architecture} K={num_samples}", settings["matmul_size"],
                             results["memory_mib"], rates) as section:
                    row = measure_iw_nll(model, tokenized["validation"], num_sentences, num_samples, args.seed, pad,
                                         section.tick)
                row["flop_fraction"] = row["useful_gflop_per_s"] / section.rate
                results["iw_nll"].append(row)
        del model
    same_load, best = [rate for rate, _ in rates], max(best for _, best in rates)
    results["machine"]["matmul_gflop_per_s"] = {"min": min(same_load), "max": max(same_load), "best": best,
                                                "size": settings["matmul_size"]}
    results["peak_memory_mib"] = max(results["memory_mib"].values())
    results["targets"] = throughput_report.check_targets(results)
    return results


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args, argv)
    results["wall_seconds"] = time.perf_counter() - start
    write_results(args.output, results, throughput_report.to_markdown(results))
    return results


if __name__ == "__main__":
    main()
