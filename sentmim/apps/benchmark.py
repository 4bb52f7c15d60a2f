"""Benchmark: sentenceMIM against the text VAE and an auto-encoder, posterior collapse measured side by side.

    settings = benchmark_settings("cpu", output_dir="runs/bench-ptb", latent_sizes=[16, 128])  # a preset + changes
    results = run_benchmark(settings)                                  # trains, evaluates, writes the report

Every model is trained on the same data with one tokenizer (so vocabularies, hence likelihoods, match), one
architecture and one budget (steps, batch, learning rate, sizes, seed); only the objective changes:

    mim            sMIM: the sentenceMIM objective as the paper has it (no hyper-parameters)
    mim-warmup     sMIM + warm-up: the prior terms' weight rises from 0 to 1 over --mim-warmup-steps, then the
                   paper's objective (docs/objectives.md)
    vae            sVAE with beta = 1 from the first step: the classic collapse
    vae-logistic   sVAE with beta annealed along a logistic curve (Bowman et al.; the sentenceMIM demo's k and x0)
    vae-cyclical   sVAE with cyclical annealing (Fu et al. 2019) plus free bits (a per-dimension KL floor)
    ae             a deterministic auto-encoder (z = posterior mean)

each at several latent sizes. Training is `sentmim.assembly.train_from_options`, the code behind `sentmim train`; each
best model is scored on the test split by `sentmim.evaluation.evaluate` (every metric of docs/metrics.md; the widened
IW proposal's width is chosen on the validation split), and its samples from the standard prior N(0, I) and from
the aggregate posterior fitted after training are scored by `sentmim.sample_quality` under a reference language
model: a plain GRU LM of the same sizes trained once, on the same training split with the same tokenizer and
budget, kept at its best validation perplexity (`sentmim.language_model`).

The options are sentmim train's plus the benchmark's own (sentmim.apps.benchmark_settings, with the presets).
What --output-dir receives:
    results.json, results.md   every metric per model with the settings, command, machine and timings; the tables
    samples.md                 reconstructions of the same test sentences by every model, interpolations, samples
    reference_lm/              the language model that scores the samples (and its test perplexity)
    plots/                     KL and MI during training, active units and BLEU against latent size, and a PCA
                               projection of each model's posterior means (latent_<model>.png)
    models/<variant>-z<latent>/   each run's folder: best model + tokenizer, log.jsonl, checkpoints
    settings.json              the settings the models were trained with

The report (tables, samples, plots) is written by sentmim.apps.benchmark_report.

Resumable: rerun the same command and the models whose models/<name>/benchmark_result.json exists are skipped,
a run interrupted during training continues from its last checkpoint, and settings.json refuses to mix settings.

Parallel: num_workers > 1 trains that many models at once, one process each (spawned, given the loaded data once).
On a CPU this is how small models use every core: the cpu preset's 15 models x 2,000 steps took 35.5 min with
two workers (benchmarks/vae_collapse/). Results equal those of a run in one process (tests/test_benchmark_vae.py).
"""

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from sentmim import checkpointing, run_folder
from sentmim.assembly import build_tokenizer, load_training_splits, train_from_options
from sentmim.batching import make_dataloader
from sentmim.configuration import SentenceMIMConfig
from sentmim.console import configure_console, library_progress_bars
from sentmim.evaluate_folder import load_eval_batches
from sentmim.evaluation import encode_split, evaluate, reconstruct_split
from sentmim.files import TMP_PREFIX, read_json, write_json_atomic
from sentmim.language_model import CONFIG_FILE, WEIGHTS_FILE, GRULanguageModel, perplexity_on, train_language_model
from sentmim.metrics import corpus_bleu
from sentmim.options import ModelOptions
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.plots import plot_latent_projection
from sentmim.preprocessing import tokenize_dataset
from sentmim.sample_quality import sample_quality
from sentmim.tokenization import decode_keep_unknown

