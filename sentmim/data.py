"""Load any text corpus, clean it, tokenize it and batch it by length.

The four steps, each usable alone:

    raw = load_text_dataset("stanfordnlp/imdb")      # or "builtin", "ptb/" (a folder), "corpus.jsonl", ...
    raw = clean_dataset(raw)                          # drop blank lines, collapse whitespace
    tokenized, stats = tokenize_dataset(raw, tokenizer, max_length=64)
    loader = make_dataloader(tokenized["train"], batch_size=32, pad_token_id=tokenizer.pad_token_id,
                             shuffle=True, seed=0)

`load_text_dataset` always returns a `datasets.DatasetDict` (an `IterableDatasetDict` when streaming) whose splits
have exactly one column, "text", and that has a "validation" split whenever it has a "train" split. Every bad input
raises `DataError` (a `ValueError`) with one line that names the file, column or argument and says what to do.

Batches group sentences of similar length (`LengthBucketSampler`), which wastes far less compute on padding than
random batches. The order depends only on (seed, epoch), so an interrupted run resumes with the same batches.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import inspect
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    List,
    Value,
    load_dataset,
    load_from_disk,
)

from .tokenization import BatchEncoder

logger = logging.getLogger(__name__)

# File extension -> (name of the `datasets` packaged builder, extra arguments for it).
FILE_FORMATS: dict[str, tuple[str, dict]] = {
    ".txt": ("text", {}),
    ".text": ("text", {}),
    ".tokens": ("text", {}),  # WikiText's raw files
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
}
_BINARY_FORMATS = {"parquet", "arrow"}  # no UTF-8 check for these
# The text and json readers hold one chunk of the file at a time, as Python strings and Arrow, several times its size
# in memory. Their default 10 MB chunk made a stream's memory grow with the file up to that size and sit ~100 MB above
# the rest; 1 MB chunks keep streaming memory flat and small (benchmarks/data_pipeline) at no measurable cost in speed.
_STREAM_CHUNK_BYTES = 1 << 20
# Words in file names that name a split: "ptb.valid.txt", "dev.jsonl", "test-00000-of-00001.parquet".
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "validation",
    "validation": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
_LOCAL_HELP = (
    "pass a path to a .txt (one sentence per line), .jsonl, .csv, .tsv or .parquet file, a folder of such files, "
    "or a folder written by Dataset.save_to_disk"
)
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")

AnyDatasetDict = DatasetDict | IterableDatasetDict
AnyDataset = Dataset | IterableDataset


class DataError(ValueError):
    """A problem with the input data or its arguments, explained in one line."""


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# =====================================================================================================================
# Loading
# =====================================================================================================================


def load_text_dataset(
    dataset: str | os.PathLike,
    dataset_config: str | None = None,
    split: str | None = None,
    text_column: str | None = None,
    validation_fraction: float = 0.05,
    seed: int = 0,
    streaming: bool = False,
) -> DatasetDict | IterableDatasetDict:
    """Load a corpus as a dict of splits with a single "text" column.

    Args:
        dataset: "builtin" (the package's own corpus), a Hugging Face Hub id ("stanfordnlp/imdb"), a local file
            (.txt one sentence per line, .json/.jsonl, .csv, .tsv, .parquet, .arrow), a folder of such files (file
            names containing train / valid / validation / dev / test pick the split; other files go to train), or a
            folder written by `save_to_disk`.
        dataset_config: the Hub configuration name (for example "wikitext-103-raw-v1").
        split: one split or a slice of it, in `datasets` syntax ("train", "train[:10%]", "train[:1000]+test");
            the result then has that one split, named after it ("train" when it mixes split names).
        text_column: the column holding the text. Default: "text" if present, else the only string column.
        validation_fraction: when there is a "train" but no "validation" split, this fraction of train (chosen with
            `seed`) becomes the validation split. 0 disables it.
        seed: seed of that choice.
        streaming: return an `IterableDatasetDict` that reads lazily (for corpora larger than memory).
    """
    if not 0 <= validation_fraction < 1:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    name = os.fspath(dataset)
    if name == "builtin":
        from sentmim.corpus import load_builtin_corpus

        splits = _select_splits(load_builtin_corpus(), split, name)
    elif _is_local(name):
        if dataset_config is not None:
            raise DataError(f"dataset_config={dataset_config!r} applies to Hub datasets only, not to {name!r}")
        splits = _load_local(Path(name).expanduser(), split, streaming)
    else:
        splits = _load_hub(name, dataset_config, split, streaming)
    splits = _rename_split_aliases(splits)  # also puts train, validation, test first
    splits = _keep_text_column(splits, text_column, name)
    splits = _add_validation_split(splits, validation_fraction, seed, name)
    if streaming and isinstance(splits, DatasetDict):  # builtin and save_to_disk data are loaded eagerly
        splits = IterableDatasetDict({key: ds.to_iterable_dataset() for key, ds in splits.items()})
    return splits


def _is_local(name: str) -> bool:
    """Whether `name` means a local path rather than a Hub id (also when that path is missing: we say so)."""
    if os.path.exists(os.path.expanduser(name)):
        return True
    if name.startswith(("/", ".", "~")) or name.endswith(("/", os.sep)) or Path(name).suffix.lower() in FILE_FORMATS:
        return True
    return not _HUB_ID.fullmatch(name)  # "a/b/c" or "my data" cannot be Hub ids


def _split_name(split: str) -> str:
    """The name of the split that `split` selects: "train[:10%]" -> "train"; mixed names -> "train"."""
    names = {part.split("[")[0].strip() for part in split.split("+")}
    return names.pop() if len(names) == 1 else "train"


def _as_dict(loaded: AnyDataset | AnyDatasetDict, split: str | None) -> AnyDatasetDict:
    if isinstance(loaded, Dataset):
        return DatasetDict({_split_name(split or "train"): loaded})
    if isinstance(loaded, IterableDataset):
        return IterableDatasetDict({_split_name(split or "train"): loaded})
    return loaded


def _load_local(path: Path, split: str | None, streaming: bool) -> AnyDatasetDict:
    if not path.exists():
        raise DataError(
            f"no such file or folder: {str(path)!r} (give an existing path, a Hub dataset id such as "
            "'stanfordnlp/imdb', or 'builtin')"
        )
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        return _load_saved(path, split)
    if path.is_dir():
        data_files, extension = _data_files_in_folder(path)
    else:
        extension = _extension(path)
        data_files = {"train": [str(path)]}
    builder, options = FILE_FORMATS[extension]
    if streaming and builder in ("text", "json"):
        options = {**options, "chunksize": _STREAM_CHUNK_BYTES}
    for files in data_files.values():
        for file in files:
            _check_data_file(Path(file), check_utf8=builder not in _BINARY_FORMATS)
    try:
        loaded = load_dataset(builder, data_files=data_files, split=split, streaming=streaming, **options)
    except Exception as error:  # datasets raises many types; the user needs the file and the reason
        raise DataError(f"could not read {str(path)!r} as {builder} data: {_one_line(error)}") from error
    return _as_dict(loaded, split)


def _extension(path: Path) -> str:
    extension = path.suffix.lower()
    if extension not in FILE_FORMATS:
        raise DataError(
            f"unsupported file type {extension or '(no extension)'!r} for {str(path)!r}: use one of "
            f"{', '.join(FILE_FORMATS)}, or a folder written by Dataset.save_to_disk"
        )
    return extension


def _split_of(relative_path: str) -> str:
    """The split a data file belongs to, from the words in its path; "train" when none names a split."""
    for word in re.split(r"[^a-z]+", relative_path.lower()):
        if word in SPLIT_ALIASES:
            return SPLIT_ALIASES[word]
    return "train"


def _data_files_in_folder(folder: Path) -> tuple[dict[str, list[str]], str]:
    """Data files under `folder`, grouped by split, and their common extension."""
    files = sorted(
        file
        for file in folder.rglob("*")
        if file.is_file()
        and file.suffix.lower() in FILE_FORMATS
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)  # skip .git, .cache, ...
    )
    if not files:
        raise DataError(f"no data files in folder {str(folder)!r}: {_LOCAL_HELP}")
    extensions = sorted({file.suffix.lower() for file in files})
    if len({FILE_FORMATS[ext] == FILE_FORMATS[extensions[0]] for ext in extensions}) > 1:
        raise DataError(f"folder {str(folder)!r} mixes file types {', '.join(extensions)}: keep one type per folder")
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(_split_of(str(file.relative_to(folder))), []).append(str(file))
    logger.info("data files in %s: %s", folder, {split: len(names) for split, names in by_split.items()})
    return by_split, extensions[0]


def _check_data_file(path: Path, check_utf8: bool) -> None:
    """Fail early, naming the file (and line), instead of deep inside `datasets`."""
    if path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} is empty: remove it or add sentences")
    if check_utf8:
        _check_utf8(path)


def _check_utf8(path: Path, chunk_size: int = 1 << 24) -> None:
    """Raise DataError naming the first line that is not UTF-8.

    The fast path decodes big chunks incrementally (a multi-byte character may straddle two chunks); only when that
    fails do we read line by line to find the line number.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(chunk_size):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        return
    except UnicodeDecodeError:
        pass
    with open(path, "rb") as stream:
        for line_number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{str(path)!r} is not valid UTF-8: line {line_number}, byte {error.start + 1} of that line "
                    f"({line[error.start : error.start + 1]!r}); re-encode the file as UTF-8 "
                    f"(for example: iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix})"
                ) from None
    raise DataError(f"{str(path)!r} is not valid UTF-8 (it ends in the middle of a character)")


