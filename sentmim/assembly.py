"""A training run assembled from options: data -> tokenizer -> model -> `training.train`.

    model, tokenizer, results = train_from_options(DatasetOptions(dataset="ptb/"), DataOptions(), TokenizerOptions(),
                                                   ModelOptions(), TrainingOptions(output_dir="runs/ptb-mim"))

Shared by `sentmim train`, `sentmim demo`, the benchmark and recipes/train.py, so every entry point treats data,
vocabulary and fine-tuning the same way. A new run trains a tokenizer on the training split (byte-level BPE by
default) and builds a model from the options, or starts from a pretrained LM (`backbone`, docs/backbones.md, with
`lora_r` for LoRA adapters); `init_from` fine-tunes a trained model, whose tokenizer and architecture are kept
(`split_sentences`, `extend_vocabulary` and the one length rule: docs/finetuning.md); `resume` rebuilds the model
and tokenizer saved in output_dir/checkpoints/run and refuses any data, tokenizer or model option that differs from
the run's (docs/errors.md). When the data is ready, one line says what became of it.
"""

import dataclasses
import json
import logging
from pathlib import Path

from accelerate.utils import set_seed

from . import lora
from . import options as opts
from .backbones import adapt_tokenizer, load_backbone_tokenizer
from .configuration import SentenceMIMConfig
from .console import is_main_process
from .data import DataError, load_text_dataset
from .files import first_line, read_json
from .model_folder import load_config, load_model
from .modeling import SentenceMIMModel
from .options import NOT_CONFIG_FIELDS, DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from .preprocessing import clean_dataset, lost_text_warning, preparation_summary, tokenize_dataset
from .sentences import split_dataset
from .tokenization import load_tokenizer, train_tokenizer, unknown_words_warning
from .training import RUN_FOLDER, prepare_output_dir, train
from .vocabulary import check_word_level, extend_tokenizer, grow_model

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


def check_resume_options(output_dir: Path, record: dict, model: ModelOptions, training: TrainingOptions) -> None:
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
    # Model options are checked against the run's config above, except those that are no config field (the
    # backbone, LoRA): those are checked here, when given (left out, the run's own are used).
    unchecked = {name for name in ModelOptions.__dataclass_fields__
                 if name not in NOT_CONFIG_FIELDS or name == "init_from" or record.get(name) is None}
    saved = {name: value for name, value in read_json(saved_path).items() if name not in unchecked}
    opts.check_resume(saved, record, training, saved_path)


def load_training_splits(dataset: DatasetOptions, data: DataOptions, seed: int):
    """The cleaned text splits of the training data (a train split and, unless disabled, a validation split)."""
    return prepare_training_splits(dataset, data, seed)[0]


def prepare_training_splits(dataset: DatasetOptions, data: DataOptions, seed: int):
    """(the cleaned text splits, {split: sentence-splitting counts} when --split-sentences is on, else {})."""
    raw = load_text_dataset(
        dataset.dataset, dataset.dataset_config, dataset.split, dataset.text_column,
        validation_fraction=data.validation_fraction, seed=seed, streaming=data.streaming,
    )
    if "train" not in raw:
        raise ValueError(f"{dataset.dataset}: no train split (found {', '.join(raw)}); pass --split train or a file")
    split_counts = {}
    if dataset.split_sentences:  # before cleaning, which would turn blank lines, paragraph breaks, into spaces
        for key in list(raw):
            raw[key], split_counts[key] = split_dataset(raw[key], key)
    if data.streaming and "validation" in raw:
        # A stream is re-read at every evaluation; a carved-off one even reads train to find its sentences.
        raw["validation"] = raw["validation"].take(data.max_validation_sentences)
    try:
        return clean_dataset(raw, lowercase=data.lowercase), split_counts
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
        return adapt_tokenizer(tokenizer, lowercase=True) if data.lowercase else tokenizer
    if model.init_from:
        tokenizer = load_tokenizer(model.init_from)
        tokenizer.model_max_length = data.max_length  # saved with the model: the limit this run trains with
        return tokenizer
    try:
        return train_tokenizer(
            train_texts, kind=options.tokenizer, vocab_size=options.vocab_size, min_frequency=options.min_frequency,
            lowercase=data.lowercase, model_max_length=data.max_length,
        )
    except Exception as error:  # `tokenizers` raises bare Exception / ZeroDivisionError for a too small vocabulary
        raise ValueError(
            f"--vocab-size {options.vocab_size}: cannot train a {options.tokenizer} tokenizer "
            f"({first_line(error)}); use a larger vocabulary (byte-level BPE needs more than 260)"
        ) from error