from .benchmark_report import summary_line, write_plots, write_report
from .benchmark_settings import (
    DEFAULTS,
    MODEL_VARIANTS,
    OPTION_CLASSES,
    PRESETS,
    SELECTION_FIELDS,
    BenchmarkSettings,
    benchmark_settings,
    field_default,
)

RESULT_FILE = "benchmark_result.json"
# What a benchmark writes in its folder; each model folder is a training run's (plus its scores).
BENCHMARK_LAYOUT = {
    "settings.json": None, "results.json": None, "results.md": None, "samples.md": None, "plots": {"*.png": None},
    "reference_lm": {WEIGHTS_FILE: None, CONFIG_FILE: None, f"{TMP_PREFIX}*": None, f".{CONFIG_FILE}.*.tmp": None},
    "models": {"*": {**run_folder.RUN_LAYOUT, RESULT_FILE: None, f".{RESULT_FILE}.*.tmp": None}},
    f"{TMP_PREFIX}*": None, ".results.json.*.tmp": None, ".settings.json.*.tmp": None,  # files being written
}


def preset_of(argv: list[str]) -> str:
    """The --preset of a benchmark command line (its options' defaults depend on it)."""
    for index, word in enumerate(argv):
        if word == "--preset" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--preset="):
            return word.split("=", 1)[1]
    return "cpu"


def add_benchmark_arguments(parser, preset: str) -> None:
    """The `sentmim benchmark` command line, on a parser of OPTION_CLASSES (every option of sentmim.options plus
    the benchmark's): the preset, whose values become the defaults (so --help shows them)."""
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                        help="smoke: tiny test run; cpu: PTB in ~45 min on 2 cores; cpu-transformer: the same with "
                             "Transformers; paper: the sentenceMIM demo's (GPU). Sets the other options' defaults")
    if preset in PRESETS:
        parser.set_defaults(**{**DEFAULTS, **PRESETS[preset]})


def run_benchmark_command(args) -> None:
    import shlex

    from .benchmark_report import format_results_table

    values = {item.name: getattr(args, item.name) for options in OPTION_CLASSES
              for item in dataclasses.fields(options)}
    settings = benchmark_settings(args.preset, **values)
    # The command as it would be typed, for the report: the options that differ from the preset's.
    defaults = benchmark_settings(args.preset, output_dir=args.output_dir).flat()
    words = ["sentmim", "benchmark", "--preset", args.preset, "--output-dir", args.output_dir]
    for name, value in settings.flat().items():
        if value != defaults[name] and value is not None:  # (None: a preset's size that a --backbone replaces)
            words += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    results = run_benchmark(settings, preset=args.preset, command=shlex.join(words))
    print(format_results_table(results["models"]))


# ---------------------------------------------------------------------------------------------------------------------
# One model: train, then score on the test split
# ---------------------------------------------------------------------------------------------------------------------


def model_name(variant: str, latent_size: int) -> str:
    return f"{variant}-z{latent_size}"


def variant_label(settings: BenchmarkSettings, variant: str) -> str:
    """The variant's name in the tables; the warm-up's carries its length."""
    if variant == "mim-warmup":
        return f"{MODEL_VARIANTS[variant]} ({settings.training.mim_warmup_steps} steps)"
    return MODEL_VARIANTS[variant]


def model_options(settings: BenchmarkSettings, variant: str, latent_size: int) -> ModelOptions:
    """The model of one run: the shared architecture with the variant's objective and the latent size."""
    objective = variant.split("-")[0]  # mim-warmup -> mim, vae-logistic -> vae
    return dataclasses.replace(settings.model, objective=objective, latent_size=latent_size)


def training_options(settings: BenchmarkSettings, variant: str, folder: Path, resume: bool):
    """The budget of one run, with the variant's schedule; it trains (or continues) in `folder`."""
    return dataclasses.replace(settings.training, output_dir=str(folder), resume=resume, overwrite=not resume,
                               **settings.schedule_of(variant))


