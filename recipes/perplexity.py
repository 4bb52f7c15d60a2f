"""Recipe: likelihood of a trained sentence model on a dataset split (IW-NLL / IW-PPL, ELBO, MELBO).

Prints one table where every number says what it is, and writes the numbers as JSON:

- IW-NLL, IW-PPL: importance-weighted -log p(x) with K samples (He et al. 2019), the likelihood to compare
  sentenceMIM, VAE and AE models with.
- ELBO-NLL, ELBO-PPL: -log p(x|z) + KL with one z ~ q(z|x); an upper bound on -log p(x).
- MELBO-NLL, MELBO-PPL: -log p(x|z) + log N, the number the sentenceMIM paper reports. It is NOT a likelihood bound
  and must not be compared with IW-NLL or ELBO.
- the latent statistics that come for free: KL, MI (whole split and per batch of 32), active units.

Launch:

    # PTB test set (Mikolov splits in ../shared/data/ptb), K = 500 as in He et al.
    python recipes/perplexity.py --model_name_or_path runs/ptb-mim --dataset_name ../shared/data/ptb --split test

    # a quick look: 200 sentences, 50 importance samples
    python recipes/perplexity.py --model_name_or_path runs/ptb-mim --dataset_name ../shared/data/ptb \
        --split validation --max_sentences 200 --iw_samples 50

    # any Hugging Face dataset, choosing the text column
    python recipes/perplexity.py --model_name_or_path runs/imdb-mim --dataset_name stanfordnlp/imdb \
        --split test --text_column text --per_device_eval_batch_size 32

The JSON goes to --output_file (default: <model>/perplexity_<split>.json).
"""

import argparse
import sys
from pathlib import Path

import torch

from sentmim.evaluate_folder import load_eval_batches, load_split_texts
from sentmim.evaluation import evaluate
from sentmim.files import file_safe, write_json_atomic
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import format_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="folder with the model and its tokenizer")
    parser.add_argument("--dataset_name", required=True, help="Hub id, local file or folder, or 'builtin'")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="test", help="a split name, or a slice such as 'test[:500]'")
    parser.add_argument("--text_column", default=None)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)
    parser.add_argument("--iw_samples", type=int, default=500, help="K of IW-NLL; 0 skips it")
    parser.add_argument("--max_sentences", type=int, default=None, help="evaluate the first N sentences only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_file", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--disable_tqdm", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)

    # 1. The model and the tokenizer saved beside it.
    pipe = SentenceMIMPipeline.from_pretrained(args.model_name_or_path, device=args.device)

    # 2. The split, cleaned and tokenized like the training data; overlong sentences are truncated, not dropped.
    texts = load_split_texts(
        args.dataset_name, args.dataset_config_name, args.split, args.text_column, args.max_sentences
    )
    batches, stats = load_eval_batches(pipe.tokenizer, texts, args.per_device_eval_batch_size, pipe.max_length)

    # 3. Likelihoods and latent statistics (no decoding: reconstruction BLEU has its own recipe).
    results = evaluate(
        pipe.model, batches, iw_samples=args.iw_samples, bleu=False, seed=args.seed, progress=not args.disable_tqdm
    )
    results.update(model_dir=str(args.model_name_or_path), dataset=str(args.dataset_name), split=args.split,
                   max_length=pipe.max_length, num_truncated=stats["num_truncated"])

    # 4. Report.
    print(format_results(results))
    if stats["num_truncated"]:
        print(f"note: {stats['num_truncated']} sentences were truncated to {pipe.max_length} tokens")
    output = args.output_file or Path(args.model_name_or_path) / f"perplexity_{file_safe(args.split)}.json"
    print(f"wrote {write_json_atomic(output, results)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
