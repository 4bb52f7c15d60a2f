"""Benchmark: sentenceMIM against the text VAE and an auto-encoder, posterior collapse measured side by side.

    settings = benchmark_settings("cpu", latent_sizes=(16, 128))   # a preset; any field can be overridden
    results = run_benchmark(settings, "runs/bench-ptb")               # trains, evaluates, writes the report

Every model is trained on the same data with one tokenizer (so vocabularies, hence likelihoods, match), one
architecture and one budget (steps, batch, learning rate, sizes, seed); only the objective changes:

    mim            sMIM: the sentenceMIM objective (it has no hyper-parameters)
    vae            sVAE with beta = 1 from the first step: the classic collapse
    vae-logistic   sVAE with beta annealed along a logistic curve (Bowman et al.; the sentenceMIM demo's k and x0)
    vae-cyclical   sVAE with cyclical annealing (Fu et al. 2019) plus free bits (a per-dimension KL floor)
    ae             a deterministic auto-encoder (z = posterior mean)

each at several latent sizes. Training is `sentmim.assembly.train_from_options`, the code behind `sentmim train`; each
best model is scored on the test split by `sentmim.evaluation.evaluate` (every metric of docs/metrics.md).

What output_dir receives:
    results.json, results.md   every metric per model with the settings, command, machine and timings; the table
    samples.md                 reconstructions of the same test sentences by every model, and interpolations
    plots/                     KL and MI during training, active units and BLEU against latent size, and a PCA
                               projection of each model's posterior means (latent_<model>.png)
    models/<variant>-z<latent>/   each run's folder: best model + tokenizer, log.jsonl, checkpoints
    settings.json              the settings the models were trained with

The report (tables, samples, plots) is written by sentmim.benchmark_report.

Resumable: rerun the same command and the models whose models/<name>/benchmark_result.json exists are skipped,
a run interrupted during training continues from its last checkpoint, and settings.json refuses to mix settings.

Parallel: num_workers > 1 trains that many models at once, one process each (spawned, given the loaded data once).
On a CPU this is how small models use every core: the cpu preset's 15 models x 2,000 steps took 35.5 min with
two workers (benchmarks/vae_collapse/). Results equal those of a run in one process (tests/test_benchmark_vae.py).
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import time
import typing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from . import checkpointing, run_folder
from .assembly import build_tokenizer, load_training_splits, train_from_options
from .benchmark_report import summary_line, write_plots, write_report
from .configuration import SentenceMIMConfig
from .console import library_progress_bars
from .evaluate_folder import load_eval_batches
from .evaluation import encode_split, evaluate
from .files import TMP_PREFIX, read_json, write_json_atomic
from .options import DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from .pipeline import SentenceMIMPipeline
from .plots import plot_latent_projection

MODEL_VARIANTS = {
    "mim": "sMIM",
    "vae": "sVAE, beta = 1",
    "vae-logistic": "sVAE, logistic KL annealing",
    "vae-cyclical": "sVAE, cyclical KL annealing + free bits",
    "ae": "AE",
}
RESULT_FILE = "benchmark_result.json"
# What a benchmark writes in its folder; each model folder is a training run's (plus its scores).
BENCHMARK_LAYOUT = {
    "settings.json": None, "results.json": None, "results.md": None, "samples.md": None, "plots": {"*.png": None},
    "models": {"*": {**run_folder.RUN_LAYOUT, RESULT_FILE: None, f".{RESULT_FILE}.*.tmp": None}},
    f"{TMP_PREFIX}*": None, ".results.json.*.tmp": None, ".settings.json.*.tmp": None,  # files being written
}
# Settings that pick which models run or how fast, not what a model is: they may change between resumed runs.
SELECTION_FIELDS = ("objectives", "latent_sizes", "num_threads", "num_workers", "cpu")
# The sentenceMIM demo's logistic schedule: beta(0) = 1 / (1 + exp(k * x0)) with k * x0 = 0.0025 * 2500.
LOGISTIC_K_TIMES_X0 = 0.0025 * 2500


@dataclass
class BenchmarkSettings:
    """Everything a benchmark run depends on. None in a schedule field means "scale it to max_steps"."""

    dataset: str = field(default="builtin", metadata={"help": "'builtin', a Hub id, a local file or folder"})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub configuration name"})
    text_column: str | None = field(default=None, metadata={"help": "default: 'text' or the only string column"})
    max_length: int = field(default=64, metadata={"help": "longest training sentence in tokens, BOS/EOS included"})
    vocab_size: int = field(default=10000, metadata={"help": "word-level tokenizer shared by every model"})
    max_validation_sentences: int | None = field(
        default=None, metadata={"help": "validate on the first N validation sentences (validation runs at every eval)"}
    )
    test_split: str = field(default="test", metadata={"help": "split the best models are scored on"})
    max_eval_sentences: int | None = field(default=None, metadata={"help": "score the first N test sentences"})
    objectives: tuple[str, ...] = field(
        default=tuple(MODEL_VARIANTS), metadata={"help": f"models to train, from {', '.join(MODEL_VARIANTS)}"}
    )
    latent_sizes: tuple[int, ...] = field(default=(16, 128, 512), metadata={"help": "latent sizes, e.g. 16,128,512"})
    architecture: str = field(default="gru", metadata={"help": "gru or transformer"})
    embedding_size: int = 300
    hidden_size: int = 512
    num_layers: int = 1
    tie_word_embeddings: bool = field(default=False, metadata={"help": "tie the output layer to the embedding"})
    reverse_input: bool = field(default=False, metadata={"help": "the GRU encoder reads sentences backwards"})
    dropout: float = 0.0
    embedding_dropout: float = field(default=0.0, metadata={"help": "dropout on the decoder's input embeddings"})
    word_dropout: float = field(default=0.0, metadata={"help": "decoder input words replaced by UNK (rate)"})
    kl_logistic_k: float | None = field(default=0.0025, metadata={"help": "vae-logistic slope (none: 6.25 / x0)"})
    kl_logistic_x0: int | None = field(default=2500, metadata={"help": "vae-logistic midpoint step (none: steps/2)"})
    kl_cycle_steps: int | None = field(default=10000, metadata={"help": "vae-cyclical cycle length (none: steps/4)"})
    kl_cycle_ratio: float = field(default=0.5, metadata={"help": "fraction of a cycle during which beta rises"})
    free_bits: float = field(default=0.5, metadata={"help": "vae-cyclical KL floor per latent dimension (nats)"})
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_grad_norm: float = field(default=5.0, metadata={"help": "gradient norm clipping threshold"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps (overrides epochs)"})
    epochs: float = 1.0
    lr_scheduler: str = field(default="constant", metadata={"help": "constant, cosine or plateau (x0.25 on stall)"})
    early_stopping_patience: int = field(default=0, metadata={"help": "evaluations without improvement; 0: never"})
    eval_steps: int = field(default=500, metadata={"help": "validate (and keep the best model) every N steps"})
    logging_steps: int = 50
    eval_batch_size: int = 128
    iw_samples: int = field(default=500, metadata={"help": "importance samples K of IW-NLL"})
    num_examples: int = field(default=5, metadata={"help": "test sentences reconstructed in samples.md"})
    interpolation_steps: int = 6
    seed: int = 0
    num_threads: int | None = field(default=None, metadata={"help": "torch threads (1 is fastest for small models)"})
    num_workers: int = field(
        default=1, metadata={"help": "models trained at once, each in its own process (CPU: one per core, 1 thread)"}
    )
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even when a GPU is present"})

    def __post_init__(self):
        self.objectives, self.latent_sizes = tuple(self.objectives), tuple(self.latent_sizes)
        unknown = [name for name in self.objectives if name not in MODEL_VARIANTS]
        if unknown or not self.objectives:
            raise ValueError(f"objectives {list(self.objectives)}: choose from {', '.join(MODEL_VARIANTS)}")
        if not self.latent_sizes or min(self.latent_sizes) < 1:
            raise ValueError(f"latent_sizes {list(self.latent_sizes)}: need integers >= 1")
        if self.num_workers < 1:
            raise ValueError(f"num_workers {self.num_workers}: need an integer >= 1")
        # Schedules left as None follow the budget, so a shorter or longer run keeps the same annealing shape.
        if None in (self.kl_logistic_x0, self.kl_logistic_k, self.kl_cycle_steps) and self.max_steps is None:
            raise ValueError("schedules scaled to the budget (kl_* = none) need max_steps")
        if self.kl_logistic_x0 is None:
            self.kl_logistic_x0 = max(1, self.max_steps // 2)
        if self.kl_logistic_k is None:
            self.kl_logistic_k = LOGISTIC_K_TIMES_X0 / self.kl_logistic_x0
        if self.kl_cycle_steps is None:
            self.kl_cycle_steps = max(1, self.max_steps // 4)  # four cycles, as Fu et al.


PRESETS = {
    # Tiny and quick: the integration test (about a minute on 2 cores), on the built-in corpus.
    "smoke": dict(
        dataset="builtin", max_length=24, vocab_size=800, max_validation_sentences=64, max_eval_sentences=48,
        latent_sizes=(4, 8), embedding_size=16, hidden_size=32, batch_size=16, learning_rate=2e-3, max_steps=12,
        eval_steps=6, logging_steps=3, kl_logistic_k=None, kl_logistic_x0=None, kl_cycle_steps=None,
        eval_batch_size=48, iw_samples=4, num_examples=2, interpolation_steps=3, num_threads=1,
    ),
    # PTB on a 2-core CPU in about 45 minutes for 5 objectives x 3 latent sizes, scoring included: two models at a
    # time, one per core at one thread (~0.15 s/step each on a 2.8 GHz Xeon), 2,000 steps (about one epoch at
    # batch 20) plus ~30 s of scoring per model. sMIM's decoder needs thousands of steps to read its posterior
    # means (benchmarks/vae_collapse/): this is a budget comparison, not a converged model (see the paper
    # preset). The annealing schedules are the demo's shapes compressed into the budget.
    "cpu": dict(
        dataset="../shared/data/ptb", max_length=64, max_validation_sentences=500, max_eval_sentences=500,
        embedding_size=128, hidden_size=256, tie_word_embeddings=True, batch_size=20, learning_rate=2e-3,
        max_steps=2000, eval_steps=400, logging_steps=50, kl_logistic_k=None, kl_logistic_x0=None,
        kl_cycle_steps=None, iw_samples=10, num_threads=1, num_workers=2,
    ),
    # The sentenceMIM demo's configuration (a GPU job): GRU 512, embedding 300, batch 20, Adam 1e-3, up to 200
    # epochs with the learning rate x0.25 on plateau and early stopping (so runs may stop at different steps);
    # like the demo's published runs: dropout 0.5 on the decoder's input embeddings, the encoder reading each
    # sentence backwards, gradients clipped at norm 0.25.
    "paper": dict(
        dataset="../shared/data/ptb", max_length=100, embedding_size=300, hidden_size=512, batch_size=20,
        learning_rate=1e-3, epochs=200, lr_scheduler="plateau", early_stopping_patience=5, eval_steps=2100,
        logging_steps=100, kl_logistic_k=0.0025, kl_logistic_x0=2500, kl_cycle_steps=10000, iw_samples=500,
        eval_batch_size=64, embedding_dropout=0.5, reverse_input=True, max_grad_norm=0.25,
    ),
}


def benchmark_settings(preset: str = "cpu", **overrides) -> BenchmarkSettings:
    """The preset's settings with `overrides` (BenchmarkSettings field names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: choose from {', '.join(PRESETS)}")
    unknown = set(overrides) - {item.name for item in fields(BenchmarkSettings)}
    if unknown:
        raise ValueError(f"unknown benchmark settings: {', '.join(sorted(unknown))}")
    return BenchmarkSettings(**{**PRESETS[preset], **overrides})