def build_model(data: DataOptions, model: ModelOptions, tokenizer, output_dir: Path, resume: bool):
    """The run's model on resume, the trained model with --init-from, a pretrained backbone's with --backbone, else
    a new one from the options; wrapped in LoRA adapters when the run has them."""
    if resume:
        run = output_dir / RUN_FOLDER
        return lora.add_saved_lora(SentenceMIMModel(load_config(run)), run)
    fields = model.config_fields()
    if model.backbone:
        built = SentenceMIMModel.from_backbone(model.backbone, tokenizer=tokenizer, overlong=data.overlong,
                                               max_position_embeddings=data.max_length, **fields)
    elif model.init_from:
        built = fine_tuned_model(model.init_from, fields, data, lora_wanted=model.lora_r is not None)
    else:
        config = SentenceMIMConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, unk_token_id=tokenizer.unk_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            max_position_embeddings=data.max_length, overlong=data.overlong, **fields,
        )
        built = SentenceMIMModel(config)
    settings = model.lora_settings()
    return built if settings is None else lora.add_lora(built, **settings)


def fine_tuned_model(folder: str, fields: dict, data: DataOptions, lora_wanted: bool) -> SentenceMIMModel:
    """The trained model in `folder`, with the fields fine-tuning may change set from the options and this run's
    length rule."""
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
    apply_length_rule(config, data, folder)
    config.validate()
    # Built from the updated config, so a changed dropout rate reaches the dropout modules, not just config.json.
    return load_model(folder, config=config)


def apply_length_rule(config: SentenceMIMConfig, data: DataOptions, init_from: str) -> None:
    """The fine-tuned model's config takes this run's length rule. A Transformer with learned positions has a row
    per position, and a backbone was sized to its positions when it was built: either can train on shorter sentences
    (the tokenizer's model_max_length then carries the limit), not on longer ones."""
    config.overlong = data.overlong
    fixed_positions = config.architecture == "backbone" or (
        config.architecture == "transformer" and config.position_embedding_type == "learned")
    if fixed_positions and data.max_length > config.max_position_embeddings:
        what = "a pretrained backbone" if config.architecture == "backbone" else "learned positions"
        raise ValueError(
            f"--max-length {data.max_length}: {init_from} has {what} for {config.max_position_embeddings} tokens "
            f"only; fine-tune with --max-length {config.max_position_embeddings} or less"
        )
    if not fixed_positions:
        config.max_position_embeddings = data.max_length


def train_from_options(
    dataset: DatasetOptions, data: DataOptions, tokenizer_options: TokenizerOptions, model_options: ModelOptions,
    training: TrainingOptions, splits=None, tokenizer=None,
) -> tuple[SentenceMIMModel, object, dict]:
    """Load data, build or load tokenizer and model, train. Returns (model, tokenizer, train results).

    `splits` (cleaned text splits, as `load_training_splits` returns them) and `tokenizer` may be passed in so that
    several runs share one loaded dataset and one vocabulary (the benchmark); by default both come from the options."""
    if tokenizer_options.extend_vocabulary and not training.resume:
        check_vocabulary_extension(tokenizer_options.extend_vocabulary, model_options)
    output_dir = prepare_output_dir(training, dataset=dataset.dataset)  # refuse a folder before spending time on data
    record = run_record(dataset, data, tokenizer_options, model_options)
    if training.resume:
        check_resume_options(output_dir, record, model_options, training)
    split_counts = {}
    if splits is None:
        splits, split_counts = prepare_training_splits(dataset, data, training.seed)
    if tokenizer is None:
        tokenizer = build_tokenizer(data, tokenizer_options, model_options, splits["train"]["text"], output_dir,
                                    training.resume)
    set_seed(training.seed)  # the initial weights too come from --seed (torch seeds itself randomly at start-up)
    model = build_model(data, model_options, tokenizer, output_dir, training.resume)
    if tokenizer_options.extend_vocabulary and not training.resume:  # a resumed run has the extended vocabulary
        tokenizer = extend_model_vocabulary(model, tokenizer, tokenizer_options, splits["train"]["text"])
    tokenized, stats = tokenize_dataset(splits, tokenizer, max_length=data.max_length, overlong=data.overlong)
    report_preparation(stats, data, dataset, split_counts, model_options.init_from)
    results = train(model, tokenizer, tokenized, training, run_options=record)
    return model, tokenizer, results


