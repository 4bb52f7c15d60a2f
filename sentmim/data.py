"""Where text comes from: any corpus as a dict of splits with one "text" column.

    raw = load_text_dataset("stanfordnlp/imdb")      # a Hub id, "ptb/" (a folder), "corpus.jsonl", a saved dataset

`load_text_dataset` always returns a `datasets.DatasetDict` (an `IterableDatasetDict` when streaming) whose splits
have exactly one column, "text", and that has a "validation" split whenever it has a "train" split. Every bad input
raises `DataError` (a `ValueError`) with one line that names the file, column or argument and says what to do.
Cleaning and tokenizing are in `sentmim.preprocessing`, batching in `sentmim.batching`.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value, load_dataset, load_from_disk
from datasets.data_files import DataFilesDict, get_data_patterns

from .files import first_line

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
# Split names of Hub datasets that mean one of ours (train, validation, test).
SPLIT_ALIASES = {
    "training": "train",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
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


# Corpora known by a name, each loaded by a function that returns a DatasetDict (the package's demo corpus registers
# itself as "builtin" when sentmim is imported).
NAMED_DATASETS: dict[str, Callable[[], DatasetDict]] = {}


def register_dataset(name: str, load: Callable[[], DatasetDict]) -> None:
    """Make `load_text_dataset(name)` (and `--dataset NAME`) load the DatasetDict that `load()` returns."""
    NAMED_DATASETS[name] = load


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
        dataset: a registered name (`register_dataset`; "builtin" is the demo's corpus), a Hugging Face Hub id, a
            local file (one of FILE_FORMATS; .txt is one sentence per line), a folder of such files (the split of a
            file comes from its name, by datasets' rules), or a folder written by `save_to_disk`.
        split: one split or a slice of it, in `datasets` syntax ("train[:10%]", "train[:1000]+test"); the result
            then has that one split, named after it ("train" when it mixes split names).
        text_column: default: "text" if present, else the only string column.
        validation_fraction: when there is a "train" but no "validation" split, this fraction of train (chosen with
            `seed`) becomes the validation split. 0 disables it.
        streaming: return an `IterableDatasetDict` that reads lazily (for corpora larger than memory).
    """
    if not 0 <= validation_fraction < 1:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    name = os.fspath(dataset)
    if name in NAMED_DATASETS:
        splits = _select_splits(NAMED_DATASETS[name](), split, name)
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
    if isinstance(loaded, DatasetDict | IterableDatasetDict):
        return loaded
    dict_type = IterableDatasetDict if isinstance(loaded, IterableDataset) else DatasetDict
    return dict_type({_split_name(split or "train"): loaded})


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
        extension = path.suffix.lower()
        if extension not in FILE_FORMATS:
            raise DataError(
                f"unsupported file type {extension or '(no extension)'!r} for {str(path)!r}: use one of "
                f"{', '.join(FILE_FORMATS)}, or a folder written by Dataset.save_to_disk"
            )
        data_files = {"train": [str(path)]}
    builder, options = FILE_FORMATS[extension]
    if streaming and builder in ("text", "json"):
        options = {**options, "chunksize": _STREAM_CHUNK_BYTES}
    # Fail early, naming the file (and line), instead of deep inside `datasets`.
    for file in (Path(name) for names in data_files.values() for name in names):
        if file.stat().st_size == 0:
            raise DataError(f"data file {str(file)!r} is empty: remove it or add sentences")
        if builder not in _BINARY_FORMATS:
            _check_utf8(file)
    try:
        loaded = load_dataset(builder, data_files=data_files, split=split, streaming=streaming, **options)
    except Exception as error:  # datasets raises many types; the user needs the file and the reason
        raise DataError(f"could not read {str(path)!r} as {builder} data: {first_line(error)}") from error
    return _as_dict(loaded, split)