def load_benchmark_data(settings: BenchmarkSettings):
    """(train/validation splits, the shared tokenizer, the test split), loaded once for all models."""
    dataset, data, test = settings.dataset, settings.data, settings.test
    splits = load_training_splits(dataset, data, settings.training.seed)
    if test.test_split not in splits:
        raise ValueError(f"{dataset.dataset}: no {test.test_split!r} split to score on (found {', '.join(splits)})")

    def first(split, count):
        return split if count is None else split.select(range(min(count, len(split))))

    test_split = first(splits[test.test_split], test.max_eval_sentences)
    training_splits = type(splits)({"train": splits["train"]})
    if "validation" in splits:
        training_splits["validation"] = first(splits["validation"], data.max_validation_sentences)
    tokenizer = build_tokenizer(data, settings.tokenizer, ModelOptions(backbone=settings.model.backbone),
                                splits["train"]["text"], output_dir=None, resume=False)
    return training_splits, tokenizer, test_split


def shared_architecture(settings: BenchmarkSettings) -> dict:
    """What every model of the benchmark shares, with SentenceMIMConfig's defaults filled in."""
    model = settings.model
    if model.backbone:  # its own config holds the sizes
        names = ("backbone", "freeze_backbone", "backbone_pooling", "num_memory_slots", "lora_r", "word_dropout")
        return {name: getattr(model, name) for name in names}
    config = SentenceMIMConfig(**model_options(settings, "mim", settings.benchmark.latent_sizes[0]).config_fields())
    names = ("architecture", "embedding_size", "hidden_size", "num_layers", "tie_word_embeddings", "reverse_input",
             "dropout", "embedding_dropout", "word_dropout")
    return {name: getattr(config, name) for name in names}


def check_settings(settings: BenchmarkSettings) -> None:
    """Build every model's options once, so that a value out of range is refused before anything is written."""
    for variant in settings.benchmark.objectives:
        training_options(settings, variant, Path("."), resume=False)
        SentenceMIMConfig(**model_options(settings, variant, settings.benchmark.latent_sizes[0]).config_fields())


def train_model(settings, variant, latent_size, folder: Path, splits, tokenizer, resume: bool, progress: bool) -> dict:
    """Train one model into `folder`, or continue it from its last checkpoint; returns its train_results.json."""
    training = training_options(settings, variant, folder, resume)
    if not progress:
        training = dataclasses.replace(training, disable_tqdm=True)
    with library_progress_bars(progress):
        # A resumed run rebuilds from its own saved tokenizer (the same vocabulary, trained on the same data).
        train_from_options(settings.dataset, settings.data, settings.tokenizer,
                           model_options(settings, variant, latent_size), training, splits=splits,
                           tokenizer=None if resume else tokenizer)
    return read_json(folder / "train_results.json")


def evaluate_model(settings, folder: Path, data, plot_path: Path, progress: bool, language_model=None) -> dict:
    """Every metric (docs/metrics.md) of the saved best model, sample quality, its latent projection plot and text
    samples."""
    training, options = settings.training, settings.benchmark
    splits, _, test_split = data
    device = "cuda" if torch.cuda.is_available() and not training.cpu else None  # score where training ran
    with library_progress_bars(progress):
        pipe = SentenceMIMPipeline.from_pretrained(folder, device=device)
        batches, stats = load_eval_batches(pipe.tokenizer, test_split, training.eval_batch_size, pipe.max_length)
        heldout, heldout_name = heldout_batches(settings, splits, pipe)
    scores = evaluate(pipe.model, batches, pipe.tokenizer, iw_samples=settings.test.iw_samples, seed=training.seed,
                      progress=progress, unknown_in_text=stats["num_unknown_in_text"], heldout_batches=heldout,
                      heldout_name=heldout_name)
    scores["num_truncated"] = stats["num_truncated"]
    scores.update(remedied_reconstructions(pipe, batches))
    quality, sampled = score_samples(pipe, options.quality_samples, training.seed, language_model)
    scores.update(quality)
    encoded = encode_split(pipe.model, batches, likelihood=False)  # the projection needs no decoder pass
    plot_latent_projection(encoded["mean"], labels=encoded["num_targets"].numpy(), path=plot_path,
                           label_name="sentence length (words + EOS)", seed=training.seed)
    examples = test_split["text"][: max(options.num_examples, 2)]
    shown = examples[: options.num_examples]
    outputs = pipe.reconstruct(shown) if shown else []
    first, second = examples[0], examples[1]
    samples = {
        "reconstructions": [{"input": text, "output": output} for text, output in zip(shown, outputs, strict=True)],
        "interpolation": {"from": first, "to": second,
                          "sentences": pipe.interpolate(first, second, steps=options.interpolation_steps)},
        "samples": {prior: texts[: options.num_examples] for prior, texts in sampled.items()},
    }
    vocabulary = sorted(pipe.tokenizer.get_vocab().items())
    return {"metrics": scores, "samples": samples,
            "vocabulary_hash": hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest()[:12],
            "num_parameters": sum(p.numel() for p in pipe.model.parameters())}