def _load_saved(path: Path, split: str | None) -> DatasetDict:
    try:
        loaded = load_from_disk(str(path))
    except Exception as error:
        raise DataError(f"could not load the save_to_disk folder {str(path)!r}: {_one_line(error)}") from error
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return _select_splits(loaded, split, str(path))


def _select_splits(splits: DatasetDict, split: str | None, source: str) -> DatasetDict:
    """Apply a `datasets` split spec ("train", "train[:10%]", "train[:100]+test") to splits already in memory."""
    if split is None:
        return splits
    from datasets import ReadInstruction, concatenate_datasets

    try:
        instructions = ReadInstruction.from_spec(split).to_absolute({key: len(ds) for key, ds in splits.items()})
    except (ValueError, AssertionError) as error:
        raise DataError(
            f"bad split {split!r} for {source!r} (splits: {', '.join(splits)}): {_one_line(error)}"
        ) from error
    parts = [splits[i.splitname].select(range(i.from_, i.to)) for i in instructions]
    return DatasetDict({_split_name(split): parts[0] if len(parts) == 1 else concatenate_datasets(parts)})


def _is_offline_error(error: BaseException | None) -> bool:
    """Whether an exception (or one it wraps) means the Hub could not be reached."""
    while error is not None:
        if isinstance(error, ConnectionError | TimeoutError) or "Offline" in type(error).__name__:
            return True
        if "OfflineModeIsEnabled" in str(error) or type(error).__name__ in ("ConnectError", "ConnectTimeout"):
            return True
        error = error.__cause__ or error.__context__
    return False


