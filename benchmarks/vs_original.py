"""Training throughput of sentmim side by side with the original sentenceMIM code, in one run on PTB.

    .venv/bin/python benchmarks/vs_original.py                  # the committed results (benchmarks/vs_original/)
    .venv/bin/python benchmarks/vs_original.py --quick          # a few steps of each variant (~1 min)
    .venv/bin/python benchmarks/vs_original.py --tiny --data builtin --output /tmp/vs   # tiny models (the test)

The original code is the sentenceMIM paper's demo (SentenceMIM-demo, Livne et al. 2020, MIT licence): its model.py
(with auxiliary.py and utils.py) is imported at run time from `--reference` (default
../shared/reference/sentencemim-demo) and nothing of it is copied here. Without it the script says so and stops.

Configuration: the demo's published PTB command (GRU, embedding 300, hidden 512, latent 128, the middle of its
16 / 128 / 512; batch 20; Adam, learning rate 1e-3; dropout 0.5 on the decoder's input embeddings; max sequence
length 100) with what its train.py adds: the encoder reads each sentence backwards, gradients clipped at norm 0.25.
sentmim gets the same (embedding_dropout=0.5, reverse_input=True, clipping at 0.25, Adam 1e-3). Both use the word
vocabulary of PTB train from sentmim's tokenizer (10,002 ids with the specials), so both see the same token ids.

Variants, each with its own model and optimizer, all starting from one seed, taking one training step in turn (a
change of load on a shared machine hits them alike). Only the step is timed (forward, loss, backward, clipping,
optimizer step), never the loading of batches:

- original: the demo's forward; its train.py's loss (NLL summed over target[:, :longest], plus log B, and the
  A-MIM terms -1/2 [log q(z|x) + log N(z)], all divided by B); torch.optim.Adam as it builds it (torch's default
  implementation). Its own batching: its PTB dataset pads every sentence to max_sequence_length (100) and a
  DataLoader draws shuffled batches (drop_last); its forward packs the GRUs' inputs and its output layer runs on
  every position up to the batch's longest sentence.
- sentmim: the library as sentmim.training drives it (model(..., return_logits=False), Adam built by
  sentmim.training, i.e. fused where torch has the kernel). Its own batching: length-bucketed make_dataloader.
- sentmim_same_batches: the library on the original's batch of the same step (identical shuffled batches).
- sentmim_before, sentmim_before_same_batches: the same with sentmim/modeling.py as it was before issue #17 (commit
  BEFORE_REVISION, read from git at run time; left out with a note when git or the commit is missing).
- ablations of issue #17's changes, on this run's batches: sentmim_same_batches_over_padding (the GRUs run over
  the padding: PADDED_RUN_MAX_PADDING = 1) and sentmim_z_every_step (z concatenated to the decoder's input at every
  step, as before, through the same written-out recurrence).

Tokens are predicted targets (words + EOS, the count perplexity uses; the original predicts the same ones). Useful
FLOPs (benchmarks/flops.py, real tokens only) are the same for every variant; the fraction is of the float32 matmul
rate under the same load (machine.MatmulReference: products timed in each round of steps, a tenth of the time) and of
the fastest single product (a quiet moment).
"""

import argparse
import importlib.util
import math
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablations
import flops
import throughput
from machine import MatmulReference, machine_info, write_results

REPO = Path(__file__).resolve().parent.parent
BEFORE_REVISION = "2c08f43065aac3593c5da7851b544e14c3c177a0"  # main before issue #17
MAX_SEQUENCE_LENGTH = 100  # the demo's published --max_sequence_length
CLIP_NORM = 0.25  # the demo's train.py
LEARNING_RATE = 1e-3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=str(REPO.parent / "shared" / "reference" / "sentencemim-demo"),
                        help="folder of the original code (model.py, auxiliary.py, utils.py)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"),
                        help='folder with ptb.{train,valid,test}.txt, or "builtin"')
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "vs_original"), help="folder for results")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 60; --quick 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--quick", action="store_true", help="a few steps (~1 min)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data (for the tests, seconds)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--latent-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# The original code and its batching