def heldout_batches(settings: BenchmarkSettings, splits, pipe):
    """(batches, name) of the validation sentences the widened IW proposal's width is chosen on (never the scored
    test sentences), or (None, None) without a validation split."""
    count = settings.test.width_sentences
    if "validation" not in splits or count == 0 or settings.test.iw_samples == 0:
        return None, None
    texts = splits["validation"].select(range(min(count, len(splits["validation"]))))
    batches, _ = load_eval_batches(pipe.tokenizer, texts, settings.training.eval_batch_size, pipe.max_length)
    return batches, f"the first {len(texts)} validation sentences"


REMEDY = {"no_repeat_ngram_size": 3}  # generate()'s remedy the report tries on reconstructions


def remedied_reconstructions(pipe, batches) -> dict:
    """BLEU-4 and the EOS share of greedy reconstructions of the posterior means that never repeat a trigram (the
    default decoding's are evaluate()'s bleu4_corpus and reconstruction_eos_share)."""
    ended = []
    hypotheses, references = reconstruct_split(pipe.model, batches, pipe.tokenizer, progress=False, ended=ended,
                                               **REMEDY)
    return {"reconstruction_remedy": ", ".join(f"{name}={value}" for name, value in REMEDY.items()),
            "bleu4_corpus_remedy": corpus_bleu(hypotheses, references),
            "reconstruction_eos_share_remedy": sum(ended) / len(ended)}


def score_samples(pipe, count: int, seed: int, language_model) -> tuple[dict, dict]:
    """({samples_<prior>_<number>: value}, {prior: decoded texts}) for `count` greedy decodings of codes from the
    standard prior and from the aggregate posterior (each from a generator seeded with `seed`)."""
    scores, texts = {"samples_count": count, "samples_decoding": "greedy"}, {}
    for prior in ("standard", "aggregate"):
        if prior == "aggregate" and pipe.aggregate_posterior is None:
            continue
        generator = torch.Generator(device=pipe.device).manual_seed(seed)
        z = pipe.sample_latents(count, prior, generator=generator)
        quality, generated = sample_quality(pipe.model, z, language_model, max_length=pipe.max_length - 1)
        scores.update({f"samples_{prior}_{name}": value for name, value in quality.items() if name != "num_samples"})
        texts[prior] = [text.strip() for text in decode_keep_unknown(pipe.tokenizer, generated)]
    return scores, texts


# ---------------------------------------------------------------------------------------------------------------------
# The reference language model (scores every model's samples)
# ---------------------------------------------------------------------------------------------------------------------


def existing_reference_lm(output_dir: Path) -> dict | None:
    """The description of the reference LM trained earlier into output_dir/reference_lm, if there is one."""
    folder = output_dir / "reference_lm"
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return read_json(folder / CONFIG_FILE)
    return None