def _load_hub(name: str, config: str | None, split: str | None, streaming: bool) -> AnyDatasetDict:
    try:
        loaded = load_dataset(name, config, split=split, streaming=streaming)
    except Exception as error:
        if _is_offline_error(error):
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = "offline mode: HF_HUB_OFFLINE=1" if offline else "no connection"
            raise DataError(
                f"{name!r} is not a local file or folder, and the Hugging Face Hub is unreachable ({why}), "
                f"so it cannot be downloaded: to use local data, {_LOCAL_HELP}; or use 'builtin'"
            ) from error
        raise DataError(f"could not load {name!r} from the Hugging Face Hub: {_one_line(error)}") from error
    return _as_dict(loaded, split)


def _rename_split_aliases(splits: AnyDatasetDict) -> AnyDatasetDict:
    """Call "valid" / "dev" splits "validation", so the training loop finds them."""
    renamed = {SPLIT_ALIASES.get(key, key): ds for key, ds in splits.items()}
    if len(renamed) != len(splits):  # e.g. both "dev" and "validation": keep the original names
        renamed = dict(splits)
    order = ["train", "validation", "test"]
    keys = [key for key in order if key in renamed] + [key for key in renamed if key not in order]
    return type(splits)({key: renamed[key] for key in keys})


# --- the text column -------------------------------------------------------------------------------------------------


