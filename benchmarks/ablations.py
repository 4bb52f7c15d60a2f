"""Issue #17's changes to the training step, each switched off against the library on the same batches: paired steps
(library, ablation, ablation, library on one batch) and the median ratio of their times.

    .venv/bin/python benchmarks/ablations.py                          # GRU, PTB, batch 20 (24 batches), 128 (8)
    .venv/bin/python benchmarks/ablations.py --tiny --data builtin --output /tmp/ablations   # the test

On a shared machine the load moves within seconds; pairing the steps on one batch in the order ABBA and taking the
median over batches resolves changes of about 1% that a comparison of whole runs leaves in its noise. A ratio above 1
means the ablation is slower, i.e. the change helps.

- torch_gru: torch's GRU on [embedding, z] for both GRUs (what run_gru does on an accelerator, and what the library did
  on the CPU before the time loop was written out).
- z_every_step: z concatenated to the decoder's input at every step, through the same written-out loop.
- cross_entropy: F.cross_entropy on the output layer's logits instead of modeling.OutputLayerNLL.
- over_padding: the GRUs run over the padding (PADDED_RUN_MAX_PADDING = 1), on random batches (about half padding):
  the padding skip.
"""

import argparse
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput
from machine import machine_info, write_results

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def torch_gru(model):
    from sentmim import modeling

    default = modeling.run_gru
    modeling.run_gru = modeling.run_torch_gru
    try:
        yield
    finally:
        modeling.run_gru = default


@contextmanager
def z_every_step(model):
    from sentmim import modeling

    decoder = model.decoder

    def step(embeds, state, lengths=None):
        z = state["z"]
        inputs = torch.cat([embeds, z[:, None].expand(-1, embeds.size(1), -1)], dim=-1)
        outputs, hidden = modeling.run_gru(decoder.rnn, inputs, state["hidden"], lengths)
        return outputs, {"hidden": hidden, "z": z}

    decoder.step = step
    try:
        yield
    finally:
        del decoder.step


@contextmanager
def cross_entropy(model):
    from sentmim import modeling

    def plain(features, weight, bias, targets, with_gradient):
        return F.cross_entropy(F.linear(features, weight, bias), targets, reduction="none")

    default = modeling.OutputLayerNLL.apply
    modeling.OutputLayerNLL.apply = plain
    try:
        yield
    finally:
        modeling.OutputLayerNLL.apply = default


@contextmanager
def over_padding(model):
    from sentmim import modeling

    default = modeling.PADDED_RUN_MAX_PADDING
    modeling.PADDED_RUN_MAX_PADDING = 1.0
    try:
        yield
    finally:
        modeling.PADDED_RUN_MAX_PADDING = default


ABLATIONS = {"torch_gru": torch_gru, "z_every_step": z_every_step, "cross_entropy": cross_entropy,
             "over_padding": over_padding}
RANDOM_BATCHES = {"over_padding"}  # the padding skip only acts on batches with much padding


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ablations", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[20, 128])
    parser.add_argument("--batches", type=int, default=None, help="paired batches (default 24 at batch 20, else 8)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"),
                        help='folder with ptb.{train,valid,test}.txt, or "builtin"')
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "ablations"), help="folder for results")
    parser.add_argument("--tiny", action="store_true", help="tiny model and data (for the tests)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def timed_step(model, optimizer, batch) -> float:
    start = time.perf_counter()
    loss = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def paired_ratios(model, optimizer, batches, ablation) -> list[float]:
    """(ablation time / library time) per batch, each timed twice in the order library, ablation, ablation, library."""
    ratios = []
    for batch in batches:
        first = timed_step(model, optimizer, batch)
        with ablation(model):
            switched_off = timed_step(model, optimizer, batch) + timed_step(model, optimizer, batch)
        ratios.append(switched_off / (first + timed_step(model, optimizer, batch)))
    return ratios


def run(args, argv) -> dict:
    from sentmim.batching import make_dataloader
    from sentmim.options import TrainingOptions
    from sentmim.training import build_optimizer, fused_adam_supported

    torch.set_num_threads(args.threads)
    tokenizer, tokenized, data = throughput.load_data(args.data, 300 if args.tiny else None)
    model = throughput.make_model("gru", tokenizer, args.tiny).train()
    optimizer = build_optimizer(model, TrainingOptions("unused"), fused=fused_adam_supported(model.device))
    rows = []
    for batch_size in args.batch_sizes:
        count = args.batches or (24 if batch_size <= 32 else 8)
        for name in args.ablations:
            loader = iter(make_dataloader(tokenized["train"], batch_size, tokenizer.pad_token_id, shuffle=True,
                                          bucket=name not in RANDOM_BATCHES))
            batches = [next(loader) for _ in range(count + 1)]
            timed_step(model, optimizer, batches[0])  # warm-up
            ratios = paired_ratios(model, optimizer, batches[1:], ABLATIONS[name])
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            padding = sum(1 - float(b["attention_mask"][:, 1:].float().mean()) for b in batches) / len(batches)
            rows.append({"ablation": name, "batch_size": batch_size, "batches": count, "padding_fraction": padding,
                         "median_ratio": statistics.median(ratios), "quartiles": quartiles})
            print(f"{name}, batch {batch_size}: ablation / library {rows[-1]['median_ratio']:.3f} "
                  f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})", flush=True)
    command = " ".join([".venv/bin/python benchmarks/ablations.py", *map(shlex.quote, argv)])
    return {"command": command, "machine": machine_info(args.threads), "data": data, "rows": rows}


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Ablations of issue #17's changes: paired training steps on the same batches", "",
        f"Command: `{results['command']}`", "",
        (f"Machine: {machine['cpu_model']}, {machine['cores']} cores, torch {machine['torch']}, {machine['threads']} "
         f"thread(s); load average at start {', '.join(f'{x:.1f}' for x in machine['load_average_at_start'])}. "
         f"Data: {results['data']['source']}; the paper GRU (embedding 300, hidden 512, latent 128), fused Adam."), "",
        ("Ratio: step time with the change switched off / with the library as it is (median over batches, each batch "
        "stepped library, ablation, ablation, library). Above 1: the change makes the step faster."), "",
        "| ablation | batch | batches | padding | median ratio | quartiles |", "|---|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {r['ablation']} | {r['batch_size']} | {r['batches']} | {r['padding_fraction']:.1%} | "
              f"{r['median_ratio']:.3f} | {r['quartiles'][0]:.3f}-{r['quartiles'][2]:.3f} |" for r in results["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    results = run(args, argv)
    write_results(args.output, results, to_markdown(results))
    return results


if __name__ == "__main__":
    main()
