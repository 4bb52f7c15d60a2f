"""Recipe: how well a trained sentence model reconstructs a dataset split (reconstruction BLEU).

Each sentence is encoded, z is the posterior mean (default; --mode sample draws one z ~ q(z|x)), and z is decoded
greedily. Prints:

- BLEU-4 corpus: sacreBLEU corpus BLEU-4 (0-100), tokenize='none' on the space-joined tokens, with its signature.
- BLEU-1 mean sentence: the mean over sentences of sentence BLEU-1 on a 0-1 scale, the sentenceMIM demo's number.
- a few (input, reconstruction) pairs.

The reconstructions are written one per line in the split's order, next to the references, so that sacreBLEU can
check the score:  sacrebleu <prefix>.ref.txt -i <prefix>.hyp.txt -tok none

Launch:

    python recipes/reconstruction_bleu.py --model_name_or_path runs/ptb-mim --dataset_name ../shared/data/ptb \
        --split test

    # reconstructions from a posterior sample instead of the mean
    python recipes/reconstruction_bleu.py --model_name_or_path runs/ptb-vae --dataset_name ../shared/data/ptb \
        --split test --mode sample --seed 1

Outputs (defaults): <model>/reconstruction_<split>.json, <model>/reconstruction_<split>.hyp.txt and .ref.txt.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from sentmim import metrics
from sentmim.evaluate_folder import load_eval_batches, load_split_texts, loader_order
from sentmim.evaluation import reconstruct_split
from sentmim.files import file_safe, write_json_atomic
from sentmim.options import DatasetOptions, EvaluationOptions, ModelFolderOptions, option
from sentmim.pipeline import SentenceMIMPipeline


@dataclass
class ReconstructionOptions:
    mode: Literal["mean", "sample"] = option("mean", "decode z = the posterior mean, or one z ~ q(z|x)")
    num_examples: int = option(5, "(input, reconstruction) pairs to print")
    hypotheses_file: str | None = option(None, "write the reconstructions here, one per line")
    references_file: str | None = option(None, "write the inputs as the model saw them here, one per line")


def parse_args(argv=None):
    parser = HfArgumentParser((ModelFolderOptions, DatasetOptions, EvaluationOptions, ReconstructionOptions),
                              description=__doc__.split("\n")[0])
    parser.set_defaults(split="test")
    return parser.parse_args_into_dataclasses(argv)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def main(argv=None) -> dict:
    folder, dataset, evaluation, args = parse_args(argv)

    # 1. The model and the tokenizer saved beside it.
    pipe = SentenceMIMPipeline.from_pretrained(folder.model_name_or_path, device=folder.torch_device())

    # 2. The split, cleaned and tokenized like the training data; sentences longer than the model's limit are
    #    dropped or truncated as its training did (config.overlong).
    texts = load_split_texts(dataset.dataset, dataset.dataset_config, dataset.split, dataset.text_column,
                             evaluation.max_sentences, dataset.split_sentences)
    batches, stats = load_eval_batches(pipe.tokenizer, texts, evaluation.batch_size, pipe.max_length,
                                       pipe.model.config.overlong)

    # 3. Reconstruct. Batches group sentences by length, so put the outputs back in the split's order.
    hypotheses, references = reconstruct_split(
        pipe.model, batches, pipe.tokenizer, mode=args.mode, seed=evaluation.seed,
        progress=not evaluation.disable_tqdm,
    )
    order = loader_order(batches)
    in_order = sorted(range(len(order)), key=order.__getitem__)
    hypotheses, references = [hypotheses[i] for i in in_order], [references[i] for i in in_order]

    # 4. Score: the references are the inputs as the model saw them; an unknown token in a reconstruction is written
    #    as a mark found in no reference (U+2047), so it never matches.
    results = {
        "mode": args.mode,
        "decoding": "greedy",
        "num_sentences": len(hypotheses),
        "bleu4_corpus": metrics.corpus_bleu(hypotheses, references),
        "bleu_signature": metrics.bleu_signature(),
        "bleu1_sentence_mean": metrics.mean_sentence_bleu1(hypotheses, references),
        "model_dir": str(folder.model_name_or_path),
        "dataset": str(dataset.dataset),
        "split": dataset.split,
        "seed": evaluation.seed,
        "overlong": pipe.model.config.overlong,
        "num_dropped": stats["num_dropped"],
        "num_truncated": stats["num_truncated"],
    }

    # 5. Report.
    z_name = "posterior mean" if args.mode == "mean" else "one sample z ~ q(z|x)"
    print(f"Reconstruction of {len(hypotheses)} sentences: greedy decoding of z = {z_name}")
    print(f"  BLEU-4 corpus (sacreBLEU, 0-100)               {results['bleu4_corpus']:10.3f}")
    print(f"    signature {results['bleu_signature']}")
    print(f"  BLEU-1 mean sentence (0-1; sentenceMIM demo)   {results['bleu1_sentence_mean']:10.4f}")
    for reference, hypothesis in list(zip(references, hypotheses, strict=True))[: args.num_examples]:
        print(f"\n  input:          {reference}\n  reconstruction: {hypothesis}")
    prefix = str(Path(folder.model_name_or_path) / f"reconstruction_{file_safe(dataset.split)}")
    hypotheses_file = write_lines(Path(args.hypotheses_file or prefix + ".hyp.txt"), hypotheses)
    references_file = write_lines(Path(args.references_file or prefix + ".ref.txt"), references)
    results.update(hypotheses_file=str(hypotheses_file), references_file=str(references_file))
    output = write_json_atomic(Path(evaluation.output or prefix + ".json"), results)
    print(f"\nwrote {output}, {hypotheses_file}, {references_file}")
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