def add_settings_arguments(parser, flags_for) -> None:
    """One command-line option per BenchmarkSettings field; `flags_for(field name)` gives its spellings. Options
    left out do not appear in the parsed namespace, so the preset's value stands (see `settings_overrides`)."""
    for item in fields(BenchmarkSettings):
        many = typing.get_origin(item.type) is tuple
        flag = item.type is bool
        parser.add_argument(
            *flags_for(item.name), dest=item.name, default=argparse.SUPPRESS,
            nargs="+" if many else ("?" if flag else None), const="true" if flag else None,
            help=item.metadata.get("help"),
        )


def settings_overrides(namespace) -> dict:
    """The settings given on a command line parsed with `add_settings_arguments`, as typed values."""
    names = {item.name for item in fields(BenchmarkSettings)}
    given = {name: value for name, value in vars(namespace).items() if name in names}
    overrides = {}
    for name, value in given.items():
        text = " ".join(value) if isinstance(value, list) else value
        try:
            overrides[name] = parse_setting(name, text)
        except ValueError as error:  # int("x") says nothing about which option was wrong
            raise ValueError(f"{name} {text!r}: {error}") from None
    return overrides


def parse_setting(name: str, text: str):
    """A command-line string as the value of setting `name`: numbers, 'none', true/false, comma lists."""
    annotation = next(item.type for item in fields(BenchmarkSettings) if item.name == name)
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and text.lower() == "none":
        return None
    if typing.get_origin(annotation) is tuple:
        item_type = typing.get_args(annotation)[0]
        return tuple(item_type(part) for part in text.replace(",", " ").split())
    if kinds[0] is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name}={text!r}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    return kinds[0](text)