def check_vocabulary_extension(extend_vocabulary: int, model: ModelOptions) -> None:
    """Refuse --extend-vocabulary, before the data is read, where there is no word-level vocabulary to extend."""
    flag = f"--extend-vocabulary {extend_vocabulary}"
    if model.backbone:
        raise ValueError(f"{flag}: --backbone {model.backbone} keeps its own subword vocabulary, which has no unknown "
                         "words to add; drop the option")
    if not model.init_from:
        raise ValueError(f"{flag} goes with --init-from (a new model's vocabulary is trained on its data: raise "
                         "--vocab-size instead)")
    if load_config(model.init_from).architecture == "backbone":
        raise ValueError(f"{flag}: {model.init_from} has a pretrained backbone, which keeps its own subword "
                         "vocabulary; drop the option")
    try:
        check_word_level(load_tokenizer(model.init_from))
    except ValueError as error:
        raise ValueError(f"{model.init_from}: {error}; drop the option") from None


def extend_model_vocabulary(model, tokenizer, options: TokenizerOptions, train_texts):
    """The tokenizer with the new data's most frequent missing words, and the model grown to match."""
    tokenizer, extension = extend_tokenizer(tokenizer, train_texts, options.extend_vocabulary, options.min_frequency)
    grow_model(model, extension)
    if extension.words:
        notice(f"vocabulary extended by {len(extension.words):,} words (seen {extension.counts[-1]:,} to "
               f"{extension.counts[0]:,} times): unknown tokens {extension.num_unknown / extension.num_tokens:.1%} -> "
               f"{extension.num_unknown_after / extension.num_tokens:.1%} of the training tokens")
    else:
        notice(f"vocabulary not extended: no missing word is seen {max(options.min_frequency, 1)} times or more")
    return tokenizer


def report_preparation(stats: dict, data: DataOptions, dataset: DatasetOptions, split_counts: dict,
                       init_from: str | None) -> None:
    """Refuse splits left empty by the length rule; print what preparing the data did, and warn when a split lost
    more than 5% of its text or (fine-tuning) more than 1% of the training tokens are words the vocabulary lacks."""
    for split, counts in stats.items():
        everything_dropped = counts["num_sentences"] and counts["num_dropped"] == counts["num_sentences"]
        if split in ("train", "validation") and everything_dropped:
            raise ValueError(  # caught here, not as a division by zero at the first evaluation
                f"all {counts['num_sentences']} {split} sentences are longer than --max-length {data.max_length} "
                "tokens: raise --max-length or pass --overlong truncate"
                + ("" if dataset.split_sentences else ", or --split-sentences if the rows are paragraphs")
            )
    notice(preparation_summary(stats, data.max_length, data.overlong, split_counts))
    lost = lost_text_warning(stats, data.max_length, data.overlong, dataset.split_sentences)
    if lost:
        logger.warning(lost)
    train = stats["train"]
    if init_from and train["num_sentences"] is not None:
        kept = train["num_sentences"] - train["num_dropped"]
        warning = unknown_words_warning(train["num_unknown"], train["num_unknown_in_text"],
                                        train["num_tokens"] - 2 * kept, "the training tokens")
        if warning:
            logger.warning("%s: the vocabulary of %s does not fit this data; pass --extend-vocabulary N to add the N "
                           "most frequent missing words", warning, init_from)


def notice(message: str) -> None:
    """A line the user should see whatever the log level, printed once: by the main process of a launch (asked of
    torch.distributed or the launcher's RANK: accelerate's state is not made yet, and making it here would fix its
    device and precision before training does)."""
    if is_main_process():
        print(message, flush=True)
