"""The `sentmim` console script.

    sentmim demo                                           train a small MIM and VAE on the built-in corpus, compare
    sentmim train --dataset ../shared/data/ptb --output-dir runs/ptb-mim --max-steps 20000
    sentmim evaluate runs/ptb-mim --dataset ../shared/data/ptb --split test
    sentmim reconstruct runs/ptb-mim "the market fell sharply ."
    sentmim interpolate runs/ptb-mim "first sentence" "second sentence" --steps 8
    sentmim sample runs/ptb-mim -n 10 --temperature 0.5 --prior aggregate
    sentmim encode runs/ptb-mim --input sentences.txt --output latents.npy
    sentmim benchmark --preset cpu --output-dir runs/bench-ptb   sMIM vs text VAEs vs AE, posterior collapse measured

Every option is a field of a dataclass in `sentmim.options` (docs/architecture.md, "Options"). Under several
processes, launch `sentmim train` with `accelerate launch` or `torchrun` (on CPU with ACCELERATE_USE_CPU=1). Every
user error ends with one line on stderr and exit status 2 (`--debug` shows the traceback instead).
"""

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path

from transformers import HfArgumentParser

from . import options as opts
from .console import configure_console, is_main_process, process_rank
from .training import TrainingDiverged

logger = logging.getLogger("sentmim")
# OSError: files, disk; DataError and CheckpointError are ValueErrors
USER_ERRORS = (ValueError, TrainingDiverged, OSError, ImportError)


