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

The JSON goes to --output_file (default: <model>/perplexity_<split>.json). `--help` lists every option with its
default; the flags are those of `sentmim evaluate` (sentmim.options), in either spelling.
"""

import sys
from pathlib import Path

from transformers import HfArgumentParser

from sentmim.evaluate_folder import evaluate_loaded, load_eval_batches, load_split_texts
from sentmim.files import file_safe, write_json_atomic
from sentmim.options import DatasetOptions, EvaluationOptions, LikelihoodOptions, ModelFolderOptions
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import format_results


def parse_args(argv=None):
    parser = HfArgumentParser((ModelFolderOptions, DatasetOptions, EvaluationOptions, LikelihoodOptions),
                              description=__doc__.split("\n")[0])
    parser.set_defaults(split="test")
    return parser.parse_args_into_dataclasses(argv)


def main(argv=None) -> dict:
    folder, dataset, evaluation, likelihood = parse_args(argv)

    # 1. The model and the tokenizer saved beside it.
    pipe = SentenceMIMPipeline.from_pretrained(folder.model_name_or_path, device=folder.torch_device())

    # 2. The split, cleaned and tokenized like the training data; sentences longer than the model's limit are
    #    dropped or truncated as its training did (config.overlong).
    texts = load_split_texts(dataset.dataset, dataset.dataset_config, dataset.split, dataset.text_column,
                             evaluation.max_sentences, dataset.split_sentences)
    batches, stats = load_eval_batches(pipe.tokenizer, texts, evaluation.batch_size, pipe.max_length,
                                       pipe.model.config.overlong)

    # 3. Likelihoods and latent statistics (no decoding: reconstruction BLEU has its own recipe).
    results = evaluate_loaded(pipe, batches, stats, iw_samples=likelihood.iw_samples, bleu=False,
                              seed=evaluation.seed, progress=not evaluation.disable_tqdm)
    results.update(model_dir=str(folder.model_name_or_path), dataset=str(dataset.dataset), split=dataset.split)

    # 4. Report (the table says how many sentences the length rule dropped or truncated).
    print(format_results(results))
    output = evaluation.output or Path(folder.model_name_or_path) / f"perplexity_{file_safe(dataset.split)}.json"
    print(f"wrote {write_json_atomic(output, results)}")
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