def _column_types(ds: AnyDataset) -> dict[str, str]:
    """Column name -> a short type name ("string" for text). Streams without known features are peeked at."""
    if ds.features is not None:
        return {
            name: feature.dtype if isinstance(feature, Value) else type(feature).__name__
            for name, feature in ds.features.items()
        }
    first = next(iter(ds.take(1)), {})
    return {name: "string" if isinstance(value, str) else type(value).__name__ for name, value in first.items()}


def _keep_text_column(splits: AnyDatasetDict, text_column: str | None, source: str) -> AnyDatasetDict:
    kept = {}
    for key, ds in splits.items():
        types = _column_types(ds)
        listing = ", ".join(f"{name} ({kind})" for name, kind in types.items()) or "none"
        column = text_column
        if column is None:
            strings = [name for name, kind in types.items() if kind in ("string", "large_string")]
            if "text" in types:
                column = "text"
            elif len(strings) == 1:
                column = strings[0]
            else:
                raise DataError(
                    f"cannot tell which column of {source!r} holds the text (split {key!r} has columns: {listing}): "
                    "pass --text-column NAME (text_column=NAME in Python)"
                )
        if column not in types:
            raise DataError(f"no column {column!r} in split {key!r} of {source!r}; available columns: {listing}")
        if types[column] not in ("string", "large_string"):
            raise DataError(
                f"column {column!r} of {source!r} holds {types[column]}, not text; available columns: {listing}"
            )
        ds = ds.select_columns([column])
        kept[key] = ds.rename_column(column, "text") if column != "text" else ds
    return type(splits)(kept)


# --- the validation split --------------------------------------------------------------------------------------------


class _HashSplit:
    """A seeded coin per sentence, from a hash of its text, for carving validation out of a stream.

    Hashing the text rather than counting positions keeps the split fixed when shards are read in another order
    (shuffling a stream reorders its shards every epoch), and puts repeated sentences on the same side.
    """

    def __init__(self, fraction: float, seed: int, validation: bool):
        self.threshold = int(fraction * 2**64)
        self.key = str(seed).encode()
        self.validation = validation

    def __call__(self, text: str) -> bool:
        digest = hashlib.blake2b((text or "").encode("utf-8", "replace"), digest_size=8, key=self.key).digest()
        return (int.from_bytes(digest, "little") < self.threshold) == self.validation


def _add_validation_split(splits: AnyDatasetDict, fraction: float, seed: int, source: str) -> AnyDatasetDict:
    if "validation" in splits or "train" not in splits or fraction == 0:
        return splits
    train = splits["train"]
    if isinstance(train, IterableDataset):
        # A stream has no length, so each sentence goes to validation with probability `fraction`, decided by a
        # hash of its text. Note that reading the validation stream reads the whole train stream.
        carved = {
            "train": train.filter(_HashSplit(fraction, seed, validation=False), input_columns="text"),
            "validation": train.filter(_HashSplit(fraction, seed, validation=True), input_columns="text"),
        }
    else:
        if len(train) < 2:
            raise DataError(
                f"the train split of {source!r} has {len(train)} row(s): too few to carve a validation split; "
                "add data or give a validation file"
            )
        num_validation = max(1, round(len(train) * fraction))
        parts = train.train_test_split(test_size=num_validation, seed=seed, shuffle=True)
        carved = {"train": parts["train"], "validation": parts["test"]}
        logger.info("no validation split in %s: carved %d of %d train rows", source, num_validation, len(train))
    others = {key: ds for key, ds in splits.items() if key != "train"}
    return type(splits)({**carved, **others})