def load_original(folder: Path):
    """The demo's model module, or None when its files are missing."""
    if not all((folder / name).is_file() for name in ("model.py", "auxiliary.py", "utils.py")):
        return None
    import datasets  # noqa: F401  (auxiliary.py imports `datasets`, meaning its own; Hugging Face's must come first)

    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("sentencemim_demo_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        for name in ("auxiliary", "utils"):  # its helper modules stay bound in it, not under these common names
            sys.modules.pop(name, None)
    # Its forward calls torch.set_default_tensor_type (deprecated since torch 2.1) at every step.
    warnings.filterwarnings("ignore", message=r"torch\.set_default_tensor_type\(\) is deprecated")
    return module


class DemoStyleSentences(torch.utils.data.Dataset):
    """Sentences laid out as the demo's PTB dataset serves them: input = <sos> words, target = words <eos>, both
    padded to max_sequence_length, and the length of input (made here from sentmim's token ids)."""

    def __init__(self, token_ids: list[list[int]], max_sequence_length: int, pad_token_id: int):
        self.token_ids, self.width, self.pad = token_ids, max_sequence_length, pad_token_id

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, index: int) -> dict:
        ids = self.token_ids[index]  # BOS words EOS
        length = len(ids) - 1
        padding = [self.pad] * (self.width - length)
        return {"input": np.asarray(ids[:-1] + padding), "target": np.asarray(ids[1:] + padding), "length": length}


def demo_loader(token_ids, batch_size: int, pad_token_id: int, seed: int, max_sequence_length: int):
    """The demo's training batches: a DataLoader over its dataset, shuffled, drop_last, default collation."""
    dataset = DemoStyleSentences(token_ids, max_sequence_length, pad_token_id)
    generator = torch.Generator().manual_seed(seed)
    while True:  # epochs, each shuffled anew
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                               generator=generator)


def as_sentmim_batch(demo_batch: dict) -> dict:
    """The same sentences as sentmim batches them: BOS words EOS, right-padded to the longest, with a mask."""
    length = demo_batch["length"]
    width = int(length.max()) + 1
    input_ids = torch.cat([demo_batch["input"][:, :1], demo_batch["target"]], dim=1)[:, :width]
    attention_mask = (torch.arange(width)[None] < (length[:, None] + 1)).long()
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------------------------------------------------
# Models and training steps


def make_models(args, original_module, tokenizer, before_module):
    """name -> (model, optimizer, step function) for every variant."""
    from sentmim import SentenceMIMConfig, SentenceMIMModel
    from sentmim.options import TrainingOptions
    from sentmim.training import build_optimizer, fused_adam_supported

    sizes = dict(embedding_size=16, hidden_size=32, latent_size=8) if args.tiny else \
        dict(embedding_size=300, hidden_size=512, latent_size=args.latent_size)
    config = SentenceMIMConfig(
        vocab_size=len(tokenizer), architecture="gru", objective="mim", num_layers=1, embedding_dropout=0.5,
        reverse_input=True, max_position_embeddings=MAX_SEQUENCE_LENGTH + 1, **sizes,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, unk_token_id=tokenizer.unk_token_id,
    )
    arguments = TrainingOptions(output_dir="unused", learning_rate=LEARNING_RATE)
    variants = {}

    def sentmim_variant(model_class, step=None):
        torch.manual_seed(args.seed)
        model = model_class(config).train()
        optimizer = build_optimizer(model, arguments, fused=fused_adam_supported(model.device))
        return model, optimizer, step or sentmim_step

    torch.manual_seed(args.seed)
    original = original_module.SentenceMIM(
        vocab_size=len(tokenizer), embedding_size=config.embedding_size, rnn_type="gru",
        hidden_size=config.hidden_size, word_dropout=0.0, embedding_dropout=0.5, latent_size=config.latent_size,
        sos_idx=tokenizer.bos_token_id, eos_idx=tokenizer.eos_token_id, pad_idx=tokenizer.pad_token_id,
        unk_idx=tokenizer.unk_token_id, max_sequence_length=MAX_SEQUENCE_LENGTH,
    ).train()
    variants["original"] = (original, torch.optim.Adam(original.parameters(), lr=LEARNING_RATE), original_step)
    variants["sentmim"] = sentmim_variant(SentenceMIMModel)
    variants["sentmim_same_batches"] = sentmim_variant(SentenceMIMModel)
    if before_module is not None:
        variants["sentmim_before"] = sentmim_variant(before_module.SentenceMIMModel)
        variants["sentmim_before_same_batches"] = sentmim_variant(before_module.SentenceMIMModel)
    variants["sentmim_same_batches_over_padding"] = sentmim_variant(SentenceMIMModel, step=step_over_padding)
    variants["sentmim_z_every_step"] = sentmim_variant(SentenceMIMModel, step=step_z_every_step)
    return config, variants


def original_step(model, optimizer, batch) -> None:
    """One step of the demo's train.py: its loss for --mim, backward, clipping at 0.25, Adam."""
    logp, mean, logv, z = model(batch["input"], batch["length"])
    batch_size = logv.size(0)
    target = batch["target"][:, : int(batch["length"].max())].reshape(-1)
    nll = F.nll_loss(logp.view(-1, logp.size(2)), target, ignore_index=model.pad_idx, reduction="sum")
    nll = nll + math.log(batch_size)
    posterior = torch.distributions.Normal(loc=mean, scale=torch.exp(0.5 * logv))
    mim_terms = -0.5 * torch.sum(posterior.log_prob(z).sum(-1) + model.get_prior().log_prob(z).sum(-1))
    loss = (nll + mim_terms) / batch_size
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    optimizer.step()