def reference_language_model(settings: BenchmarkSettings, output_dir: Path, data, log) -> dict:
    """Train the reference LM into output_dir/reference_lm (or find it there) and return its description."""
    folder = output_dir / "reference_lm"
    if existing_reference_lm(output_dir) is not None:
        return existing_reference_lm(output_dir)
    splits, tokenizer, test_split = data
    training = settings.training
    config = SentenceMIMConfig(**model_options(settings, "ae", settings.benchmark.latent_sizes[0]).config_fields())
    tokenized, _ = tokenize_dataset(type(splits)({**splits, "test": test_split}), tokenizer,
                                    max_length=settings.data.max_length, overlong=settings.data.overlong)
    steps = training.max_steps or max(1, round(training.epochs * len(tokenized["train"]) / training.batch_size))
    log(f"training the reference language model (GRU {config.hidden_size}, {steps} steps)")
    began = time.time()
    lm, record = train_language_model(
        tokenized["train"], tokenized.get("validation", tokenized["test"]), len(tokenizer), tokenizer.pad_token_id,
        embedding_size=config.embedding_size, hidden_size=config.hidden_size, max_steps=steps,
        batch_size=training.batch_size, learning_rate=training.learning_rate, eval_steps=training.eval_steps,
        max_grad_norm=training.max_grad_norm, seed=training.seed)
    test_loader = make_dataloader(tokenized["test"], training.eval_batch_size, tokenizer.pad_token_id, shuffle=False)
    record.update(test_ppl=perplexity_on(lm, test_loader), train_seconds=round(time.time() - began, 1),
                  validated_on="validation" if "validation" in tokenized else "test (no validation split)")
    lm.save(folder, extra=record)
    return read_json(folder / CONFIG_FILE)


# ---------------------------------------------------------------------------------------------------------------------
# The run over all models
# ---------------------------------------------------------------------------------------------------------------------


def settings_fingerprint(settings: BenchmarkSettings) -> dict:
    """The settings that define what a model is (JSON values, so it compares equal to its saved copy)."""
    return {name: value for name, value in settings.flat().items() if name not in SELECTION_FIELDS}


def prepare_benchmark_dir(output_dir: Path, settings: BenchmarkSettings) -> None:
    """Start or continue a benchmark in output_dir; refuse a folder that holds other settings or other files.

    overwrite deletes an earlier benchmark's files (BENCHMARK_LAYOUT), and only those: a folder that holds anything
    else, or the dataset being read, is refused with nothing deleted."""
    run_folder.check_writable(output_dir)
    saved_path = output_dir / "settings.json"
    if settings.training.overwrite:
        run_folder.check_overwrite(output_dir, BENCHMARK_LAYOUT, settings.dataset.dataset,
                                   marked=is_benchmark(output_dir))
        if output_dir.is_dir():
            for model_dir in (output_dir / "models").glob("*"):
                run_folder.check_not_locked(model_dir)  # a model still being trained by another benchmark
            run_folder.clear(output_dir)
    wanted = settings_fingerprint(settings)
    if saved_path.is_file():
        # A setting added after the folder was written counts as its default (the value that run used).
        saved = {name: field_default(name) for name in wanted} | read_json(saved_path)
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
    names = {item.name for options in OPTION_CLASSES for item in dataclasses.fields(options)}
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
    lm_folder = output_dir / "reference_lm"
    language_model = GRULanguageModel.load(lm_folder) if (lm_folder / WEIGHTS_FILE).is_file() else None
    began = time.time()
    if (folder / "train_results.json").is_file():  # the benchmark stopped between training and scoring
        log(f"{name}: trained earlier, not scored yet")
        train_results = read_json(folder / "train_results.json")
    else:
        resume = checkpointing.latest_checkpoint(folder / "checkpoints") is not None
        log(f"{name}: {'resuming' if resume else 'training'} ({MODEL_VARIANTS[variant]}, latent {latent_size})")
        train_results = train_model(settings, variant, latent_size, folder, splits, tokenizer, resume, progress)
    log(f"{name}: scoring the best model on {len(test_split)} {settings.test.test_split} sentences")
    scored = time.time()
    record = {
        "name": name, "variant": variant, "label": variant_label(settings, variant), "latent_size": latent_size,
        "model_dir": str(folder.relative_to(output_dir)), "train": train_results,
        **evaluate_model(settings, folder, data, output_dir / "plots" / f"latent_{name}.png", progress,
                         language_model),
    }
    record["eval_seconds"] = round(time.time() - scored, 1)
    record["wall_seconds"] = round(time.time() - began, 1)
    write_json_atomic(folder / RESULT_FILE, record)
    return record


