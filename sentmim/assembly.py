"""A training run assembled from options: data -> tokenizer -> model -> `training.train`.

    model, tokenizer, results = train_from_options(DatasetOptions(dataset="ptb/"), DataOptions(), TokenizerOptions(),
                                                   ModelOptions(), TrainingOptions(output_dir="runs/ptb-mim"))

Shared by `sentmim train`, `sentmim demo`, the benchmark and recipes/train.py, so every entry point treats data,
vocabulary and fine-tuning the same way:

- a new run trains a tokenizer on the training split and builds a model from the options;
- `backbone=NAME_OR_PATH` starts a new run from a pretrained Hugging Face LM instead: its tokenizer, adapted to
  sentmim's conventions (sentmim.backbones), replaces the trained one, and the model is `from_backbone`;
- `init_from=DIR` fine-tunes a trained model: its tokenizer and architecture are kept (words it does not know
  become <unk>; the rate is logged) and only the objective, the dropout rates and freeze_backbone may change;
- `lora_r=R` wraps a backbone model (new or fine-tuned) in LoRA adapters (sentmim.lora); the run publishes the
  model with the adapters merged in, a plain sentmim model folder;
- `resume=True` rebuilds the model and tokenizer saved in output_dir/checkpoints/run (with the run's LoRA
  adapters, from their adapter_config.json there) and continues. Every data, tokenizer and model option defines
  the run: a resume refuses any that differs from run_options.json (and a model option that differs from the run's
  config), naming it with both values.
"""

import dataclasses
import json
import logging
from pathlib import Path

from accelerate.utils import set_seed

from . import lora
from .backbones import load_backbone_tokenizer, lowercased
from .configuration import SentenceMIMConfig
from .data import DataError, load_text_dataset
from .files import read_json
from .model_folder import load_config, load_model
from .modeling import SentenceMIMModel
from .options import NOT_CONFIG_FIELDS, DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from .preprocessing import clean_dataset, tokenize_dataset
from .tokenization import SPECIAL_TOKENS, load_tokenizer, train_tokenizer, unknown_token_rate
from .training import RUN_FOLDER, prepare_output_dir, train

logger = logging.getLogger(__name__)
# What fine-tuning (--init-from) may change in the trained model's config: the objective, the dropout rates and
# whether the backbone trains.
FINE_TUNING_MAY_CHANGE = {"objective", "dropout", "embedding_dropout", "word_dropout", "freeze_backbone"}


def run_record(dataset: DatasetOptions, data: DataOptions, tokenizer: TokenizerOptions, model: ModelOptions) -> dict:
    """The options that define the run, as saved in run_options.json: JSON values, local paths made absolute (a
    resume may start from another working directory)."""
    record = {**dataclasses.asdict(dataset), **dataclasses.asdict(data), **dataclasses.asdict(tokenizer),
              **dataclasses.asdict(model)}
    for name in ("dataset", "init_from", "backbone"):
        if record[name] and Path(record[name]).exists():
            record[name] = str(Path(record[name]).resolve())
    return json.loads(json.dumps(record))


def check_resume_options(output_dir: Path, record: dict, model: ModelOptions) -> None:
    """Refuse a resume whose data, tokenizer or model options differ from those the run started with."""
    config_path = output_dir / RUN_FOLDER / "config.json"
    config = load_config(output_dir / RUN_FOLDER)
    for name, new in model.config_fields().items():
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
    for name, old in read_json(saved_path).items():
        # Model options are checked against the run's config above, except those that are no config field (the
        # backbone, LoRA): those are checked here, when given (left out, the run's own are used).
        unchecked = name in ModelOptions.__dataclass_fields__ and (
            name not in NOT_CONFIG_FIELDS or name == "init_from" or record.get(name) is None)
        if name in record and record[name] != old and not unchecked:
            raise ValueError(
                f"--resume: option {name} was {old!r} when this run started ({saved_path}), now {record[name]!r}: "
                f"it would change the run; resume with {old!r}, or train into another output folder"
            )


def load_training_splits(dataset: DatasetOptions, data: DataOptions, seed: int):
    """The cleaned text splits of the training data (a train split and, unless disabled, a validation split)."""
    raw = load_text_dataset(
        dataset.dataset, dataset.dataset_config, dataset.split, dataset.text_column,
        validation_fraction=data.validation_fraction, seed=seed, streaming=data.streaming,
    )
    if "train" not in raw:
        raise ValueError(f"{dataset.dataset}: no train split (found {', '.join(raw)}); pass --split train or a file")
    if data.streaming and "validation" in raw:
        # A stream is re-read at every evaluation; a carved-off one even reads train to find its sentences.
        raw["validation"] = raw["validation"].take(data.max_validation_sentences)
    try:
        return clean_dataset(raw, lowercase=data.lowercase)
    except DataError as error:  # its message names the split, not the dataset
        raise DataError(f"{dataset.dataset}: {error}") from None