class Parser(HfArgumentParser):
    """HfArgumentParser that shows every default in --help and reports errors on one line (exit status 2)."""

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        self.required_options = {}  # dest -> the spelling shown; checked after parsing (see add_argument)
        self.worded_helps = {}  # dest -> (action, help giving the default in words); see set_defaults
        super().__init__(dataclass_types or [], **kwargs)

    def add_argument(self, *names, **kwargs):
        """Each option once in --help, under its --kebab-case spelling; the other spellings (--snake_case, the HF
        example scripts' names) are accepted by a hidden twin of the option."""
        worded_help = kwargs.get("help")
        kwargs = {**kwargs, "help": help_with_one_default(worded_help, kwargs.get("default"))}
        long_names = [name for name in names if name.startswith("--")]
        if len(long_names) < 2:
            action = super().add_argument(*names, **kwargs)
        else:
            shown = one_spelling("/".join(long_names))  # only long names here: the documented one
            required = kwargs.pop("required", False)
            visible = [name for name in names if name == shown or not name.startswith("--")]
            action = super().add_argument(*visible, **kwargs, **({"default": None} if required else {}))
            if required:  # argparse would count an option given under another spelling as missing
                self.required_options[action.dest] = shown
            hidden = {**kwargs, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS, "dest": action.dest}
            super().add_argument(*[name for name in long_names if name != shown], **hidden)
        self.worded_helps[action.dest] = (action, worded_help)
        return action

    def set_defaults(self, **defaults):
        """A preset's defaults (sentmim benchmark) replace the default an option's help gives in words."""
        super().set_defaults(**defaults)
        for dest, value in defaults.items():
            if dest in self.worded_helps:
                action, worded_help = self.worded_helps[dest]
                action.help = help_with_one_default(worded_help, value)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        missing = [shown for dest, shown in self.required_options.items() if getattr(namespace, dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return namespace, extras

    def error(self, message):
        message = re.sub(r"argument ([-\w/]+):", lambda m: f"argument {one_spelling(m.group(1))}:", message)
        message = re.sub(r"invalid int value: ('[^']*')", r"\1 is not an integer", message)
        message = re.sub(r"invalid float value: ('[^']*')", r"\1 is not a number", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def help_with_one_default(help_text, default):
    """An option whose help ends with its default in words ("(default: 300)": what None stands for, e.g. the model
    config's value) would show a second, raw default after it. With default None the words stay and the raw None
    goes (a zero-width %(default) tells argparse the help shows it); a real default (a preset's) replaces them."""
    if not isinstance(help_text, str) or not re.search(r"\(default: [^)]*\)$", help_text):
        return help_text
    if default is None:
        return help_text + "%(default).0s"
    return re.sub(r"\s*\(default: [^)]*\)$", "", help_text)


def one_spelling(flags: str) -> str:
    """'--batch_size/--batch-size/--per_device_train_batch_size' -> '--batch-size' (the documented spelling);
    a short form stays beside it ('-n/--num-samples')."""
    names = flags.split("/")
    shorts = [name for name in names if not name.startswith("--")]
    long = next((name for name in names if name.startswith("--") and "_" not in name), None)
    return "/".join(shorts + [long]) if long else flags


def options_from(args: argparse.Namespace, cls):
    """A dataclass of sentmim.options built from the parsed arguments (its checks run here)."""
    return cls(**{item.name: getattr(args, item.name) for item in dataclasses.fields(cls)})


# -- train ----------------------------------------------------------------------------------------------------------

TRAIN_OPTIONS = (opts.DatasetOptions, opts.DataOptions, opts.TokenizerOptions, opts.ModelOptions, opts.TrainingOptions)


def run_train(args) -> None:
    from .assembly import train_from_options

    _, _, results = train_from_options(*(options_from(args, cls) for cls in TRAIN_OPTIONS))
    if is_main_process():
        print(f"trained {results['step']} steps; best validation loss {results['best_val_loss']}; "
              f"model in {args.output_dir}")


# -- evaluation and text tools ----------------------------------------------------------------------------------------

EVALUATE_OPTIONS = (opts.DatasetOptions, opts.EvaluationOptions, opts.LikelihoodOptions, opts.PlotOptions)


def run_evaluate(args) -> None:
    from .evaluate_folder import evaluate_folder
    from .files import write_json_atomic
    from .reporting import format_results

    dataset, evaluation, likelihood, plots = (options_from(args, cls) for cls in EVALUATE_OPTIONS)
    results = evaluate_folder(
        args.model_dir, dataset.dataset, dataset_config=dataset.dataset_config, split=dataset.split,
        text_column=dataset.text_column, batch_size=evaluation.batch_size, iw_samples=likelihood.iw_samples,
        max_sentences=evaluation.max_sentences, seed=evaluation.seed, plots_dir=plots.plots,
        progress=not evaluation.disable_tqdm, split_sentences=dataset.split_sentences,
        width_sentences=likelihood.width_sentences,
    )
    print(format_results(results))
    if evaluation.output:
        write_json_atomic(Path(evaluation.output), results)
        print(f"wrote {evaluation.output}")


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


def run_reconstruct(args) -> None:
    options = options_from(args, opts.ReconstructOptions)
    sentences = read_sentences(args)
    outputs = load_pipeline(args.model_dir).reconstruct(sentences, mode=options.mode, num_beams=options.num_beams)
    for source, output in zip(sentences, outputs, strict=True):
        print(f"input:  {source}\noutput: {output}\n")


def run_interpolate(args) -> None:
    options = options_from(args, opts.InterpolateOptions)
    sentences = load_pipeline(args.model_dir).interpolate(args.first, args.second, options.steps, options.method)
    for index, sentence in enumerate(sentences):
        print(f"{index:3d}  {sentence}")


def run_sample(args) -> None:
    options = options_from(args, opts.SampleOptions)
    pipe = load_pipeline(args.model_dir)
    for sentence in pipe.sample(options.num_samples, temperature=options.temperature, seed=options.seed,
                                prior=options.prior, repetition_penalty=options.repetition_penalty,
                                no_repeat_ngram_size=options.no_repeat_ngram_size):
        print(sentence)


def run_encode(args) -> None:
    import numpy as np

    options = options_from(args, opts.EncodeOptions)
    sentences = read_sentences(args)  # a bad --input fails before the model loads
    latents = load_pipeline(args.model_dir).encode(sentences).cpu().numpy().astype("float32")
    output = options.output if options.output.endswith(".npy") else f"{options.output}.npy"  # what np.save writes
    np.save(output, latents)
    print(f"wrote {latents.shape[0]} x {latents.shape[1]} posterior means to {output}")


# -- demo and benchmark ---------------------------------------------------------------------------------------------


def run_demo(args) -> None:
    from .apps.demo import DemoOptions
    from .apps.demo import run_demo as demo

    demo(options_from(args, DemoOptions))


def run_benchmark(args) -> None:
    from .apps.benchmark import run_benchmark_command

    run_benchmark_command(args)


# -- entry point ----------------------------------------------------------------------------------------------------


# Positional arguments of the commands that read a trained model.
POSITIONALS = {"model_dir": {"help": "a trained model folder"},
               "sentences": {"nargs": "*", "help": "sentences (or --input FILE)"},
               "first": {"help": "the first sentence"}, "second": {"help": "the second sentence"}}


def add_command(commands, name: str, handler, dataclasses_: tuple = (), help: str = "", positionals: tuple = ()):
    parser = commands.add_parser(name, dataclass_types=list(dataclasses_), help=help, description=help)
    parser.set_defaults(handler=handler)
    for argument in positionals:
        parser.add_argument(argument, **POSITIONALS[argument])
    return parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `sentmim`; `argv` picks the benchmark preset whose values are that command's defaults."""
    from .apps.benchmark import OPTION_CLASSES, add_benchmark_arguments, preset_of
    from .apps.demo import DemoOptions

    parser = Parser(prog="sentmim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_command(commands, "demo", run_demo, (DemoOptions,), "MIM vs VAE on the built-in corpus, minutes on a CPU")
    add_command(commands, "train", run_train, TRAIN_OPTIONS, "train or fine-tune a model on a dataset")
    evaluate = add_command(commands, "evaluate", run_evaluate, EVALUATE_OPTIONS,
                           "every metric of a model on a split (IW-NLL, ELBO, MI, BLEU, ...)", ("model_dir",))
    evaluate.set_defaults(split="test")
    add_command(commands, "reconstruct", run_reconstruct, (opts.TextInputOptions, opts.ReconstructOptions),
                "encode sentences and decode them back", ("model_dir", "sentences"))
    add_command(commands, "interpolate", run_interpolate, (opts.InterpolateOptions,),
                "decode points on the path between two sentences", ("model_dir", "first", "second"))
    add_command(commands, "sample", run_sample, (opts.SampleOptions,),
                "decode sentences from the prior or the aggregate posterior", ("model_dir",))
    add_command(commands, "encode", run_encode, (opts.TextInputOptions, opts.EncodeOptions),
                "write posterior means of sentences to a .npy file", ("model_dir", "sentences"))
    add_benchmark_arguments(add_command(
        commands, "benchmark", run_benchmark, OPTION_CLASSES,
        "sMIM vs text VAEs vs AE at several latent sizes: posterior collapse side by side",
    ), preset_of(sys.argv[1:] if argv is None else argv))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exit_request:  # --help (0) or an argument error, already printed on one line (2)
        return exit_request.code
    main_process = is_main_process()
    configure_console(verbose=args.verbose, debug=args.debug, progress=not getattr(args, "disable_tqdm", False),
                      main_process=main_process)
    try:
        args.handler(args)
    except opts.OptionError as error:  # a value out of range, stated as argparse states a bad type
        print(f"sentmim {args.command}: error: {error.flag_message()}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if args.debug:
            raise
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
