"""Assemble a training run from plain options: data -> tokenizer -> model -> `training.train`.

Shared by `sentmim train`, `sentmim demo` and recipes/train.py, so every entry point treats data, vocabulary and
fine-tuning the same way:

- a new run trains a tokenizer on the training split and builds a model from the options;
- `init_from=DIR` fine-tunes a trained model: its tokenizer and architecture are kept (words it does not know
  become <unk>; the rate is logged) and only the objective / KL settings given may change;
- `resume=True` rebuilds the model and tokenizer saved in output_dir/checkpoints/run and continues. Every option
  here defines the run: a resume refuses any that differs from run_options.json (and a model option that differs
  from the run's config), naming it with both values.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from .configuration import SentenceMIMConfig
from .data import DataError, load_text_dataset
from .files import read_json
from .model_folder import load_config, load_model
from .modeling import SentenceMIMModel
from .preprocessing import clean_dataset, tokenize_dataset
from .tokenization import SPECIAL_TOKENS, TOKENIZER_KINDS, load_tokenizer, train_tokenizer, unknown_token_rate
from .training import RUN_FOLDER, TrainingArguments, out_of_range, prepare_output_dir, train

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    dataset: str = "builtin"
    dataset_config: str | None = None
    split: str | None = None
    text_column: str | None = None
    lowercase: bool = False
    max_length: int = 64  # tokens, BOS and EOS included
    overlong: str = "drop"  # drop | truncate
    validation_fraction: float = 0.05
    tokenizer: str = "word"  # word | bpe | unigram
    vocab_size: int = 10000
    min_frequency: int = 1
    init_from: str | None = None
    streaming: bool = False  # read the corpus lazily (larger than memory); training then needs max_steps
    max_validation_sentences: int = 5000  # streams only: the first this many carved-off sentences validate
    model: dict = field(default_factory=dict)  # SentenceMIMConfig fields (architecture, objective, sizes, ...)

    def __post_init__(self):
        choices = {"overlong": ("drop", "truncate"), "tokenizer": TOKENIZER_KINDS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"run option {name}={getattr(self, name)!r} is invalid: use {', '.join(allowed)}")
        ranges = {"max_length": (3, None, True), "validation_fraction": (0, None, False),
                  "min_frequency": (0, None, True), "max_validation_sentences": (1, None, True)}
        for name, (low, high, integer) in ranges.items():
            problem = out_of_range(getattr(self, name), low, high, integer)
            if name == "validation_fraction" and not problem and self.validation_fraction >= 1:
                problem = "a number >= 0 and < 1"
            if problem:
                raise ValueError(f"run option {name}={getattr(self, name)!r} is invalid: must be {problem}")


def options_record(options: RunOptions) -> dict:
    """The options as saved in run_options.json: JSON values, local paths made absolute (a resume may start from
    another working directory)."""
    record = dataclasses.asdict(options)
    for name in ("dataset", "init_from"):
        if record[name] and Path(record[name]).exists():
            record[name] = str(Path(record[name]).resolve())
    return json.loads(json.dumps(record))


def check_resume_options(output_dir: Path, options: RunOptions) -> None:
    """Refuse a resume whose data, tokenizer or model options differ from those the run started with."""
    config_path = output_dir / RUN_FOLDER / "config.json"
    config = load_config(output_dir / RUN_FOLDER)
    for name, new in options.model.items():
        old = getattr(config, name, None)
        if old != new:
            raise ValueError(
                f"--resume: model option {name} was {old!r} when this run started ({config_path}), now {new!r}; "
                f"resume with {old!r} (or without the option), or train into another output folder"
            )
    saved_path = output_dir / "run_options.json"
    if not saved_path.is_file():
        logger.warning("%s is missing: the resumed run's data options cannot be checked", saved_path)
        return
    new_record = options_record(options)
    for name, old in read_json(saved_path).items():
        if name != "model" and name in new_record and new_record[name] != old:
            raise ValueError(
                f"--resume: option {name} was {old!r} when this run started ({saved_path}), now "
                f"{new_record[name]!r}: it would change the run; resume with {old!r}, or train into another "
                "output folder"
            )


def load_splits(options: RunOptions, seed: int):
    raw = load_text_dataset(
        options.dataset, options.dataset_config, options.split, options.text_column,
        validation_fraction=options.validation_fraction, seed=seed, streaming=options.streaming,
    )
    if "train" not in raw:
        raise ValueError(f"{options.dataset}: no train split (found {', '.join(raw)}); pass --split train or a file")
    if options.streaming and "validation" in raw:
        # A stream is re-read at every evaluation; a carved-off one even reads train to find its sentences.
        raw["validation"] = raw["validation"].take(options.max_validation_sentences)
    try:
        return clean_dataset(raw, lowercase=options.lowercase)
    except DataError as error:  # its message names the split, not the dataset
        raise DataError(f"{options.dataset}: {error}") from None


def prepare_tokenizer(options: RunOptions, train_texts, output_dir: Path, resume: bool):
    if resume:
        return load_tokenizer(output_dir / RUN_FOLDER)
    if options.init_from:
        tokenizer = load_tokenizer(options.init_from)
        unknown, total = unknown_token_rate(tokenizer, train_texts)
        logger.info(
            "fine-tuning with the vocabulary of %s: %d of %d training tokens (%.2f%%) are unknown to it and map to %s",
            options.init_from, unknown, total, 100 * unknown / max(total, 1), tokenizer.unk_token,
        )
        return tokenizer
    if options.vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"--vocab-size {options.vocab_size}: must exceed the {len(SPECIAL_TOKENS)} special tokens")
    try:
        return train_tokenizer(
            train_texts, kind=options.tokenizer, vocab_size=options.vocab_size, min_frequency=options.min_frequency,
            lowercase=options.lowercase, model_max_length=options.max_length,
        )
    except Exception as error:  # `tokenizers` raises bare Exception / ZeroDivisionError for a too small vocabulary
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--vocab-size {options.vocab_size}: cannot train a {options.tokenizer} tokenizer on {options.dataset} "
            f"({type(error).__name__}: {reason}); use a larger vocabulary (byte-level BPE needs more than 260)"
        ) from error


def prepare_model(options: RunOptions, tokenizer, output_dir: Path, resume: bool) -> SentenceMIMModel:
    if resume:
        return SentenceMIMModel(load_config(output_dir / RUN_FOLDER))
    if options.init_from:
        config = load_config(options.init_from)
        changeable = {"objective", "dropout", "embedding_dropout", "word_dropout", "logvar_min", "free_bits"} | {
            name for name in options.model if name.startswith("kl_")
        }
        for name, value in options.model.items():
            if name in changeable:
                setattr(config, name, value)
            elif getattr(config, name, value) != value:
                raise ValueError(
                    f"--{name.replace('_', '-')}={value}: {options.init_from} was trained with "
                    f"{name}={getattr(config, name)}; fine-tuning keeps the architecture (drop the option)"
                )
        config.validate()
        # Built from the updated config, so a changed dropout rate reaches the dropout modules, not just config.json.
        return load_model(options.init_from, config=config)
    fields = dict(options.model)
    config = SentenceMIMConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, unk_token_id=tokenizer.unk_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=max(options.max_length, fields.pop("max_position_embeddings", 0)),
        **fields,
    )
    return SentenceMIMModel(config)


def run_training(
    options: RunOptions, args: TrainingArguments, splits=None, tokenizer=None
) -> tuple[SentenceMIMModel, object, dict]:
    """Load data, build or load tokenizer and model, train. Returns (model, tokenizer, train results).

    `splits` (cleaned text splits, as `load_splits` returns them) and `tokenizer` may be passed in so that several
    runs share one loaded dataset and one vocabulary (sentmim.benchmark); by default both come from `options`."""
    output_dir = prepare_output_dir(args, dataset=options.dataset)  # refuse a folder before spending time on data
    if args.resume:
        check_resume_options(output_dir, options)
    if splits is None:
        splits = load_splits(options, args.seed)
    if tokenizer is None:
        tokenizer = prepare_tokenizer(options, splits["train"]["text"], output_dir, args.resume)
    set_seed(args.seed)  # the initial weights too come from --seed (torch seeds itself randomly at start-up)
    model = prepare_model(options, tokenizer, output_dir, args.resume)
    tokenized, stats = tokenize_dataset(splits, tokenizer, max_length=options.max_length, overlong=options.overlong)
    for split, counts in stats.items():
        logger.info("%s: %s", split, counts)
        everything_dropped = counts["num_sentences"] and counts["num_dropped"] == counts["num_sentences"]
        if split in ("train", "validation") and everything_dropped:
            raise ValueError(  # caught here, not as a division by zero at the first evaluation
                f"all {counts['num_sentences']} {split} sentences are longer than --max-length {options.max_length} "
                "tokens: raise --max-length or pass --overlong truncate"
            )
    results = train(model, tokenizer, tokenized, args, run_options=options_record(options))
    return model, tokenizer, results
