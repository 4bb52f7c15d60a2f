"""The `sentmim` console script.

    sentmim demo                                           train a small MIM and VAE on the built-in corpus, compare
    sentmim train --dataset ../shared/data/ptb --output-dir runs/ptb-mim --max-steps 20000
    sentmim evaluate runs/ptb-mim --dataset ../shared/data/ptb --split test
    sentmim reconstruct runs/ptb-mim "the market fell sharply ."
    sentmim interpolate runs/ptb-mim "first sentence" "second sentence" --steps 8
    sentmim sample runs/ptb-mim -n 10 --temperature 0.5
    sentmim encode runs/ptb-mim --input sentences.txt --output latents.npy
    sentmim benchmark --preset cpu --output-dir runs/bench-ptb   sMIM vs text VAEs vs AE, posterior collapse measured

Options are spelled with dashes (`--output-dir`); the underscore spelling of the HF example scripts
(`--output_dir`) is accepted too. Under several processes, launch `sentmim train` with `accelerate launch` or
`torchrun` (on CPU with ACCELERATE_USE_CPU=1). Every user error ends with one line on stderr and exit status 2.
"""

import argparse
import logging
import math
import os
import re
import sys
from pathlib import Path

from .checkpointing import CheckpointError
from .training import TrainingArguments, TrainingDiverged