def add_benchmark_arguments(parser) -> None:
    """The `sentmim benchmark` command line: a preset, the output folder, and any setting to override."""
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                        help="smoke: tiny test run; cpu: PTB in ~45 min on 2 cores; paper: the sentenceMIM demo's "
                        "(GPU)")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True,
                        help="the benchmark's folder (rerun the same command to continue)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the earlier benchmark's files in output-dir and start over (refuses a folder "
                        "holding others)")
    parser.add_argument("--disable-tqdm", "--disable_tqdm", dest="disable_tqdm", action="store_true",
                        help="no progress bars")
    settings = parser.add_argument_group("settings (default: the preset's; lists as '16 128 512' or '16,128,512')")
    add_settings_arguments(settings, lambda name: list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])))


def run_benchmark_command(args) -> None:
    import shlex

    from .benchmark_report import format_results_table

    overrides = settings_overrides(args)
    # The command as it would be typed, for the report (sys.argv is not ours when main() is called in-process).
    words = ["sentmim", "benchmark", "--preset", args.preset, "--output-dir", args.output_dir]
    for name in overrides:
        value = getattr(args, name)
        words += [f"--{name.replace('_', '-')}", *(value if isinstance(value, list) else [value])]
    results = run_benchmark(benchmark_settings(args.preset, **overrides), args.output_dir, preset=args.preset,
                            command=shlex.join(words), overwrite=args.overwrite, progress=not args.disable_tqdm)
    print(format_results_table(results["models"]))


