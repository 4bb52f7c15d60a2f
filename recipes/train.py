"""Recipe: train (or fine-tune) a sentenceMIM, text-VAE or auto-encoder model, then score it on the test split.

One file, top to bottom: parse the arguments, turn them into the two option objects of the library
(`sentmim.experiment.RunOptions` for data / tokenizer / model, `sentmim.training.TrainingArguments` for the loop),
train with `sentmim.experiment.run_training` (accelerate: one CPU, one GPU, many GPUs), and evaluate the saved best
model on the test split (IW-NLL with 50 importance samples, ELBO, MELBO, KL, MI, active units, reconstruction BLEU).

Launch:

    # one process (a GPU if there is one, else the CPU): sentenceMIM on PTB
    python recipes/train.py --dataset_name ../shared/data/ptb --output_dir runs/ptb-mim --objective mim \
        --max_steps 20000

    # the text-VAE baseline, KL annealed linearly over 10k steps
    python recipes/train.py --dataset_name ../shared/data/ptb --output_dir runs/ptb-vae --objective vae \
        --kl_schedule linear --kl_anneal_steps 10000 --max_steps 20000

    # several GPUs (the batch size is per device)
    accelerate launch --multi_gpu --num_processes 8 recipes/train.py --dataset_name ../shared/data/ptb \
        --output_dir runs/ptb-mim --objective mim --max_steps 20000 --per_device_train_batch_size 32

    # two processes on one CPU machine (ACCELERATE_USE_CPU=1 makes them one gloo job, not two separate runs)
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train.py --dataset_name ../shared/data/ptb \
        --output_dir runs/ptb-mim-cpu --objective mim --max_steps 2000

    # a Hugging Face Hub dataset: a config, the column that holds the text, a bigger vocabulary
    python recipes/train.py --dataset_name Salesforce/wikitext --dataset_config_name wikitext-103-raw-v1 \
        --text_column text --output_dir runs/wikitext-mim --tokenizer bpe --vocab_size 16000 --max_length 64

    # fine-tune a trained model on other data (its tokenizer and architecture are kept)
    python recipes/train.py --init_from runs/ptb-mim --dataset_name some/hub-dataset --text_column text \
        --output_dir runs/ptb-mim-finetuned --max_steps 2000 --learning_rate 3e-4

    # continue an interrupted run from its last checkpoint (same command plus the flag)
    python recipes/train.py --dataset_name ../shared/data/ptb --output_dir runs/ptb-mim --objective mim \
        --max_steps 20000 --resume_from_checkpoint

--dataset_name takes a Hub id, a local file (.txt one sentence per line, .jsonl, .csv, .parquet), a folder of such
files (file names with train / valid / test pick the split), a `save_to_disk` folder, or "builtin". The output folder
holds the best model and its tokenizer (load with `SentenceMIMPipeline.from_pretrained(output_dir)`), checkpoints/,
log.jsonl, train_results.json and, after the test evaluation, eval_results_test.json.
"""

import argparse
import logging
import sys
from pathlib import Path

from sentmim.console import library_progress_bars
from sentmim.evaluate_folder import load_eval_batches, load_split_texts
from sentmim.evaluation import evaluate
from sentmim.experiment import RunOptions, run_training
from sentmim.files import write_json_atomic
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import format_results
from sentmim.training import TrainingArguments, TrainingDiverged

