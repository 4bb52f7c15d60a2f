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

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import HfArgumentParser

from sentmim.evaluate_folder import load_split_texts
from sentmim.options import DatasetOptions, InterpolateOptions, ModelFolderOptions, option
from sentmim.pipeline import SentenceMIMPipeline


@dataclass
class Endpoints:
    """The two sentences: given, or taken from a dataset split by index."""

    first: str | None = option(None, "the first sentence")
    second: str | None = option(None, "the second sentence")
    first_index: int = option(0, "without --first/--second: index of the first sentence in the split")
    second_index: int = option(1, "without --first/--second: index of the second sentence in the split")
    output_file: str | None = option(None, "write the steps + 2 sentences, one per line")

    def __post_init__(self):
        if (self.first is None) != (self.second is None):
            raise ValueError("give both --first and --second, or neither (then two indices of a dataset split)")


def parse_args(argv=None):
    parser = HfArgumentParser((ModelFolderOptions, Endpoints, InterpolateOptions, DatasetOptions),
                              description=__doc__.split("\n")[0])
    parser.set_defaults(split="test")
    return parser.parse_args_into_dataclasses(argv)


def pick_sentences(ends: Endpoints, dataset: DatasetOptions) -> tuple[str, str]:
    if ends.first is not None:
        return ends.first, ends.second
    texts = load_split_texts(dataset.dataset, dataset.dataset_config, dataset.split, dataset.text_column)
    for index in (ends.first_index, ends.second_index):
        if not 0 <= index < len(texts):
            raise ValueError(f"index {index} is outside split {dataset.split!r} ({len(texts)} sentences)")
    return texts[ends.first_index]["text"], texts[ends.second_index]["text"]


def main(argv=None) -> list[str]:
    folder, ends, args, dataset = parse_args(argv)
    pipe = SentenceMIMPipeline.from_pretrained(folder.model_name_or_path, device=folder.torch_device())
    first, second = pick_sentences(ends, dataset)

    sentences = pipe.interpolate(first, second, steps=args.steps, method=args.method)

    print(f"first:  {first}\nsecond: {second}")
    print(f"{args.method} interpolation between the posterior means, {args.steps} steps, greedy decoding:")
    fractions = torch.linspace(0.0, 1.0, args.steps + 2).tolist()
    for fraction, sentence in zip(fractions, sentences, strict=True):
        print(f"  {fraction:4.2f}  {sentence}")
    if ends.output_file:
        path = Path(ends.output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(sentence + "\n" for sentence in sentences), encoding="utf-8")
    return sentences


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