def sentmim_step(model, optimizer, batch) -> None:
    """One step as sentmim.training takes it."""
    loss = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    optimizer.step()


def step_over_padding(model, optimizer, batch) -> None:
    """sentmim_step with the GRUs running over the padding of every batch (no padding skipped)."""
    with ablations.over_padding(model):
        sentmim_step(model, optimizer, batch)


def step_z_every_step(model, optimizer, batch) -> None:
    """sentmim_step with z concatenated to the decoder's input at every step, as before issue #17."""
    with ablations.z_every_step(model):
        sentmim_step(model, optimizer, batch)


# ---------------------------------------------------------------------------------------------------------------------
# The library before issue #17


def load_modeling_at(revision: str):
    """sentmim/modeling.py as it was at `revision` (from git), imported beside the current one; None without git."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:sentmim/modeling.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="sentmim-before-")) / "modeling_before.py"
    path.write_text(source)
    name = "sentmim._modeling_before"  # inside the package, so its relative imports find today's other modules
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# The run


def plan(args) -> dict:
    if args.tiny:
        return dict(steps=args.steps or 2, matmul_size=256, max_train_sentences=300)
    return dict(steps=args.steps or (4 if args.quick else 60), matmul_size=2048, max_train_sentences=None)


def run(args, argv) -> dict | None:
    torch.set_num_threads(args.threads)
    original_module = load_original(Path(args.reference))
    if original_module is None:
        print(f"skipped: the original sentenceMIM code is not in {args.reference} (model.py, auxiliary.py, "
              "utils.py); pass --reference FOLDER")
        return None
    settings = plan(args)
    before_module = load_modeling_at(BEFORE_REVISION)
    # Sentences whose demo input (BOS and the words) fits its max_sequence_length: BOS, words and EOS.
    tokenizer, tokenized, data = throughput.load_data(args.data, settings["max_train_sentences"],
                                                      max_length=MAX_SEQUENCE_LENGTH + 1)
    token_ids = tokenized["train"]["input_ids"][:]
    config, variants = make_models(args, original_module, tokenizer, before_module)
    pad = tokenizer.pad_token_id

    from sentmim.batching import make_dataloader

    def bucketed():
        while True:
            yield from make_dataloader(tokenized["train"], args.batch_size, pad, shuffle=True, seed=args.seed)

    demo_batches = demo_loader(token_ids, args.batch_size, pad, args.seed, MAX_SEQUENCE_LENGTH)
    own_batches = {name: bucketed() for name in variants if name in ("sentmim", "sentmim_before",
                                                                      "sentmim_z_every_step")}
    totals = {name: {"seconds": 0.0, "targets": 0, "positions": 0, "flops": 0, "steps": 0} for name in variants}
    reference = MatmulReference(settings["matmul_size"])  # sampled in each round, taking its turn
    start = time.perf_counter()
    for step in range(args.warmup + settings["steps"]):
        demo_batch = next(demo_batches)
        same_batch = as_sentmim_batch(demo_batch)
        for name, (model, optimizer, step_function) in variants.items():
            if name == "original":
                batch = demo_batch
            else:
                batch = next(own_batches[name]) if name in own_batches else same_batch
            started = time.perf_counter()
            step_function(model, optimizer, batch)
            seconds = time.perf_counter() - started
            if step < args.warmup:
                continue
            sentmim_batch = same_batch if name == "original" else batch
            lengths = sentmim_batch["attention_mask"].sum(1)
            total = totals[name]
            total["seconds"] += seconds
            total["steps"] += 1
            total["targets"] += int((lengths - 1).sum())
            total["positions"] += (lengths.numel() * int(lengths.max() - 1))
            total["flops"] += flops.training_flops(config, lengths.tolist())
        reference.sample()
    rate = reference.rate
    rows = {}
    for name, total in totals.items():
        rows[name] = {
            "steps": total["steps"], "seconds": total["seconds"], "targets": total["targets"],
            "tokens_per_s": total["targets"] / total["seconds"],
            "padding_fraction": 1 - total["targets"] / total["positions"],
            "useful_gflop_per_s": total["flops"] / total["seconds"] / 1e9,
            "flop_fraction": total["flops"] / total["seconds"] / 1e9 / rate,
            "flop_fraction_of_best": total["flops"] / total["seconds"] / 1e9 / reference.best,
        }
    command = " ".join([".venv/bin/python benchmarks/vs_original.py", *map(shlex.quote, argv)])
    results = {
        "command": command, "machine": machine_info(args.threads), "data": data, "settings": settings,
        "batch_size": args.batch_size, "max_sequence_length": MAX_SEQUENCE_LENGTH, "clip_norm": CLIP_NORM,
        "learning_rate": LEARNING_RATE, "model": throughput.model_info(variants["sentmim"][0]),
        "before_revision": BEFORE_REVISION if before_module is not None else None,
        "matmul_gflop_per_s": {"same_load": rate, "best": reference.best, "size": settings["matmul_size"]},
        "run_seconds": time.perf_counter() - start, "variants": rows, "ratios": ratios(rows),
    }
    results["targets"] = check_targets(results["ratios"])
    return results


def ratios(rows: dict) -> dict:
    """Tokens/s ratios, each between two variants of this run."""
    pairs = {
        "own_batching_vs_original": ("sentmim", "original"),
        "same_batches_vs_original": ("sentmim_same_batches", "original"),
        "before_own_batching_vs_original": ("sentmim_before", "original"),
        "before_same_batches_vs_original": ("sentmim_before_same_batches", "original"),
        "issue17_own_batching": ("sentmim", "sentmim_before"),
        "issue17_same_batches": ("sentmim_same_batches", "sentmim_before_same_batches"),
        "padding_skip_same_batches": ("sentmim_same_batches", "sentmim_same_batches_over_padding"),
        "z_once_per_sentence": ("sentmim", "sentmim_z_every_step"),
    }
    return {name: rows[a]["tokens_per_s"] / rows[b]["tokens_per_s"]
            for name, (a, b) in pairs.items() if a in rows and b in rows}


TARGETS = {"own_batching_vs_original": 2.5, "same_batches_vs_original": 1.2}


def check_targets(ratio: dict) -> dict:
    return {name: {"value": ratio[name], "target": goal, "met": ratio[name] >= goal} for name, goal in TARGETS.items()}


def to_markdown(results: dict) -> str:
    machine, rate, data = results["machine"], results["matmul_gflop_per_s"], results["data"]
    model = results["model"]
    lines = [
        "# Training throughput: sentmim vs the original sentenceMIM code (one run)", "",
        f"Command: `{results['command']}` ({results['run_seconds']:.0f} s of stepping)", "",
        (f"Machine: {machine['cpu_model']}, {machine['cores']} cores, torch {machine['torch']}, "
         f"{machine['threads']} thread(s); float32 matmul {rate['same_load']:.0f} GFLOP/s under the same load "
         f"({rate['size']}^2 products timed in each round for a tenth of its time, taking their turn with the "
         f"variants; the fastest single product {rate['best']:.0f}); load average at start "
         f"{', '.join(f'{x:.1f}' for x in machine['load_average_at_start'])} (the machine is shared)."), "",
        (f"Data: {data['source']}, {data['train_sentences']:,} train sentences (mean {data['mean_tokens']:.1f} tokens "
         f"with BOS and EOS), vocabulary {data['vocab_size']:,}. Model: GRU, embedding {model['embedding_size']}, "
         f"hidden {model['hidden_size']}, latent {model['latent_size']}, {model['parameters'] / 1e6:.1f}M "
         f"parameters (sentmim); batch {results['batch_size']}, Adam {results['learning_rate']:g}, clipping at "
         f"{results['clip_norm']}, decoder input dropout 0.5, reversed encoder input."), "",
        ("| variant | batches | tokens/s | vs original | padding | useful GFLOP/s | of matmul | of fastest matmul | "
        "steps |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    original = results["variants"]["original"]["tokens_per_s"]
    batches = {"original": "its own (shuffled, padded)", "sentmim": "its own (length-bucketed)",
               "sentmim_before": "its own (length-bucketed)", "sentmim_z_every_step": "its own (length-bucketed)"}
    for name, row in results["variants"].items():
        lines.append(
            f"| {name} | {batches.get(name, 'the original' + chr(39) + 's')} | {row['tokens_per_s']:,.0f} | "
            f"{row['tokens_per_s'] / original:.2f}x | {row['padding_fraction']:.1%} | "
            f"{row['useful_gflop_per_s']:.1f} | {row['flop_fraction']:.0%} | {row['flop_fraction_of_best']:.0%} | "
            f"{row['steps']} |"
        )
    lines += ["", "## Ratios (tokens/s, measured in this run)", "", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in results["ratios"].items()]
    lines += ["", "## Targets (issue #17)", "", "| target | value | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {t['value']:.2f}x | {t['target']}x | {'yes' if t['met'] else 'no'} |"
              for name, t in results["targets"].items()]
    if results["before_revision"]:
        lines += ["", f"sentmim_before: sentmim/modeling.py at {results['before_revision'][:10]} (before issue #17)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    results = run(args, argv)
    if results is None:
        return None
    write_results(args.output, results, to_markdown(results))
    return results


if __name__ == "__main__":
    main()