def run_benchmark(settings: BenchmarkSettings, preset: str | None = None, command: str | None = None,
                  log=print) -> dict:
    """Train and score every (objective, latent size) pair into settings.training.output_dir, writing the report
    after each model. Returns the content of results.json."""
    output_dir, progress = Path(settings.training.output_dir), not settings.training.disable_tqdm
    check_settings(settings)
    prepare_benchmark_dir(output_dir, settings)
    started = time.time()
    header = {"benchmark": "sentenceMIM vs text VAE vs AE: posterior collapse side by side", "preset": preset,
              "command": command, "settings": settings.flat(),
              "schedules": {variant: settings.schedule_of(variant) for variant in MODEL_VARIANTS},
              "model": shared_architecture(settings),
              "reference_lm": existing_reference_lm(output_dir),
              "machine": machine_info(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    options = settings.benchmark
    todo = [(variant, size) for size in options.latent_sizes for variant in options.objectives]
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
        log(f"loading {settings.dataset.dataset} and training its tokenizer (shared by every model)")
        with library_progress_bars(progress):
            data = load_benchmark_data(settings)
        header["reference_lm"] = reference_language_model(settings, output_dir, data, log)
        run = run_in_workers if options.num_workers > 1 and len(pending) > 1 else run_in_this_process
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
    if settings.benchmark.num_threads:
        torch.set_num_threads(settings.benchmark.num_threads)  # small models: more threads oversubscribe the cores
    try:
        for index, variant, latent_size in pending:
            def model_log(message, index=index):
                log(f"[{index + 1}/{total}] {message}")

            yield index, benchmark_model(settings, variant, latent_size, output_dir, data, progress, model_log)
    finally:
        torch.set_num_threads(threads)


def run_in_workers(settings, pending, total, output_dir, data, progress, log):
    """Yields (position, record) of each pending model as it finishes, num_workers models at a time, one process
    each. Their own progress goes to their stdout/stderr, prefixed with the model's position (their progress bars
    are off: several would overwrite each other)."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its thread pools
    workers = min(settings.benchmark.num_workers, len(pending))
    log(f"training {len(pending)} models, {workers} at a time")
    # A spawned process starts with Python's logging defaults: give it this process's console (quiet unless
    # --verbose / --debug), or every checkpoint would print accelerate's note about the tied output layer.
    own_logger = logging.getLogger("sentmim")
    console = dict(verbose=own_logger.isEnabledFor(logging.INFO), debug=own_logger.isEnabledFor(logging.DEBUG))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        jobs = {pool.submit(benchmark_model_in_worker, settings, variant, latent_size, output_dir, data,
                            f"[{index + 1}/{total}]", console): index
                for index, variant, latent_size in pending}
        for job in as_completed(jobs):
            yield jobs[job], job.result()  # a failed model fails the benchmark, as it does in one process


def benchmark_model_in_worker(settings, variant: str, latent_size: int, output_dir: Path, data, prefix: str,
                              console: dict) -> dict:
    configure_console(**console, progress=False)
    if settings.benchmark.num_threads:
        torch.set_num_threads(settings.benchmark.num_threads)
    return benchmark_model(settings, variant, latent_size, output_dir, data, progress=False,
                           log=lambda message: print(f"{prefix} {message}", flush=True))
