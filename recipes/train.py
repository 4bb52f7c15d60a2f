"""Recipe: train (or fine-tune) a sentenceMIM, text-VAE or auto-encoder model, then score it on the test split.

One file, top to bottom: parse the arguments into the library's option dataclasses (`sentmim.options`, the same
flags as `sentmim train`, in either spelling, with the Hugging Face example scripts' names accepted too), train with
`sentmim.assembly.train_from_options` (accelerate: one CPU, one GPU, many GPUs), and evaluate the saved best model on
the test split (IW-NLL with 50 importance samples, and with a widened proposal whose width is chosen on validation
sentences; ELBO, MELBO, KL and its parts, MI +- SE, both active-unit rules, reconstruction BLEU).
`python recipes/train.py --help` lists every option with its default.

Launch:

    # one process (a GPU if there is one, else the CPU): sentenceMIM on PTB
    python recipes/train.py --dataset_name ../shared/data/ptb --tokenizer word --output_dir runs/ptb-mim \
        --objective mim --max_steps 20000

    # the text-VAE baseline, KL annealed linearly over 10k steps
    python recipes/train.py --dataset_name ../shared/data/ptb --tokenizer word --output_dir runs/ptb-vae \
        --objective vae --kl_schedule linear --kl_anneal_steps 10000 --max_steps 20000

    # several GPUs (the batch size is per device)
    accelerate launch --multi_gpu --num_processes 8 recipes/train.py --dataset_name ../shared/data/ptb \
        --tokenizer word --output_dir runs/ptb-mim --objective mim --max_steps 20000 --per_device_train_batch_size 32

    # two processes on one CPU machine (ACCELERATE_USE_CPU=1 makes them one gloo job, not two separate runs)
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train.py --dataset_name ../shared/data/ptb \
        --tokenizer word --output_dir runs/ptb-mim-cpu --objective mim --max_steps 2000

    # a Hugging Face Hub dataset of paragraphs: a config, the text column, rows split into sentences; byte-level BPE
    # (the default tokenizer: no unknown tokens) with a bigger vocabulary
    python recipes/train.py --dataset_name Salesforce/wikitext --dataset_config_name wikitext-103-raw-v1 \
        --text_column text --split_sentences --output_dir runs/wikitext-mim --vocab_size 16000 --max_length 64

    # fine-tune a trained model on other data (its tokenizer and architecture are kept; a word-level vocabulary
    # gains the 5,000 most frequent words it lacks); recipes/finetune.py also scores it before and after
    python recipes/train.py --init_from runs/ptb-mim --dataset_name some/hub-dataset --text_column text \
        --split_sentences --extend_vocabulary 5000 --output_dir runs/ptb-mim-finetuned --max_steps 2000 \
        --learning_rate 3e-4

    # continue an interrupted run from its last checkpoint (same command plus the flag)
    python recipes/train.py --dataset_name ../shared/data/ptb --tokenizer word --output_dir runs/ptb-mim \
        --objective mim --max_steps 20000 --resume_from_checkpoint

--dataset_name takes a Hub id, a local file (.txt one sentence per line, .jsonl, .csv, .parquet), a folder of such
files (file names with train / valid / test pick the split), a `save_to_disk` folder, or "builtin". The output folder
holds the best model and its tokenizer (load with `SentenceMIMPipeline.from_pretrained(output_dir)`), checkpoints/,
log.jsonl, train_results.json and, after the test evaluation, eval_results_test.json.
"""

import logging
import sys
from pathlib import Path

from accelerate import PartialState
from transformers import HfArgumentParser

from sentmim.assembly import train_from_options
from sentmim.console import library_progress_bars
from sentmim.evaluate_folder import evaluate_loaded, load_eval_batches, load_heldout_batches, load_split_texts
from sentmim.files import write_json_atomic
from sentmim.options import (
    DataOptions,
    DatasetOptions,
    ModelOptions,
    TestEvaluationOptions,
    TokenizerOptions,
    TrainingOptions,
)
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import format_results
from sentmim.training import TrainingDiverged

OPTIONS = (DatasetOptions, DataOptions, TokenizerOptions, ModelOptions, TrainingOptions, TestEvaluationOptions)


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(OPTIONS, description=__doc__.split("\n")[0])


def parse_args(argv=None) -> tuple:
    """(dataset, data, tokenizer, model, training, test) options; a value out of range raises a one-line error."""
    return build_parser().parse_args_into_dataclasses(argv)


def main(argv=None) -> dict:
    dataset, data, tokenizer, model, training, test = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    logging.getLogger("sentmim").setLevel(logging.INFO)  # data counts, unknown-word rate, validation results
    with library_progress_bars(not training.disable_tqdm):  # also the bars of `datasets` and `transformers`
        return train_and_evaluate(dataset, data, tokenizer, model, training, test)


def train_and_evaluate(dataset, data, tokenizer, model, training, test) -> dict:
    # 1. Train. Every process runs this; the best model and its tokenizer end up in output_dir.
    _, _, train_results = train_from_options(dataset, data, tokenizer, model, training)
    results = {"train": train_results}

    # 2. Score the saved best model on the test split, once (on the main process).
    if not test.test_split or not PartialState().is_main_process:
        return results
    pipe = SentenceMIMPipeline.from_pretrained(training.output_dir)
    try:
        texts = load_split_texts(dataset.dataset, dataset.dataset_config, test.test_split, dataset.text_column,
                                 test.max_eval_sentences, dataset.split_sentences)
    except ValueError as error:  # no such split in this dataset: training is done, say so and stop
        print(f"no test evaluation: {error}")
        return results
    # Sentences longer than the model's limit are dropped or truncated as training did (config.overlong).
    batches, stats = load_eval_batches(pipe.tokenizer, texts, training.eval_batch_size, pipe.max_length,
                                       pipe.model.config.overlong)
    # The widened IW proposal's width is chosen on held-out sentences (validation), never on the scored ones.
    heldout, heldout_name = load_heldout_batches(pipe.tokenizer, dataset.dataset, dataset.dataset_config,
                                                 test.test_split, dataset.text_column,
                                                 test.width_sentences if test.iw_samples else 0, pipe.max_length,
                                                 pipe.model.config.overlong, dataset.split_sentences)
    scores = evaluate_loaded(pipe, batches, stats, iw_samples=test.iw_samples, bleu=True, seed=training.seed,
                             progress=not training.disable_tqdm, heldout_batches=heldout, heldout_name=heldout_name)
    scores.update(model_dir=training.output_dir, dataset=str(dataset.dataset), split=test.test_split)
    print(format_results(scores))
    print(f"wrote {write_json_atomic(Path(training.output_dir) / 'eval_results_test.json', scores)}")
    results["test"] = scores
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError, TrainingDiverged) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