# ---------------------------------------------------------------------------------------------------------------------
# One model: train, then score on the test split
# ---------------------------------------------------------------------------------------------------------------------


def model_name(variant: str, latent_size: int) -> str:
    return f"{variant}-z{latent_size}"


def model_options(settings: BenchmarkSettings, variant: str, latent_size: int) -> ModelOptions:
    """The model of one run: the shared architecture with the variant's objective."""
    objective = "vae" if variant.startswith("vae") else variant
    return ModelOptions(
        objective=objective, architecture=settings.architecture, embedding_size=settings.embedding_size,
        hidden_size=settings.hidden_size, num_layers=settings.num_layers,
        tie_word_embeddings=settings.tie_word_embeddings, dropout=settings.dropout,
        embedding_dropout=settings.embedding_dropout, word_dropout=settings.word_dropout,
        reverse_input=settings.reverse_input, latent_size=latent_size,
    )


def variant_schedule(settings: BenchmarkSettings, variant: str) -> dict:
    """The training options a variant changes: its KL schedule and free bits."""
    return {
        "vae-logistic": dict(kl_schedule="logistic", kl_logistic_k=settings.kl_logistic_k,
                             kl_logistic_x0=settings.kl_logistic_x0),
        "vae-cyclical": dict(kl_schedule="cyclical", kl_cycle_steps=settings.kl_cycle_steps,
                             kl_cycle_ratio=settings.kl_cycle_ratio, free_bits=settings.free_bits),
    }.get(variant, {})