def build_tokenizer(data: DataOptions, options: TokenizerOptions, model: ModelOptions, train_texts,
                    output_dir: Path, resume: bool):
    """The run's tokenizer on resume, the trained model's with --init-from, else one trained on train_texts."""
    if resume:
        return load_tokenizer(output_dir / RUN_FOLDER)
    if model.backbone:
        logger.info("the tokenizer of %s is used (--tokenizer, --vocab-size and --min-frequency do not apply)",
                    model.backbone)
        tokenizer = load_backbone_tokenizer(model.backbone)
        return lowercased(tokenizer) if data.lowercase else tokenizer
    if model.init_from:
        tokenizer = load_tokenizer(model.init_from)
        unknown, total = unknown_token_rate(tokenizer, train_texts)
        logger.info(
            "fine-tuning with the vocabulary of %s: %d of %d training tokens (%.2f%%) are unknown to it and map to %s",
            model.init_from, unknown, total, 100 * unknown / max(total, 1), tokenizer.unk_token,
        )
        return tokenizer
    if options.vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"--vocab-size {options.vocab_size}: must exceed the {len(SPECIAL_TOKENS)} special tokens")
    try:
        return train_tokenizer(
            train_texts, kind=options.tokenizer, vocab_size=options.vocab_size, min_frequency=options.min_frequency,
            lowercase=data.lowercase, model_max_length=data.max_length,
        )
    except Exception as error:  # `tokenizers` raises bare Exception / ZeroDivisionError for a too small vocabulary
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--vocab-size {options.vocab_size}: cannot train a {options.tokenizer} tokenizer "
            f"({type(error).__name__}: {reason}); use a larger vocabulary (byte-level BPE needs more than 260)"
        ) from error


def build_model(data: DataOptions, model: ModelOptions, tokenizer, output_dir: Path, resume: bool):
    """The run's model on resume, the trained model with --init-from, a pretrained backbone's with --backbone, else
    a new one from the options; wrapped in LoRA adapters when the run has them."""
    if resume:
        run = output_dir / RUN_FOLDER
        return lora.add_saved_lora(SentenceMIMModel(load_config(run)), run)
    fields = model.config_fields()
    if model.backbone:
        built = SentenceMIMModel.from_backbone(model.backbone, tokenizer=tokenizer,
                                               max_position_embeddings=data.max_length, **fields)
    elif model.init_from:
        built = fine_tuned_model(model.init_from, fields, lora_wanted=model.lora_r is not None)
    else:
        config = SentenceMIMConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, unk_token_id=tokenizer.unk_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            max_position_embeddings=data.max_length, **fields,
        )
        built = SentenceMIMModel(config)
    settings = model.lora_settings()
    return built if settings is None else lora.add_lora(built, **settings)


def fine_tuned_model(folder: str, fields: dict, lora_wanted: bool) -> SentenceMIMModel:
    """The trained model in `folder`, with the fields fine-tuning may change set from the options."""
    config = load_config(folder)
    for name, value in fields.items():
        if name in FINE_TUNING_MAY_CHANGE:
            setattr(config, name, value)
        elif getattr(config, name, value) != value:
            raise ValueError(
                f"--{name.replace('_', '-')}={value}: {folder} was trained with "
                f"{name}={getattr(config, name)}; fine-tuning keeps the architecture (drop the option)"
            )
    if config.architecture != "backbone" and (config.freeze_backbone or lora_wanted):
        flag = "--lora-r" if lora_wanted else "--freeze-backbone"
        raise ValueError(f"{flag}: {folder} has no pretrained backbone (architecture {config.architecture}); "
                         "fine-tune it without the option")
    config.validate()
    # Built from the updated config, so a changed dropout rate reaches the dropout modules, not just config.json.
    return load_model(folder, config=config)


def train_from_options(
    dataset: DatasetOptions, data: DataOptions, tokenizer_options: TokenizerOptions, model_options: ModelOptions,
    training: TrainingOptions, splits=None, tokenizer=None,
) -> tuple[SentenceMIMModel, object, dict]:
    """Load data, build or load tokenizer and model, train. Returns (model, tokenizer, train results).

    `splits` (cleaned text splits, as `load_training_splits` returns them) and `tokenizer` may be passed in so that
    several runs share one loaded dataset and one vocabulary (the benchmark); by default both come from the options."""
    output_dir = prepare_output_dir(training, dataset=dataset.dataset)  # refuse a folder before spending time on data
    record = run_record(dataset, data, tokenizer_options, model_options)
    if training.resume:
        check_resume_options(output_dir, record, model_options)
    if splits is None:
        splits = load_training_splits(dataset, data, training.seed)
    if tokenizer is None:
        tokenizer = build_tokenizer(data, tokenizer_options, model_options, splits["train"]["text"], output_dir,
                                    training.resume)
    set_seed(training.seed)  # the initial weights too come from --seed (torch seeds itself randomly at start-up)
    model = build_model(data, model_options, tokenizer, output_dir, training.resume)
    tokenized, stats = tokenize_dataset(splits, tokenizer, max_length=data.max_length, overlong=data.overlong)
    for split, counts in stats.items():
        logger.info("%s: %s", split, counts)
        everything_dropped = counts["num_sentences"] and counts["num_dropped"] == counts["num_sentences"]
        if split in ("train", "validation") and everything_dropped:
            raise ValueError(  # caught here, not as a division by zero at the first evaluation
                f"all {counts['num_sentences']} {split} sentences are longer than --max-length {data.max_length} "
                "tokens: raise --max-length or pass --overlong truncate"
            )
    results = train(model, tokenizer, tokenized, training, run_options=record)
    return model, tokenizer, results