logger = logging.getLogger("sentmim")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit status 2); sub-commands inherit it."""

    def error(self, message):
        message = re.sub(r"(--[\w-]+)/--\w+", r"\1", message)  # "--batch-size/--batch_size": name one spelling
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind, valid, words: str):
    """An argparse type: an int or a finite float for which `valid(value)` holds; the error states the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            kind_name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind_name}") from None
        if not (math.isfinite(value) and valid(value)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {words}")
        return value

    return parse


MAX_LENGTH = number(int, lambda value: value >= 3, "an integer >= 3 (BOS, a token, EOS)")
VOCAB_SIZE = number(int, lambda value: value >= 5, "an integer >= 5 (the 4 special tokens and a word)")
POSITIVE_INT = number(int, lambda value: value >= 1, "an integer >= 1")
COUNT = number(int, lambda value: value >= 0, "an integer >= 0")
POSITIVE = number(float, lambda value: value > 0, "a finite number > 0")
NON_NEGATIVE = number(float, lambda value: value >= 0, "a finite number >= 0")
FRACTION = number(float, lambda value: 0 <= value < 1, "a number >= 0 and < 1")
SEED = number(int, lambda value: 0 <= value < 2**32, "an integer >= 0 and < 2**32")


def process_rank() -> int:
    """This process's rank in a torchrun / accelerate launch (0 when there is only one process)."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the first process of a launch prints results and logs; the others print nothing but their errors."""
    return process_rank() == 0


def add(parser, name: str, **kwargs) -> None:
    """Add `--some-option`, also accepted as `--some_option`."""
    flags = [name] if not name.startswith("--") else [name, name.replace("-", "_").replace("__", "--", 1)]
    parser.add_argument(*dict.fromkeys(flags), **kwargs)


# -- train --------------------------------------------------------------------------------------------------------


def add_data_options(parser, split_default: str | None) -> None:
    add(parser, "--dataset", default="builtin", help="'builtin', a Hub id, a file, a folder of files, a saved dataset")
    add(parser, "--dataset-config", default=None, help="Hub configuration name")
    add(parser, "--split", default=split_default, help="split or slice, e.g. 'train[:10%%]'")
    add(parser, "--text-column", default=None, help="column holding the text (default: 'text' or the only string one)")
    add(parser, "--lowercase", action="store_true")


RESUME_HELP = (  # sentmim.training.RESUME_* are the rules; tests/test_resume_safety.py checks this text against them
    "continue the run in output-dir exactly from its last checkpoint: the same command plus --resume. Any other "
    "change of the data, tokenizer, model or training options, or of the number of processes, is refused. "
    "May change: --logging-steps, --save-steps, --report-to, --cpu; --max-steps and --epochs (not with "
    "--lr-scheduler cosine); --eval-steps and --eval-batch-size (not with --lr-scheduler plateau or "
    "--early-stopping-patience > 0)"
)


def add_train_parser(commands) -> None:
    parser = commands.add_parser("train", help="train or fine-tune a model on a dataset")
    add_data_options(parser, split_default=None)
    add(parser, "--max-length", type=MAX_LENGTH, default=64, help="longest sentence in tokens, BOS and EOS included")
    add(parser, "--overlong", choices=["drop", "truncate"], default="drop", help="what to do with longer sentences")
    add(parser, "--streaming", action="store_true", help="read lazily (corpora larger than memory); needs --max-steps")
    add(parser, "--validation-fraction", type=FRACTION, default=0.05,
        help="carved off train when there is no validation")
    add(parser, "--tokenizer", choices=["word", "bpe", "unigram"], default="word")
    add(parser, "--vocab-size", type=VOCAB_SIZE, default=10000)
    add(parser, "--min-frequency", type=COUNT, default=1)
    add(parser, "--init-from", default=None, help="fine-tune this trained model folder (keeps its tokenizer)")
    add(parser, "--objective", choices=["mim", "vae", "ae"], default=None, help="default: mim")
    add(parser, "--architecture", choices=["gru", "transformer"], default=None, help="default: gru")
    for name, help_text in [
        ("--latent-size", "default 128"), ("--hidden-size", "default 512"), ("--embedding-size", "default 300"),
        ("--num-layers", "default 1"), ("--num-attention-heads", "Transformer, default 4"),
    ]:
        add(parser, name, type=POSITIVE_INT, default=None, help=help_text)
    add(parser, "--dropout", type=FRACTION, default=None)
    add(parser, "--embedding-dropout", type=FRACTION, default=None, help="dropout on the decoder's input embeddings")
    add(parser, "--word-dropout", type=FRACTION, default=None, help="rate of decoder input words replaced by UNK")
    add(parser, "--kl-schedule", choices=["constant", "linear", "logistic", "cyclical"], default=None)
    add(parser, "--kl-anneal-steps", type=POSITIVE_INT, default=None)
    add(parser, "--kl-cycle-steps", type=POSITIVE_INT, default=None)
    add(parser, "--free-bits", type=NON_NEGATIVE, default=None, help="VAE per-dimension KL floor (nats)")
    add(parser, "--output-dir", required=True)
    add(parser, "--overwrite", action="store_true",
        help="replace the earlier run in output-dir (deletes only files a run wrote; refuses a folder holding others)")
    add(parser, "--resume", action="store_true", help=RESUME_HELP)
    add(parser, "--batch-size", type=POSITIVE_INT, default=32, help="per process")
    add(parser, "--eval-batch-size", type=POSITIVE_INT, default=128)
    add(parser, "--max-steps", type=POSITIVE_INT, default=None, help="optimizer steps (overrides --epochs)")
    add(parser, "--epochs", type=POSITIVE, default=1.0)
    add(parser, "--learning-rate", type=POSITIVE, default=1e-3)
    add(parser, "--optimizer", choices=["adam", "adamw"], default="adam")
    add(parser, "--weight-decay", type=NON_NEGATIVE, default=0.0)
    add(parser, "--max-grad-norm", type=POSITIVE, default=5.0)
    add(parser, "--lr-scheduler", choices=["constant", "cosine", "plateau"], default="constant")
    add(parser, "--warmup-steps", type=COUNT, default=0)
    add(parser, "--gradient-accumulation-steps", type=POSITIVE_INT, default=1)
    add(parser, "--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    add(parser, "--eval-steps", type=POSITIVE_INT, default=500)
    add(parser, "--save-steps", type=POSITIVE_INT, default=None,
        help="checkpoint every N steps (default: --eval-steps)")
    add(parser, "--logging-steps", type=POSITIVE_INT, default=50)
    add(parser, "--early-stopping-patience", type=COUNT, default=0, help="evaluations without improvement; 0: never")
    add(parser, "--report-to", choices=["none", "tensorboard"], default="none")
    add(parser, "--seed", type=SEED, default=0)
    add(parser, "--cpu", action="store_true", help="train on CPU even when a GPU is present")
    parser.set_defaults(handler=run_train)


MODEL_OPTIONS = ("objective", "architecture", "latent_size", "hidden_size", "embedding_size", "num_layers",
                 "num_attention_heads", "dropout", "embedding_dropout", "word_dropout", "kl_schedule",
                 "kl_anneal_steps", "kl_cycle_steps", "free_bits")


def run_train(args) -> None:
    from .experiment import RunOptions, run_training

    options = RunOptions(
        dataset=args.dataset, dataset_config=args.dataset_config, split=args.split, text_column=args.text_column,
        lowercase=args.lowercase, max_length=args.max_length, overlong=args.overlong,
        validation_fraction=args.validation_fraction, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        min_frequency=args.min_frequency, init_from=args.init_from, streaming=args.streaming,
        model={name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name) is not None},
    )
    training_args = TrainingArguments(
        output_dir=args.output_dir, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        max_steps=args.max_steps, epochs=args.epochs, learning_rate=args.learning_rate, optimizer=args.optimizer,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, lr_scheduler=args.lr_scheduler,
        warmup_steps=args.warmup_steps, gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, eval_steps=args.eval_steps, save_steps=args.save_steps,
        logging_steps=args.logging_steps, early_stopping_patience=args.early_stopping_patience,
        seed=args.seed, resume=args.resume, overwrite=args.overwrite, report_to=args.report_to, cpu=args.cpu,
    )
    _, _, results = run_training(options, training_args)
    if is_main_process():
        print(f"trained {results['step']} steps; best validation loss {results['best_val_loss']}; "
              f"model in {args.output_dir}")


# -- evaluation and text tools ------------------------------------------------------------------------------------


def add_evaluate_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="every metric of a model on a split (IW-NLL, ELBO, MI, BLEU, ...)")
    parser.add_argument("model_dir")
    add_data_options(parser, split_default="test")
    add(parser, "--batch-size", type=POSITIVE_INT, default=64)
    add(parser, "--iw-samples", type=COUNT, default=500, help="importance samples for IW-NLL (0 skips it)")
    add(parser, "--max-sentences", type=POSITIVE_INT, default=None)
    add(parser, "--plots", default=None, metavar="DIR", help="write PNG plots to DIR")
    add(parser, "--seed", type=SEED, default=0)
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> None:
    from .evaluate_folder import evaluate_folder
    from .reporting import format_results

    results = evaluate_folder(
        args.model_dir, args.dataset, dataset_config=args.dataset_config, split=args.split,
        text_column=args.text_column, batch_size=args.batch_size, iw_samples=args.iw_samples,
        max_sentences=args.max_sentences, seed=args.seed, plots_dir=args.plots,
    )
    print(format_results(results))


