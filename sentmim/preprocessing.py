"""From raw text to token ids: clean each line, then tokenize it with BOS and EOS under a length rule.

    raw = clean_dataset(raw)                          # drop blank lines, collapse whitespace
    tokenized, stats = tokenize_dataset(raw, tokenizer, max_length=64)

Both work on one split or a dict of splits, in memory or streaming.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, List, Value

from .data import AnyDataset, AnyDatasetDict, DataError
from .tokenization import encode_batch

logger = logging.getLogger(__name__)

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


def _clean_batch(batch: dict, lowercase: bool, max_chars: int | None) -> dict:
    """Batched map for data in memory: clean, drop the lines left empty, and flag the lines cut ("cut" column).

    Dropping inside the map rather than with a filter keeps the result a plain table: a filter leaves an index
    mapping that makes every later read (tokenizing, batching) gather rows one by one.
    """
    texts, cut = [], []
    for text in batch["text"]:
        cleaned, was_cut = _clean(text, lowercase, max_chars)
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
        return ds.map(_CleanExample(key, lowercase, max_chars)).filter(bool, input_columns="text")
    clean = functools.partial(_clean_batch, lowercase=lowercase, max_chars=max_chars)
    features = Features({"text": Value("string"), "cut": Value("bool")})
    cleaned = ds.map(
        clean, batched=True, remove_columns=ds.column_names, features=features, num_proc=num_proc, desc=f"clean {key}"
    )
    if len(cleaned) == 0:
        raise DataError(
            f"split {key!r} is empty after cleaning ({len(ds)} rows, all blank): check the file or the text column"
        )
    num_cut = int(column_as_array(cleaned, "cut").sum())
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

    Overlong sentences are dropped inside the map, as `_clean_batch` drops blank lines and for the same reason; the
    caller counts them from the number of rows. For data in memory it also returns, per kept sentence, the
    COUNTED_COLUMNS: its length before truncation, the characters of its text that the kept tokens cover, its unknown
    tokens, and how many of those are written as the unknown token in the text itself (PTB's and WikiText's "<unk>").
    """

    def __init__(self, tokenizer, max_length: int, overlong: str, streaming: bool):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.unknown_id = distinct_unknown_id(tokenizer)
        self.max_length = max_length
        self.truncate = overlong == "truncate"
        self.count = not streaming

    def __call__(self, batch: dict) -> dict:
        texts = batch["text"]
        input_ids = encode_batch(self.tokenizer, texts)
        lengths = [len(ids) for ids in input_ids]
        kept = range(len(texts))
        if lengths and max(lengths) > self.max_length:  # the rare batch with an overlong sentence
            kept = [row for row, length in enumerate(lengths) if self.truncate or length <= self.max_length]
            input_ids = [truncate_keeping_eos(input_ids[row], self.max_length, self.eos_token_id) for row in kept]
        columns = {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}
        if self.count:
            columns.update(
                original_length=[lengths[row] for row in kept],
                chars_kept=[self._kept_chars(texts[row], lengths[row], ids)
                            for row, ids in zip(kept, input_ids, strict=True)],
                unknown=[ids.count(self.unknown_id) for ids in input_ids],  # 0 when the id is None
                unknown_in_text=[texts[row].count(self.tokenizer.unk_token) if self.unknown_id is not None else 0
                                 for row in kept],
            )
        return columns

    def _kept_chars(self, text: str, num_tokens: int, ids: list[int]) -> int:
        """Characters of `text` that its kept tokens cover: all of them, unless the sentence was truncated."""
        if num_tokens == len(ids):
            return len(text)
        offsets = self.tokenizer(text, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        last_kept = len(ids) - (2 if ids[-1] == self.eos_token_id else 1)  # the last token of the text kept
        return offsets[last_kept][1]


def distinct_unknown_id(tokenizer) -> int | None:
    """The unknown token's id, or None when the tokenizer has none of its own (GPT-2's stands for BOS and EOS too)."""
    unknown = tokenizer.unk_token_id
    shared = (None, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return None if unknown in shared else unknown


def column_as_array(ds: Dataset, name: str) -> np.ndarray:
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

    Returns:
        (tokenized, stats). For a single split, stats has num_sentences, num_overlong, num_dropped, num_truncated,
        num_tokens (after the policy, BOS and EOS included), num_chars and num_chars_kept (characters of text before
        and after the policy: what the kept tokens cover), num_unknown (unknown tokens among those kept) and
        num_unknown_in_text (those written as the unknown token in the text itself); for a dict, one such dict per
        split. Streams are tokenized lazily, so their counts are None.
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


# Per-row counts, removed after use: original_length gives num_truncated, the others are summed into num_<name>.
COUNTED_COLUMNS = ("original_length", "chars_kept", "unknown", "unknown_in_text")
STATS_KEYS = ("num_sentences", "num_overlong", "num_dropped", "num_truncated", "num_tokens", "num_chars",
              "num_chars_kept", "num_unknown", "num_unknown_in_text")


def _tokenize_split(ds: AnyDataset, key: str, tokenizer, max_length: int, overlong: str, num_proc: int | None):
    streaming = isinstance(ds, IterableDataset)
    function = _Tokenize(tokenizer, max_length, overlong, streaming)
    if streaming:
        tokenized = ds.map(function, batched=True, remove_columns=ds.column_names or ["text"])
        return tokenized, dict.fromkeys(STATS_KEYS)
    features = Features({"input_ids": List(Value("int32")), "length": Value("int64"),
                         **{name: Value("int64") for name in COUNTED_COLUMNS}})
    if len(ds) == 0:  # datasets does not map an empty split: it would keep the text column, and no other
        tokenized = Dataset.from_dict({name: [] for name in features}, features=features)
    else:  # explicit features: the columns exist even if every sentence is dropped
        tokenized = ds.map(function, batched=True, remove_columns=ds.column_names, features=features,
                           num_proc=num_proc, desc=f"tokenize {key}")
    return _tokenized_with_stats(ds, tokenized, key, max_length, overlong)


def _tokenized_with_stats(ds: Dataset, tokenized: Dataset, key: str, max_length: int, overlong: str):
    num_dropped = len(ds) - len(tokenized)
    num_truncated = int((column_as_array(tokenized, "original_length") > max_length).sum())
    num_overlong = num_dropped + num_truncated
    stats = {
        "num_sentences": len(ds),
        "num_overlong": num_overlong,
        "num_dropped": num_dropped,
        "num_truncated": num_truncated,
        "num_tokens": int(column_as_array(tokenized, "length").sum()),
        "num_chars": text_length(ds),  # of the text before the length rule; num_chars_kept: after it
        **{f"num_{name}": int(column_as_array(tokenized, name).sum()) for name in COUNTED_COLUMNS[1:]},
    }
    done = "dropped" if overlong == "drop" else "truncated"
    logger.info("tokenize %s: %d sentences, %d longer than %d tokens %s", key, len(ds), num_overlong, max_length, done)
    return tokenized.remove_columns(list(COUNTED_COLUMNS)), stats


def text_length(ds: Dataset) -> int:
    """Characters in the "text" column, counted by Arrow (an index mapping, as `select` leaves, is respected)."""
    import pyarrow.compute

    if len(ds) == 0:  # an empty column may have no type, and Arrow has no length for it
        return 0
    table = ds.with_format("arrow")[:]
    return int(pyarrow.compute.sum(pyarrow.compute.utf8_length(table["text"])).as_py() or 0)


# =====================================================================================================================
# What data preparation did, in one line
# =====================================================================================================================

LOST_TEXT_WARNING = 0.05  # share of a split's characters lost to the length rule above which training warns


def lost_text(stats: dict) -> float | None:
    """Share of a split's characters that the length rule dropped or cut off (None for a stream)."""
    if stats.get("num_chars") is None:
        return None
    # (lost / all, not 1 - kept / all: 5% lost must read 0.05, not 0.05000000000000004, against the 5% threshold)
    return (stats["num_chars"] - stats["num_chars_kept"]) / stats["num_chars"] if stats["num_chars"] else 0.0


def preparation_summary(stats: dict, max_length: int, overlong: str, split_counts: dict | None = None) -> str:
    """One line: per split, the rows split into sentences (with --split-sentences), the sentences kept, truncated
    and dropped by the length rule, and the share of the text lost. `stats` is `tokenize_dataset`'s for a dict of
    splits; `split_counts` maps a split to `sentences.split_dataset`'s counts."""
    parts = []
    for key, counts in stats.items():
        if counts["num_sentences"] is None:
            parts.append(f"{key} streamed (counted as it is read)")
            continue
        rows = (split_counts or {}).get(key, {}).get("num_rows")
        source = f"{rows:,} rows split into " if rows is not None else ""
        kept = counts["num_sentences"] - counts["num_dropped"]
        parts.append(f"{key}: {source}{counts['num_sentences']:,} sentences, {kept:,} kept "
                     f"({counts['num_truncated']:,} truncated), {counts['num_dropped']:,} dropped, "
                     f"{lost_text(counts):.1%} of the text lost")
    return f"data (sentences over {max_length} tokens: {overlong}): " + "; ".join(parts)


def lost_text_warning(stats: dict, max_length: int, overlong: str, split_sentences: bool) -> str | None:
    """A warning naming the splits that lose more than LOST_TEXT_WARNING of their text, and the remedies."""
    losing = [f"{key} {share:.1%}" for key, counts in stats.items()
              if (share := lost_text(counts)) is not None and share > LOST_TEXT_WARNING]
    if not losing:
        return None
    remedies = ([] if split_sentences else ["--split-sentences (rows holding paragraphs or documents)"]) + \
        [f"a larger --max-length (now {max_length})"] + \
        (["--overlong truncate (keep the start of long sentences)"] if overlong == "drop" else [])
    what = "dropped" if overlong == "drop" else "cut off"
    return (f"{', '.join(losing)} of the text is {what} as longer than --max-length {max_length} tokens; "
            f"remedies: {', '.join(remedies)}")