# =====================================================================================================================
# Cleaning
# =====================================================================================================================


def clean_text(text: str | None, lowercase: bool = False, max_chars: int | None = 20_000) -> str:
    """One line of text: whitespace runs become one space, ends are stripped, overly long lines are cut.

    Cutting at `max_chars` (at a space when there is one) bounds the cost of pathological lines, such as a whole
    book on one line; such a line is still longer than any sensible `max_length` in tokens, so `tokenize_dataset`
    then drops or truncates it like any other overlong sentence.
    """
    return _clean(text, lowercase, max_chars)[0]


def _clean(text: str | None, lowercase: bool, max_chars: int | None) -> tuple[str, bool]:
    """(the cleaned text, whether text was cut off at max_chars)."""
    if not text:
        return "", False
    cut = False
    if max_chars is not None and len(text) > 4 * max_chars:  # cheap bound before splitting
        cut = not text[4 * max_chars :].isspace()
        text = text[: 4 * max_chars]
    text = " ".join(text.replace("\ufeff", " ").split())  # str.split() knows all Unicode whitespace
    if max_chars is not None and len(text) > max_chars:
        cut = True
        text = text[:max_chars]
        if " " in text:
            text = text.rsplit(" ", 1)[0]
    return (text.lower() if lowercase else text), cut


class _CleanBatch:
    """Batched map for data in memory: clean, drop the lines left empty, and flag the lines cut ("cut" column).

    Dropping inside the map rather than with a filter keeps the result a plain table: a filter leaves an index
    mapping that makes every later read (tokenizing, batching) gather rows one by one.
    """

    def __init__(self, lowercase: bool, max_chars: int | None):
        self.lowercase = lowercase
        self.max_chars = max_chars

    def __call__(self, batch: dict) -> dict:
        texts, cut = [], []
        for text in batch["text"]:
            cleaned, was_cut = _clean(text, self.lowercase, self.max_chars)
            if cleaned:
                texts.append(cleaned)
                cut.append(was_cut)
        return {"text": texts, "cut": cut}


class _CleanExample:
    """Map for streams, one example at a time; logs how many lines it has cut at the 1st, 2nd, 4th, 8th, ... one."""

    def __init__(self, key: str, lowercase: bool, max_chars: int | None):
        self.key = key
        self.lowercase = lowercase
        self.max_chars = max_chars
        self.num_cut = 0

    def __call__(self, example: dict) -> dict:
        text, cut = _clean(example["text"], self.lowercase, self.max_chars)
        if cut:
            self.num_cut += 1
            if self.num_cut & (self.num_cut - 1) == 0:
                count, limit = self.num_cut, self.max_chars
                logger.warning("clean %s: %d line(s) cut to %d characters so far", self.key, count, limit)
        return {"text": text}


def _is_non_empty(text: str) -> bool:
    return bool(text)


def clean_dataset(
    ds: AnyDataset | AnyDatasetDict,
    lowercase: bool = False,
    max_chars: int | None = 20_000,
    num_proc: int | None = None,
):
    """Clean the "text" column (see `clean_text`) and drop lines that end up empty.

    Works on a single split or a dict of splits, in memory or streaming. Raises DataError if a split (in memory)
    has no text left. Logs how many lines were dropped, and warns how many were cut at `max_chars` characters.
    """
    if isinstance(ds, DatasetDict | IterableDatasetDict):
        return type(ds)({key: _clean_split(split, key, lowercase, max_chars, num_proc) for key, split in ds.items()})
    return _clean_split(ds, "data", lowercase, max_chars, num_proc)