def dataset_options(settings: BenchmarkSettings) -> tuple[DatasetOptions, DataOptions, TokenizerOptions]:
    return (DatasetOptions(dataset=settings.dataset, dataset_config=settings.dataset_config,
                           text_column=settings.text_column),
            DataOptions(max_length=settings.max_length), TokenizerOptions(vocab_size=settings.vocab_size))


def load_benchmark_data(settings: BenchmarkSettings):
    """(train/validation splits, the shared tokenizer, the test split), loaded once for all models."""
    dataset, data, tokenizer_options = dataset_options(settings)
    splits = load_training_splits(dataset, data, settings.seed)
    if settings.test_split not in splits:
        found = ", ".join(splits)
        raise ValueError(f"{settings.dataset}: no {settings.test_split!r} split to score on (found {found})")

    def first(split, count):
        return split if count is None else split.select(range(min(count, len(split))))

    test_split = first(splits[settings.test_split], settings.max_eval_sentences)
    training_splits = type(splits)({"train": splits["train"]})
    if "validation" in splits:
        training_splits["validation"] = first(splits["validation"], settings.max_validation_sentences)
    tokenizer = build_tokenizer(data, tokenizer_options, ModelOptions(), splits["train"]["text"], output_dir=None,
                                resume=False)
    return training_splits, tokenizer, test_split


def training_options(settings: BenchmarkSettings, variant: str, folder: Path, resume: bool,
                     progress: bool) -> TrainingOptions:
    return TrainingOptions(
        output_dir=str(folder), batch_size=settings.batch_size, eval_batch_size=settings.eval_batch_size,
        max_steps=settings.max_steps, epochs=settings.epochs, learning_rate=settings.learning_rate,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler=settings.lr_scheduler, early_stopping_patience=settings.early_stopping_patience,
        eval_steps=settings.eval_steps, logging_steps=settings.logging_steps, seed=settings.seed, resume=resume,
        overwrite=not resume, cpu=settings.cpu, disable_tqdm=not progress, **variant_schedule(settings, variant),
    )


def check_settings(settings: BenchmarkSettings) -> None:
    """Build every model's options once, so that a value out of range is refused before anything is written."""
    dataset_options(settings)
    for variant in settings.objectives:
        training_options(settings, variant, Path("."), resume=False, progress=False)
        config_fields = model_options(settings, variant, settings.latent_sizes[0]).config_fields()
        SentenceMIMConfig(**config_fields)


def train_model(settings, variant, latent_size, folder: Path, splits, tokenizer, resume: bool, progress: bool) -> dict:
    """Train one model into `folder`, or continue it from its last checkpoint; returns its train_results.json."""
    dataset, data, tokenizer_options = dataset_options(settings)
    training = training_options(settings, variant, folder, resume, progress)
    with library_progress_bars(progress):
        # A resumed run rebuilds from its own saved tokenizer (the same vocabulary, trained on the same data).
        train_from_options(dataset, data, tokenizer_options, model_options(settings, variant, latent_size), training,
                           splits=splits, tokenizer=None if resume else tokenizer)
    return read_json(folder / "train_results.json")


def evaluate_model(settings, folder: Path, test_split, plot_path: Path, progress: bool) -> dict:
    """Every metric (docs/metrics.md) of the saved best model, its latent projection plot and text samples."""
    device = "cuda" if torch.cuda.is_available() and not settings.cpu else None  # score where training ran
    with library_progress_bars(progress):
        pipe = SentenceMIMPipeline.from_pretrained(folder, device=device)
        batches, stats = load_eval_batches(pipe.tokenizer, test_split, settings.eval_batch_size, pipe.max_length)
    scores = evaluate(pipe.model, batches, pipe.tokenizer, iw_samples=settings.iw_samples, seed=settings.seed,
                      progress=progress)
    scores["num_truncated"] = stats["num_truncated"]
    encoded = encode_split(pipe.model, batches, likelihood=False)  # the projection needs no decoder pass
    plot_latent_projection(encoded["mean"], labels=encoded["num_targets"].numpy(), path=plot_path,
                           label_name="sentence length (words + EOS)", seed=settings.seed)
    examples = test_split["text"][: max(settings.num_examples, 2)]
    shown = examples[: settings.num_examples]
    outputs = pipe.reconstruct(shown) if shown else []
    first, second = examples[0], examples[1]
    samples = {
        "reconstructions": [{"input": text, "output": output} for text, output in zip(shown, outputs, strict=True)],
        "interpolation": {"from": first, "to": second,
                          "sentences": pipe.interpolate(first, second, steps=settings.interpolation_steps)},
    }
    vocabulary = sorted(pipe.tokenizer.get_vocab().items())
    return {"metrics": scores, "samples": samples,
            "vocabulary_hash": hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest()[:12],
            "num_parameters": sum(p.numel() for p in pipe.model.parameters())}