def read_sentences(args) -> list[str]:
    sentences = list(args.sentences or [])
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            raise ValueError(f"--input {path}: no such file")
        try:
            sentences += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as error:
            raise ValueError(f"--input {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not sentences:
        raise ValueError("no sentences: give them as arguments or with --input FILE (one per line)")
    return sentences


def load_pipeline(model_dir: str):
    from .pipeline import SentenceMIMPipeline

    return SentenceMIMPipeline.from_pretrained(model_dir)


def add_text_parsers(commands) -> None:
    parser = commands.add_parser("reconstruct", help="encode sentences and decode them back")
    parser.add_argument("model_dir")
    parser.add_argument("sentences", nargs="*")
    add(parser, "--input", default=None, help="file with one sentence per line")
    add(parser, "--mode", choices=["mean", "sample", "perturb"], default="mean")
    add(parser, "--num-beams", type=POSITIVE_INT, default=1)
    parser.set_defaults(handler=run_reconstruct)

    parser = commands.add_parser("interpolate", help="decode points on the path between two sentences")
    parser.add_argument("model_dir")
    parser.add_argument("first")
    parser.add_argument("second")
    add(parser, "--steps", type=COUNT, default=8, help="points between the two endpoints")
    add(parser, "--method", choices=["linear", "slerp"], default="linear")
    parser.set_defaults(handler=run_interpolate)

    parser = commands.add_parser("sample", help="decode sentences from the prior")
    parser.add_argument("model_dir")
    parser.add_argument("-n", "--num-samples", type=POSITIVE_INT, default=10)
    add(parser, "--temperature", type=NON_NEGATIVE, default=1.0, help="token sampling temperature (0 = greedy)")
    add(parser, "--seed", type=SEED, default=None)
    parser.set_defaults(handler=run_sample)

    parser = commands.add_parser("encode", help="write posterior means of sentences to a .npy file")
    parser.add_argument("model_dir")
    parser.add_argument("sentences", nargs="*")
    add(parser, "--input", default=None, help="file with one sentence per line")
    add(parser, "--output", required=True, help="where to write the [N, latent] float32 array (.npy)")
    parser.set_defaults(handler=run_encode)


def run_reconstruct(args) -> None:
    sentences = read_sentences(args)
    outputs = load_pipeline(args.model_dir).reconstruct(sentences, mode=args.mode, num_beams=args.num_beams)
    for source, output in zip(sentences, outputs, strict=True):
        print(f"input:  {source}\noutput: {output}\n")


def run_interpolate(args) -> None:
    sentences = load_pipeline(args.model_dir).interpolate(args.first, args.second, args.steps, args.method)
    for index, sentence in enumerate(sentences):
        print(f"{index:3d}  {sentence}")


def run_sample(args) -> None:
    pipe = load_pipeline(args.model_dir)
    for sentence in pipe.sample(args.num_samples, temperature=args.temperature, seed=args.seed):
        print(sentence)


def run_encode(args) -> None:
    import numpy as np

    sentences = read_sentences(args)  # a bad --input fails before the model loads
    latents = load_pipeline(args.model_dir).encode(sentences).cpu().numpy().astype("float32")
    output = args.output if args.output.endswith(".npy") else f"{args.output}.npy"  # what np.save writes
    np.save(output, latents)
    print(f"wrote {latents.shape[0]} x {latents.shape[1]} posterior means to {output}")


# -- demo -----------------------------------------------------------------------------------------------------------


def add_demo_parser(commands) -> None:
    parser = commands.add_parser("demo", help="MIM vs VAE on the built-in corpus, in a few minutes on a CPU")
    add(parser, "--output-dir", default="runs/demo")
    add(parser, "--max-steps", type=POSITIVE_INT, default=3000)
    add(parser, "--seed", type=SEED, default=0)
    parser.set_defaults(handler=run_demo)


def run_demo(args) -> None:
    from .demo import run_demo as demo

    demo(output_dir=args.output_dir, max_steps=args.max_steps, seed=args.seed)


# -- benchmark ------------------------------------------------------------------------------------------------------


def add_benchmark_parser(commands) -> None:
    from .benchmark import PRESETS, add_settings_arguments

    parser = commands.add_parser(
        "benchmark", help="sMIM vs text VAEs vs AE at several latent sizes: posterior collapse side by side",
        description="Train and score sMIM, three text VAEs and an AE with equal budgets; write results.md, "
        "results.json, samples.md and plots/ into --output-dir. Rerun the same command to continue.",
    )
    add(parser, "--preset", choices=list(PRESETS), default="cpu",
        help="smoke: tiny test run; cpu: PTB in ~45 min on 2 cores; paper: the sentenceMIM demo's (GPU)")
    add(parser, "--output-dir", required=True)
    add(parser, "--overwrite", action="store_true",
        help="delete the earlier benchmark's files in output-dir and start over (refuses a folder holding others)")
    add(parser, "--disable-tqdm", action="store_true")
    settings = parser.add_argument_group("settings (default: the preset's; lists as '16 128 512' or '16,128,512')")
    add_settings_arguments(settings, lambda name: list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])))
    parser.set_defaults(handler=run_benchmark)


