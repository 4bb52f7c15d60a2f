"""IW-NLL with K=500 importance samples on 1,000 PTB test sentences: how long it takes and how close to the machine.

    python benchmarks/iw_nll_ptb.py --model-dir runs/ptb-mim                      # a model trained on PTB
    python benchmarks/iw_nll_ptb.py --model-dir runs/ptb-mim --threads 2 --max-rows 1024
    python benchmarks/iw_nll_ptb.py --model-dir runs/ptb-mim --device cuda       # when a GPU is there

Prints and writes benchmarks/iw_nll/results.json: wall time, sentences/s, importance samples/s (sentence x sample
pairs), decoder target tokens/s, the useful FLOPs (benchmarks/flops.py: real tokens only) and their
fraction of the float32 matrix-multiply rate measured in the same run, plus the IW-NLL and IW-PPL it computed.
"""

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sentmim import SentenceMIMPipeline, metrics
from sentmim.evaluate_folder import load_eval_batches, load_split_texts

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flops  # benchmarks/flops.py: useful FLOPs from real lengths, shared with throughput.py
from machine import machine_info, matmul_rate


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="runs/ptb-mim", help="a model trained on PTB (sentmim train)")
    parser.add_argument("--dataset", default="../shared/data/ptb")
    parser.add_argument("--num-sentences", type=int, default=1000, help="the first N test sentences")
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=20, help="sentences per encoder batch")
    parser.add_argument("--max-rows", type=int, default=1024, help="decoder rows per call (sentences x samples)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/iw_nll")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = SentenceMIMPipeline.from_pretrained(args.model_dir, device=args.device)
    texts = load_split_texts(args.dataset, split="test", max_sentences=args.num_sentences)
    batches, _ = load_eval_batches(pipe.tokenizer, texts, args.batch_size, max_length=pipe.max_length)
    num_targets = sum(int(metrics.num_targets(b["input_ids"], b["attention_mask"]).sum()) for b in batches)
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]

    rate_before = matmul_rate(device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    nlls = []
    start = time.perf_counter()
    for batch in tqdm(batches, desc=f"IW-NLL K={args.iw_samples}"):
        ids, mask = batch["input_ids"].to(args.device), batch["attention_mask"].to(args.device)
        nlls.append(metrics.importance_weighted_nll(
            pipe.model, ids, mask, args.iw_samples, max_rows=args.max_rows, generator=generator
        ).cpu())
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = 1e9 * max(rate_before, matmul_rate(device=args.device))  # the better of two measurements around the run

    nll = torch.cat(nlls)
    useful_flops = flops.iw_nll_flops(pipe.model.config, lengths, args.iw_samples)
    results = {
        "command": "python benchmarks/iw_nll_ptb.py " + " ".join(argv if argv is not None else []),
        "machine": machine_info(torch.get_num_threads()) | {"device": args.device},
        "model_dir": args.model_dir,
        "model": {k: getattr(pipe.model.config, k) for k in ("architecture", "objective", "embedding_size",
                                                             "hidden_size", "latent_size", "vocab_size")},
        "num_sentences": len(nll),
        "num_targets": num_targets,
        "iw_samples": args.iw_samples,
        "max_rows": args.max_rows,
        "seconds": round(seconds, 1),
        "sentences_per_s": len(nll) / seconds,
        "samples_per_s": len(nll) * args.iw_samples / seconds,
        "target_tokens_per_s": num_targets * args.iw_samples / seconds,
        "useful_gflop": useful_flops / 1e9,
        "achieved_gflop_per_s": useful_flops / seconds / 1e9,
        "matmul_gflop_per_s": rate / 1e9,
        "matmul_fraction": useful_flops / seconds / rate,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "iw_nll": float(nll.mean()),
        "iw_ppl": math.exp(float(nll.sum()) / num_targets),
    }
    print(json.dumps(results, indent=2))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