# ---------------------------------------------------------------------------------------------------------------------
# The run over all models
# ---------------------------------------------------------------------------------------------------------------------


def settings_fingerprint(settings: BenchmarkSettings) -> dict:
    """The settings that define what a model is (JSON-normalised, so it compares equal to its saved copy)."""
    kept = {name: value for name, value in asdict(settings).items() if name not in SELECTION_FIELDS}
    return json.loads(json.dumps(kept))


def prepare_benchmark_dir(output_dir: Path, settings: BenchmarkSettings, overwrite: bool) -> None:
    """Start or continue a benchmark in output_dir; refuse a folder that holds other settings or other files.

    overwrite deletes an earlier benchmark's files (BENCHMARK_LAYOUT), and only those: a folder that holds anything
    else, or the dataset being read, is refused with nothing deleted."""
    run_folder.check_writable(output_dir)
    saved_path = output_dir / "settings.json"
    if overwrite:
        run_folder.check_overwrite(output_dir, BENCHMARK_LAYOUT, settings.dataset, marked=is_benchmark(output_dir))
        if output_dir.is_dir():
            for model_dir in (output_dir / "models").glob("*"):
                run_folder.check_not_locked(model_dir)  # a model still being trained by another benchmark
            run_folder.clear(output_dir, BENCHMARK_LAYOUT)
    wanted = settings_fingerprint(settings)
    if saved_path.is_file():
        # A setting added after the folder was written counts as its default (the value that run used).
        defaults = settings_fingerprint(BenchmarkSettings())
        saved = {**defaults, **read_json(saved_path)}
        changed = [f"{name}: {saved.get(name)!r} -> {value!r}" for name, value in wanted.items()
                   if saved.get(name) != value]
        if changed:
            raise ValueError(
                f"{output_dir} holds a benchmark with other settings ({'; '.join(changed)}): use another output dir, "
                "or overwrite it"
            )
    elif output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} already holds files that are not a benchmark: use an empty or new folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved_path, wanted)


def is_benchmark(output_dir: Path) -> bool:
    """Whether output_dir holds a benchmark: its settings.json is one this module wrote."""
    try:
        saved = read_json(output_dir / "settings.json")
    except (OSError, ValueError):
        return False
    names = {item.name for item in fields(BenchmarkSettings)}
    return isinstance(saved, dict) and "dataset" in saved and set(saved) <= names


def machine_info() -> dict:
    cpu_name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu_name = names[0] if names else cpu_name
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu_name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def benchmark_model(settings, variant: str, latent_size: int, output_dir: Path, data, progress: bool, log) -> dict:
    """Train (or finish training) one model and score it; returns its record, also saved in its folder."""
    name = model_name(variant, latent_size)
    folder = output_dir / "models" / name
    splits, tokenizer, test_split = data
    began = time.time()
    if (folder / "train_results.json").is_file():  # the benchmark stopped between training and scoring
        log(f"{name}: trained earlier, not scored yet")
        train_results = read_json(folder / "train_results.json")
    else:
        resume = checkpointing.latest_checkpoint(folder / "checkpoints") is not None
        log(f"{name}: {'resuming' if resume else 'training'} ({MODEL_VARIANTS[variant]}, latent {latent_size})")
        train_results = train_model(settings, variant, latent_size, folder, splits, tokenizer, resume, progress)
    log(f"{name}: scoring the best model on {len(test_split)} {settings.test_split} sentences")
    scored = time.time()
    record = {
        "name": name, "variant": variant, "label": MODEL_VARIANTS[variant], "latent_size": latent_size,
        "model_dir": str(folder.relative_to(output_dir)), "train": train_results,
        **evaluate_model(settings, folder, test_split, output_dir / "plots" / f"latent_{name}.png", progress),
    }
    record["eval_seconds"] = round(time.time() - scored, 1)
    record["wall_seconds"] = round(time.time() - began, 1)
    write_json_atomic(folder / RESULT_FILE, record)
    return record


