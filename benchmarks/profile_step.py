"""Where the time of a training step goes: torch.profiler over a few steps of the library's training step, the share
of the matrix products and the operators that take the rest.

    .venv/bin/python benchmarks/profile_step.py                          # GRU, batch 20 and 128, PTB, 1 thread
    .venv/bin/python benchmarks/profile_step.py --architecture transformer --batch-sizes 20
    .venv/bin/python benchmarks/profile_step.py --tiny --data builtin    # tiny model (the test)

The step is the one sentmim.training takes (model(..., return_logits=False), backward, clipping, Adam as
sentmim.training builds it) on length-bucketed batches of the models in benchmarks/throughput.py. Self CPU time per
operator, averaged over the profiled steps; "matrix products" are aten::mm and aten::addmm (and addmv).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput

REPO = Path(__file__).resolve().parent.parent
MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::addmv_", "aten::mv")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--architecture", default="gru", choices=["gru", "transformer"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[20, 128])
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default 8 at batch <= 32, else 3)")
    parser.add_argument("--top", type=int, default=12, help="operators listed besides the matrix products")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"),
                        help='folder with ptb.{train,valid,test}.txt, or "builtin"')
    parser.add_argument("--tiny", action="store_true", help="tiny model and data (for the tests)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def profile_steps(model, batches, optimizer) -> tuple[float, dict]:
    """(wall seconds per step, operator -> self CPU seconds per step) over the given batches."""
    def step(batch):
        loss = model(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step(batches[0])  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[1:]:
            step(batch)
    steps = len(batches) - 1
    wall = (time.perf_counter() - start) / steps
    return wall, {event.key: event.self_cpu_time_total / 1e6 / steps for event in profiler.key_averages()}


def main(argv: list[str] | None = None) -> dict:
    from sentmim.batching import make_dataloader
    from sentmim.options import TrainingOptions
    from sentmim.training import build_optimizer, fused_adam_supported

    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    tokenizer, tokenized, _ = throughput.load_data(args.data, 300 if args.tiny else None)
    model = throughput.make_model(args.architecture, tokenizer, args.tiny).train()
    optimizer = build_optimizer(model, TrainingOptions("unused"), fused=fused_adam_supported(model.device))
    report = {}
    for batch_size in args.batch_sizes:
        steps = args.steps or (8 if batch_size <= 32 else 3)
        loader = iter(make_dataloader(tokenized["train"], batch_size, tokenizer.pad_token_id, shuffle=True))
        wall, operators = profile_steps(model, [next(loader) for _ in range(steps + 1)], optimizer)
        total = sum(operators.values())
        products = sum(operators.get(name, 0.0) for name in MATRIX_PRODUCTS)
        print(f"{args.architecture}, batch {batch_size}: {wall * 1e3:.0f} ms per step, {total * 1e3:.0f} ms "
              f"profiled, matrix products {products / total:.0%}")
        rest = sorted((item for item in operators.items() if item[0] not in MATRIX_PRODUCTS), key=lambda kv: -kv[1])
        for name, seconds in rest[: args.top]:
            print(f"  {name[:60]:60s} {seconds * 1e3:8.2f} ms  {seconds / total:5.1%}")
        report[batch_size] = {"wall_seconds": wall, "matrix_product_share": products / total, "operators": operators}
    return report


if __name__ == "__main__":
    main()