def _clean_split(ds: AnyDataset, key: str, lowercase: bool, max_chars: int | None, num_proc: int | None):
    if isinstance(ds, IterableDataset):
        # Per example, not batched: in `datasets` streaming, a batched transform followed by another batched one
        # (the tokenizer) slows down quadratically with the batch size.
        return ds.map(_CleanExample(key, lowercase, max_chars)).filter(_is_non_empty, input_columns="text")
    clean = _CleanBatch(lowercase, max_chars)
    features = Features({"text": Value("string"), "cut": Value("bool")})
    cleaned = ds.map(
        clean, batched=True, remove_columns=ds.column_names, features=features, num_proc=num_proc, desc=f"clean {key}"
    )
    if len(cleaned) == 0:
        raise DataError(
            f"split {key!r} is empty after cleaning ({len(ds)} rows, all blank): check the file or the text column"
        )
    num_cut = int(_column(cleaned, "cut").sum())
    cleaned = cleaned.remove_columns("cut")
    if len(cleaned) < len(ds):
        logger.info("clean %s: dropped %d blank lines of %d", key, len(ds) - len(cleaned), len(ds))
    if num_cut:
        logger.warning("clean %s: cut %d line(s) longer than %d characters", key, num_cut, max_chars)
    return cleaned


# =====================================================================================================================
# Tokenizing
# =====================================================================================================================


def truncate_keeping_eos(ids: list[int], max_length: int, eos_token_id: int) -> list[int]:
    """Cut a token sequence to max_length, keeping its final EOS: the decoder must still learn where sentences end."""
    if len(ids) <= max_length:
        return ids
    return ids[: max_length - 1] + ids[-1:] if ids[-1] == eos_token_id else ids[:max_length]