def run_benchmark(
    settings: BenchmarkSettings, output_dir, preset: str | None = None, command: str | None = None,
    overwrite: bool = False, progress: bool = True, log=print,
) -> dict:
    """Train and score every (objective, latent size) pair, writing the report after each model. Returns
    the content of results.json."""
    output_dir = Path(output_dir)
    check_settings(settings)
    prepare_benchmark_dir(output_dir, settings, overwrite)
    started = time.time()
    header = {"benchmark": "sentenceMIM vs text VAE vs AE: posterior collapse side by side", "preset": preset,
              "command": command, "settings": asdict(settings), "machine": machine_info(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    todo = [(variant, size) for size in settings.latent_sizes for variant in settings.objectives]
    records: dict[int, dict] = {}
    pending = []
    for index, (variant, latent_size) in enumerate(todo):
        result_file = output_dir / "models" / model_name(variant, latent_size) / RESULT_FILE
        if result_file.is_file():
            records[index] = read_json(result_file)
            log(f"[{index + 1}/{len(todo)}] {model_name(variant, latent_size)}: already done, skipped")
        else:
            pending.append((index, variant, latent_size))
    if pending:  # data is loaded only when some model still needs it: a finished benchmark reruns in seconds
        log(f"loading {settings.dataset} and training its tokenizer (shared by every model)")
        with library_progress_bars(progress):
            data = load_benchmark_data(settings)
        run = run_in_workers if settings.num_workers > 1 and len(pending) > 1 else run_in_this_process
        for index, record in run(settings, pending, len(todo), output_dir, data, progress, log):
            records[index] = record
            log(f"[{index + 1}/{len(todo)}] {record['name']}: {summary_line(record)}")
            write_report(output_dir, {**header, "models": ordered(records)})  # a partial report survives a stop
    results = {**header, "models": ordered(records), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "wall_seconds": round(time.time() - started, 1)}
    write_report(output_dir, results)
    write_plots(output_dir, results)
    log(f"wrote {output_dir / 'results.md'}, results.json, samples.md and plots/ in {results['wall_seconds']:.0f} s")
    return results


def ordered(records: dict[int, dict]) -> list[dict]:
    return [records[index] for index in sorted(records)]


def run_in_this_process(settings, pending, total, output_dir, data, progress, log):
    """Yields (position, record) of each pending model, trained and scored one after the other."""
    threads = torch.get_num_threads()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)  # small models: more threads only oversubscribe the cores
    try:
        for index, variant, latent_size in pending:
            def model_log(message, index=index):
                log(f"[{index + 1}/{total}] {message}")

            yield index, benchmark_model(settings, variant, latent_size, output_dir, data, progress, model_log)
    finally:
        torch.set_num_threads(threads)


def run_in_workers(settings, pending, total, output_dir, data, progress, log):
    """Yields (position, record) of each pending model as it finishes, num_workers models at a time, one process
    each. The workers get the loaded data once, at start; their own progress goes to their stdout/stderr, prefixed
    with the model's position (their progress bars are off: several would overwrite each other)."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its thread pools
    workers = min(settings.num_workers, len(pending))
    log(f"training {len(pending)} models, {workers} at a time")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(settings, output_dir, data)) as pool:
        jobs = {pool.submit(_worker_benchmark_model, index, total, variant, latent_size): index
                for index, variant, latent_size in pending}
        for job in as_completed(jobs):
            yield jobs[job], job.result()  # a failed model fails the benchmark, as it does in one process


_worker_state: dict = {}


def _start_worker(settings: BenchmarkSettings, output_dir: Path, data) -> None:
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    _worker_state.update(settings=settings, output_dir=output_dir, data=data)


def _worker_benchmark_model(index: int, total: int, variant: str, latent_size: int) -> dict:
    def model_log(message):
        print(f"[{index + 1}/{total}] {message}", flush=True)

    state = _worker_state
    return benchmark_model(state["settings"], variant, latent_size, state["output_dir"], state["data"],
                           progress=False, log=model_log)