def _data_files_in_folder(folder: Path) -> tuple[dict[str, list[str]], str]:
    """Data files under `folder` grouped by split, and their common extension.

    The split of a file comes from its name by the rules of `datasets` ("ptb.train.txt", "dev.jsonl",
    "test-00000-of-00001.parquet"; with no split word in any name, every file is train)."""
    files = sorted(
        str(file)
        for file in folder.rglob("*")
        if file.is_file()
        and file.suffix.lower() in FILE_FORMATS
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)  # skip .git, .cache, ...
    )
    if not files:
        raise DataError(f"no data files in folder {str(folder)!r}: {_LOCAL_HELP}")
    extensions = sorted({Path(file).suffix.lower() for file in files})
    builder = FILE_FORMATS[extensions[0]]
    if any(FILE_FORMATS[extension] != builder for extension in extensions):
        raise DataError(f"folder {str(folder)!r} mixes file types {', '.join(extensions)}: keep one type per folder")
    resolved = DataFilesDict.from_patterns(
        get_data_patterns(str(folder)), base_path=str(folder), allowed_extensions=extensions
    )
    by_split = {str(split): sorted(names) for split, names in resolved.items() if names}
    # datasets names files by absolute path: compare real paths, or a folder given by a relative path (or holding
    # links) would have every file reported as unread.
    read = {os.path.realpath(name) for names in by_split.values() for name in names}
    ignored = sorted(file for file in files if os.path.realpath(file) not in read)
    if ignored:
        logger.warning(
            "folder %s: %d file(s) name no split while others do, and are not read: %s", folder, len(ignored),
            ", ".join(Path(name).name for name in ignored[:3]) + (" ..." if len(ignored) > 3 else ""),
        )
    logger.info("data files in %s: %s", folder, {split: len(names) for split, names in by_split.items()})
    return by_split, extensions[0]


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
        raise DataError(f"could not load the save_to_disk folder {str(path)!r}: {first_line(error)}") from error
    return _select_splits(_as_dict(loaded, None), split, str(path))


def _select_splits(splits: DatasetDict, split: str | None, source: str) -> DatasetDict:
    """Apply a `datasets` split spec ("train", "train[:10%]", "train[:100]+test") to splits already in memory."""
    if split is None:
        return splits
    from datasets import ReadInstruction, concatenate_datasets

    try:
        instructions = ReadInstruction.from_spec(split).to_absolute({key: len(ds) for key, ds in splits.items()})
    except (ValueError, AssertionError) as error:
        raise DataError(
            f"bad split {split!r} for {source!r} (splits: {', '.join(splits)}): {first_line(error)}"
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
        raise DataError(f"could not load {name!r} from the Hugging Face Hub: {first_line(error)}") from error
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


def _hash_split(text: str, fraction: float, seed: int, validation: bool) -> bool:
    """A seeded coin per sentence, from a hash of its text, for carving validation out of a stream: whether the
    sentence goes to validation (`validation=True`) or to train.

    Hashing the text rather than counting positions keeps the split fixed when shards are read in another order
    (shuffling a stream reorders its shards every epoch), and puts repeated sentences on the same side.
    """
    digest = hashlib.blake2b((text or "").encode("utf-8", "replace"), digest_size=8, key=str(seed).encode()).digest()
    return (int.from_bytes(digest, "little") < int(fraction * 2**64)) == validation


def _add_validation_split(splits: AnyDatasetDict, fraction: float, seed: int, source: str) -> AnyDatasetDict:
    if "validation" in splits or "train" not in splits or fraction == 0:
        return splits
    train = splits["train"]
    if isinstance(train, IterableDataset):
        # A stream has no length, so each sentence goes to validation with probability `fraction`, decided by a
        # hash of its text. Note that reading the validation stream reads the whole train stream.
        coin = functools.partial(_hash_split, fraction=fraction, seed=seed)
        carved = {
            "train": train.filter(coin, input_columns="text", fn_kwargs={"validation": False}),
            "validation": train.filter(coin, input_columns="text", fn_kwargs={"validation": True}),
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