class _Tokenize:
    """Batched map function: text -> input_ids (BOS ... EOS) and length, applying the overlong policy.

    Overlong sentences are dropped inside the map, which keeps the result a plain table (a filter would leave an
    index mapping that slows every later read); the caller counts them from the number of rows. When truncating
    data in memory it also returns "original_length" (the length before truncation), to count truncations.
    """

    def __init__(self, tokenizer, max_length: int, overlong: str, streaming: bool):
        self.encode = BatchEncoder(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id
        self.max_length = max_length
        self.truncate = overlong == "truncate"
        self.report_original = self.truncate and not streaming

    def __call__(self, batch: dict) -> dict:
        input_ids = self.encode(batch["text"])
        lengths = [len(ids) for ids in input_ids]
        original = lengths
        if lengths and max(lengths) > self.max_length:  # the rare batch with an overlong sentence
            input_ids, original = self._apply_policy(input_ids, lengths)
            lengths = [len(ids) for ids in input_ids]
        columns = {"input_ids": input_ids, "length": lengths}
        if self.report_original:
            columns["original_length"] = original
        return columns

    def _apply_policy(self, encoded: list[list[int]], lengths: list[int]) -> tuple[list[list[int]], list[int]]:
        kept, original = [], []
        for ids, num_tokens in zip(encoded, lengths, strict=True):
            if num_tokens > self.max_length:
                if not self.truncate:
                    continue
                ids = truncate_keeping_eos(ids, self.max_length, self.eos_token_id)
            kept.append(ids)
            original.append(num_tokens)
        return kept, original


def _column(ds: Dataset, name: str) -> np.ndarray:
    """A whole column as an array. Slicing reads it in one go; iterating a datasets Column reads row by row."""
    return np.asarray(ds[name][:], dtype=np.int64)


def tokenize_dataset(
    ds: AnyDataset | AnyDatasetDict,
    tokenizer,
    max_length: int,
    overlong: str = "drop",
    num_proc: int | None = None,
):
    """Tokenize the "text" column into "input_ids" (with BOS and EOS) and "length".

    Args:
        ds: a split or a dict of splits (in memory or streaming) with a "text" column.
        tokenizer: a fast tokenizer that adds BOS and EOS (see `sentmim.tokenization`).
        max_length: the longest sequence kept, BOS and EOS included.
        overlong: what to do with longer sentences: "drop" them, or "truncate" them to max_length tokens, the last
            one still EOS.
        num_proc: processes for `datasets.map` (in memory only).

    Returns:
        (tokenized, stats). For a single split, stats has num_sentences, num_overlong, num_dropped, num_truncated,
        num_tokens (after the policy); for a dict, one such dict per split. Streams are tokenized lazily, so their
        counts are None.
    """
    if overlong not in ("drop", "truncate"):
        raise DataError(f"overlong must be 'drop' or 'truncate', got {overlong!r}")
    if max_length < 3:
        raise DataError(f"max_length must be at least 3 (BOS, one token, EOS), got {max_length}")
    if isinstance(ds, DatasetDict | IterableDatasetDict):
        tokenized, stats = {}, {}
        for key, part in ds.items():
            tokenized[key], stats[key] = _tokenize_split(part, key, tokenizer, max_length, overlong, num_proc)
        return type(ds)(tokenized), stats
    return _tokenize_split(ds, "data", tokenizer, max_length, overlong, num_proc)


def _tokenize_split(ds: AnyDataset, key: str, tokenizer, max_length: int, overlong: str, num_proc: int | None):
    streaming = isinstance(ds, IterableDataset)
    function = _Tokenize(tokenizer, max_length, overlong, streaming)
    if streaming:
        tokenized = ds.map(function, batched=True, remove_columns=ds.column_names or ["text"])
        stats = dict.fromkeys(("num_sentences", "num_overlong", "num_dropped", "num_truncated", "num_tokens"))
        return tokenized, stats
    features = Features({"input_ids": List(Value("int32")), "length": Value("int64")})
    if function.report_original:
        features["original_length"] = Value("int64")
    tokenized = ds.map(  # explicit features: the columns exist even if every sentence is dropped
        function, batched=True, remove_columns=ds.column_names, features=features, num_proc=num_proc,
        desc=f"tokenize {key}",
    )
    if overlong == "truncate":
        num_overlong = int((_column(tokenized, "original_length") > max_length).sum())
        tokenized = tokenized.remove_columns("original_length")
    else:
        num_overlong = len(ds) - len(tokenized)
    stats = {
        "num_sentences": len(ds),
        "num_overlong": num_overlong,
        "num_dropped": num_overlong if overlong == "drop" else 0,
        "num_truncated": num_overlong if overlong == "truncate" else 0,
        "num_tokens": int(_column(tokenized, "length").sum()),
    }
    done = "dropped" if overlong == "drop" else "truncated"
    log = logger.warning if num_overlong > 0.05 * max(len(ds), 1) else logger.info
    log("tokenize %s: %d sentences, %d longer than %d tokens %s", key, len(ds), num_overlong, max_length, done)
    return tokenized, stats


# =====================================================================================================================
# Batching
# =====================================================================================================================


class LengthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices whose sentences have similar lengths, in an order fixed by (seed, epoch).

    With shuffle, the indices are permuted, cut into chunks of `chunk_batches * batch_size`, each chunk is sorted by
    length and cut into batches, and the batch order is shuffled. Large chunks give batches of nearly equal length,
    while the permutation keeps batches random across epochs. `chunk_batches=1` gives plain random batches. Without
    shuffle, the chunks are taken in dataset order and batches come in order (for evaluation).

    Pass it as `batch_sampler=` to a DataLoader and call `set_epoch(epoch)` before each epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        chunk_batches: int = 100,
    ):
        if batch_size < 1 or chunk_batches < 1:
            raise DataError(f"batch_size and chunk_batches must be >= 1, got {batch_size} and {chunk_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.chunk_size = chunk_batches * batch_size  # a multiple of batch_size: only the last batch can be short
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if batches and self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            yield batch.tolist()


def collate_batch(examples: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad "input_ids" on the right to the longest example; attention_mask is 1 on tokens, 0 on padding."""
    sequences = [_as_list(example["input_ids"]) for example in examples]
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    mask = np.arange(lengths.max()) < lengths[:, None]
    input_ids = np.full(mask.shape, pad_token_id, dtype=np.int64)
    # One copy of all tokens, row after row, into the positions the mask marks (numpy fills them in row order).
    input_ids[mask] = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def _as_list(sequence) -> list | tuple:
    return sequence if isinstance(sequence, list | tuple) else sequence.tolist()  # a tensor or an array


class _BucketedStream(torch.utils.data.IterableDataset):
    """Length bucketing for streams: read a window of examples, sort it by length, yield its batches shuffled.

    Only one window is held at a time, so memory stays flat however large the stream is.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool,
        seed: int,
        window: int,
        drop_last: bool,
        collate: Callable[[Sequence[dict]], dict],
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.drop_last = drop_last
        self.collate = collate
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        source = self.dataset
        if self.shuffle and isinstance(source, IterableDataset):
            source = _shuffle_stream(source, self.seed, self.window)  # shuffles shards and examples
            source.set_epoch(self.epoch)
        buffer: list[list[int]] = []
        for example in source:
            buffer.append(example["input_ids"])
            if len(buffer) == self.window:
                yield from self._batches(buffer, rng)
                buffer = []
        if buffer:
            yield from self._batches(buffer, rng)

    def _batches(self, buffer: list, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = sorted(range(len(buffer)), key=lambda i: len(buffer[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:  # only the last window can be short
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            yield self.collate([{"input_ids": buffer[i]} for i in batch])


def _shuffle_stream(stream: IterableDataset, seed: int, buffer_size: int) -> IterableDataset:
    """`stream.shuffle`, without the shard interleaving of datasets >= 5 for a single shard of Python examples.

    That interleaving hands every example over between threads, which took more than half the time of iterating a
    one-file stream; with one shard there is nothing to interleave, and the examples come in the same order. (Streams
    still read as Arrow tables, without a map, are left alone: their buffer fills by tables of another size then.)
    """
    options = {}
    examples_only = getattr(getattr(stream, "_ex_iterable", None), "iter_arrow", True) is None
    one_shard = stream.num_shards == 1 and examples_only
    if one_shard and "max_buffer_input_shards" in inspect.signature(stream.shuffle).parameters:
        options["max_buffer_input_shards"] = 1
    return stream.shuffle(seed=seed, buffer_size=buffer_size, **options)


def make_dataloader(
    tokenized_ds,
    batch_size: int,
    pad_token_id: int,
    shuffle: bool = True,
    seed: int = 0,
    bucket: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    bucket_batches: int = 100,
) -> torch.utils.data.DataLoader:
    """A DataLoader of padded batches {"input_ids", "attention_mask"} over a tokenized split.

    In memory, batches come from a `LengthBucketSampler` (reach it as `loader.batch_sampler`). For a stream,
    length bucketing works over a window of `bucket_batches * batch_size` examples (reach it as `loader.dataset`).
    Either way, call `set_epoch(epoch)` on that object before each epoch (accelerate's prepared loader does it
    for you on one process); `bucket=False` gives random batches with the same (seed, epoch) determinism.
    """
    collate = functools.partial(collate_batch, pad_token_id=pad_token_id)
    window_batches = bucket_batches if bucket else 1
    if isinstance(tokenized_ds, IterableDataset | torch.utils.data.IterableDataset):
        window = window_batches * batch_size
        stream = _BucketedStream(tokenized_ds, batch_size, shuffle, seed, window, drop_last, collate)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)
    columns = getattr(tokenized_ds, "column_names", None) or []
    if "length" in columns:
        lengths = _column(tokenized_ds, "length")
    elif "input_ids" in columns:
        lengths = [len(ids) for ids in tokenized_ds["input_ids"][:]]
    else:
        lengths = [len(tokenized_ds[i]["input_ids"]) for i in range(len(tokenized_ds))]
    if "input_ids" in columns and len(columns) > 1:
        tokenized_ds = tokenized_ds.select_columns(["input_ids"])  # do not read columns we do not batch
    sampler = LengthBucketSampler(lengths, batch_size, shuffle, seed, drop_last, chunk_batches=window_batches)
    loader = torch.utils.data.DataLoader
    return loader(tokenized_ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
