"""Recipe: walk the latent space between two sentences and decode every step.

Both sentences are encoded to their posterior means z_a and z_b; the path between them (straight, or --method slerp
for constant angular speed) is cut into steps + 2 points, endpoints included, and each point is decoded greedily.
The first and last lines are therefore the reconstructions of the two sentences. A smooth latent space (sentenceMIM)
changes the sentence a little at a time; a collapsed VAE prints nearly the same sentence on every line.

Launch:

    # two sentences given on the command line
    python recipes/interpolate.py --model_name_or_path runs/ptb-mim \
        --first "the company said it expects a loss" --second "prices rose sharply in tokyo" --steps 8

    # sentences 0 and 10 of the PTB test split (indices count non-empty lines), along a great circle
    python recipes/interpolate.py --model_name_or_path runs/ptb-mim --dataset_name ../shared/data/ptb \
        --split test --first_index 0 --second_index 10 --method slerp

With --output_file the steps + 2 sentences are also written, one per line.
"""

import argparse
import sys
from pathlib import Path

import torch

from sentmim.evaluate_folder import load_split_texts
from sentmim.pipeline import SentenceMIMPipeline


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="folder with the model and its tokenizer")
    parser.add_argument("--first", default=None, help="the first sentence")
    parser.add_argument("--second", default=None, help="the second sentence")
    parser.add_argument("--dataset_name", default=None, help="take the sentences from a dataset split instead")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--text_column", default=None)
    parser.add_argument("--first_index", type=int, default=0, help="index of the first sentence in the split")
    parser.add_argument("--second_index", type=int, default=1, help="index of the second sentence in the split")
    parser.add_argument("--steps", type=int, default=8, help="points strictly between the two endpoints")
    parser.add_argument("--method", choices=("linear", "slerp"), default="linear")
    parser.add_argument("--output_file", default=None, help="write the steps + 2 sentences, one per line")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if (args.first is None) != (args.second is None):
        parser.error("give both --first and --second, or neither (then --dataset_name with two indices)")
    if args.first is None and args.dataset_name is None:
        parser.error("give --first and --second, or --dataset_name with --first_index and --second_index")
    return args


def pick_sentences(args) -> tuple[str, str]:
    if args.first is not None:
        return args.first, args.second
    texts = load_split_texts(args.dataset_name, args.dataset_config_name, args.split, args.text_column)
    for index in (args.first_index, args.second_index):
        if not 0 <= index < len(texts):
            raise SystemExit(f"index {index} is outside split {args.split!r} ({len(texts)} sentences)")
    return texts[args.first_index]["text"], texts[args.second_index]["text"]


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    pipe = SentenceMIMPipeline.from_pretrained(args.model_name_or_path, device=args.device)
    first, second = pick_sentences(args)

    sentences = pipe.interpolate(first, second, steps=args.steps, method=args.method)

    print(f"first:  {first}\nsecond: {second}")
    print(f"{args.method} interpolation between the posterior means, {args.steps} steps, greedy decoding:")
    fractions = torch.linspace(0.0, 1.0, args.steps + 2).tolist()
    for fraction, sentence in zip(fractions, sentences, strict=True):
        print(f"  {fraction:4.2f}  {sentence}")
    if args.output_file:
        path = Path(args.output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(sentence + "\n" for sentence in sentences), encoding="utf-8")
    return sentences


if __name__ == "__main__":
    main(sys.argv[1:])