MODEL_OPTIONS = ("objective", "architecture", "latent_size", "hidden_size", "embedding_size", "num_layers",
                 "dropout", "embedding_dropout", "word_dropout", "kl_schedule", "kl_anneal_steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default="builtin", help="Hub id, local file or folder, or 'builtin'")
    data.add_argument("--dataset_config_name", default=None, help="Hub configuration name")
    data.add_argument("--train_split", default=None, help="train on this split or slice only, e.g. 'train[:10%%]'")
    data.add_argument("--text_column", default=None, help="default: 'text', or the only string column")
    data.add_argument("--max_length", type=int, default=64, help="longest sentence in tokens, BOS and EOS included")
    data.add_argument("--tokenizer", choices=["word", "bpe", "unigram"], default="word")
    data.add_argument("--vocab_size", type=int, default=10000)

    model = parser.add_argument_group("model (defaults: those of SentenceMIMConfig; with --init_from, kept)")
    model.add_argument("--init_from", default=None, help="fine-tune this trained model folder")
    model.add_argument("--objective", choices=["mim", "vae", "ae"], default=None, help="default: mim")
    model.add_argument("--architecture", choices=["gru", "transformer"], default=None, help="default: gru")
    for name in ("--latent_size", "--hidden_size", "--embedding_size", "--num_layers", "--kl_anneal_steps"):
        model.add_argument(name, type=int, default=None)
    model.add_argument("--dropout", type=float, default=None)
    model.add_argument("--embedding_dropout", type=float, default=None, help="dropout on the decoder's inputs")
    model.add_argument("--word_dropout", type=float, default=None, help="decoder input words replaced by UNK")
    model.add_argument("--kl_schedule", choices=["constant", "linear", "logistic", "cyclical"], default=None,
                       help="VAE only")

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", required=True)
    training.add_argument("--overwrite_output_dir", action="store_true",
                          help="replace the earlier run in output_dir (only files a run wrote; see docs/errors.md)")
    training.add_argument("--resume_from_checkpoint", action="store_true",
                          help="continue the run in output_dir exactly from its latest checkpoint: the same command "
                          "plus this flag (options that would change the run are refused; see docs/errors.md)")
    training.add_argument("--per_device_train_batch_size", type=int, default=32)
    training.add_argument("--per_device_eval_batch_size", type=int, default=128)
    training.add_argument("--learning_rate", type=float, default=1e-3)
    training.add_argument("--max_steps", type=int, default=None, help="optimizer steps; overrides num_train_epochs")
    training.add_argument("--num_train_epochs", type=float, default=1.0)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--eval_steps", type=int, default=500)
    training.add_argument("--checkpointing_steps", type=int, default=None, help="default: every --eval_steps")
    training.add_argument("--logging_steps", type=int, default=50)
    training.add_argument("--early_stopping_patience", type=int, default=0, help="evaluations; 0 never stops")
    training.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no")
    training.add_argument("--report_to", choices=["none", "tensorboard"], default="none")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    training.add_argument("--disable_tqdm", action="store_true")

    evaluation = parser.add_argument_group("test evaluation (after training)")
    evaluation.add_argument("--test_split", default="test", help="'' skips the evaluation")
    evaluation.add_argument("--iw_samples", type=int, default=50, help="importance samples for IW-NLL")
    evaluation.add_argument("--max_eval_sentences", type=int, default=None)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        parser.error("--resume_from_checkpoint continues the run in output_dir; --overwrite_output_dir deletes it")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    logging.getLogger("sentmim").setLevel(logging.INFO)  # data counts, unknown-word rate, validation results
    with library_progress_bars(not args.disable_tqdm):  # also the bars of `datasets` and `transformers`
        return train_and_evaluate(args)


def train_and_evaluate(args: argparse.Namespace) -> dict:
    # 1. What to train on and what to train: data, tokenizer and model options (None = the library default).
    options = RunOptions(
        dataset=args.dataset_name, dataset_config=args.dataset_config_name, split=args.train_split,
        text_column=args.text_column, max_length=args.max_length, tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, init_from=args.init_from,
        model={name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name) is not None},
    )

    # 2. How to train: the loop's arguments, HF example names mapped to the library's.
    training_args = TrainingArguments(
        output_dir=args.output_dir, batch_size=args.per_device_train_batch_size,
        eval_batch_size=args.per_device_eval_batch_size, learning_rate=args.learning_rate, max_steps=args.max_steps,
        epochs=args.num_train_epochs, gradient_accumulation_steps=args.gradient_accumulation_steps,
        eval_steps=args.eval_steps, save_steps=args.checkpointing_steps, logging_steps=args.logging_steps,
        early_stopping_patience=args.early_stopping_patience, mixed_precision=args.mixed_precision,
        report_to=args.report_to, seed=args.seed, resume=args.resume_from_checkpoint,
        overwrite=args.overwrite_output_dir, cpu=args.cpu, progress=not args.disable_tqdm,
    )

    # 3. Train. Every process runs this; the best model and its tokenizer end up in output_dir.
    _, _, train_results = run_training(options, training_args)
    results = {"train": train_results}

    # 4. Score the saved best model on the test split, once (on the main process).
    from accelerate import PartialState

    if not args.test_split or not PartialState().is_main_process:
        return results
    pipe = SentenceMIMPipeline.from_pretrained(args.output_dir)
    try:
        texts = load_split_texts(args.dataset_name, args.dataset_config_name, args.test_split, args.text_column,
                                 args.max_eval_sentences)
    except ValueError as error:  # no such split in this dataset: training is done, say so and stop
        print(f"no test evaluation: {error}")
        return results
    batches, stats = load_eval_batches(pipe.tokenizer, texts, args.per_device_eval_batch_size, pipe.max_length)
    test = evaluate(pipe.model, batches, pipe.tokenizer, iw_samples=args.iw_samples, bleu=True, seed=args.seed,
                    progress=not args.disable_tqdm)
    test.update(model_dir=args.output_dir, dataset=str(args.dataset_name), split=args.test_split,
                max_length=pipe.max_length, num_truncated=stats["num_truncated"])
    print(format_results(test))
    print(f"wrote {write_json_atomic(Path(args.output_dir) / 'eval_results_test.json', test)}")
    results["test"] = test
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError, TrainingDiverged) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