def run_benchmark(args) -> None:
    import shlex

    from .benchmark import benchmark_settings, settings_overrides
    from .benchmark import run_benchmark as benchmark
    from .benchmark_report import format_results_table

    overrides = settings_overrides(args)
    # The command as it would be typed, for the report (sys.argv is not ours when main() is called in-process).
    words = ["sentmim", "benchmark", "--preset", args.preset, "--output-dir", args.output_dir]
    for name in overrides:
        value = getattr(args, name)
        words += [f"--{name.replace('_', '-')}", *(value if isinstance(value, list) else [value])]
    results = benchmark(benchmark_settings(args.preset, **overrides), args.output_dir, preset=args.preset,
                        command=shlex.join(words), overwrite=args.overwrite, progress=not args.disable_tqdm)
    print(format_results_table(results["models"]))


# -- entry point ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sentmim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo_parser(commands)
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_text_parsers(commands)
    add_benchmark_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help (0) or an argument error, already printed on one line (2)
        return exit_request.code
    main_process = is_main_process()
    talkative = args.verbose or args.command in ("train", "demo")
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=logging.INFO if talkative and main_process else logging.WARNING if main_process else logging.ERROR,
    )
    try:
        args.handler(args)
    except (ValueError, CheckpointError, TrainingDiverged, OSError, ImportError) as error:  # OSError: files, disk
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        # Under several processes each one that fails says so (a failure may be its own), marked with its rank.
        where = "" if main_process else f" (process {process_rank()})"
        print(f"sentmim {args.command}{where}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sentmim {args.command}: interrupted; a training run continues with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
