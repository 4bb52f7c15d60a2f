"""Sentences from documents (`--split-sentences`): each row of a dataset becomes the sentences it holds.

    split_sentences("First one. Second one!\n\nA new paragraph.")    # ['First one.', 'Second one!', 'A new ...']
    sentences, counts = split_dataset(raw["train"])                  # counts: {"num_rows": ..., "num_sentences": ...}

A row is cut at blank lines first (paragraphs, headings), then each paragraph is segmented by nupunkt, an offline
Punkt segmenter (why nupunkt, and what is left to the length rule: docs/finetuning.md). A single newline is
whitespace (hard-wrapped prose); only a blank line always ends a sentence.
"""

from __future__ import annotations

import re

import nupunkt
from datasets import Dataset, Features, IterableDataset, Value

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# WikiText writes 0.7 as "0 @.@ 7" and nupunkt ends a sentence after "@."; that period is hidden from it behind a
# character of the same length that is no sentence punctuation, and put back in the sentences.
NUMBER_POINT, HIDDEN_POINT = "@.@", "@\u2024@"  # U+2024 ONE DOT LEADER


def split_sentences(text: str | None) -> list[str]:
    """The sentences of a text, in order, each stripped; no text is lost but whitespace between sentences."""
    if not text:
        return []
    hide = NUMBER_POINT in text and HIDDEN_POINT not in text  # a text holding the stand-in is left as it is
    if hide:
        text = text.replace(NUMBER_POINT, HIDDEN_POINT)
    sentences = []
    for paragraph in PARAGRAPH_BREAK.split(text):
        if paragraph.strip():
            sentences += [sentence.strip() for sentence in nupunkt.sent_tokenize(paragraph) if sentence.strip()]
    return [sentence.replace(HIDDEN_POINT, NUMBER_POINT) for sentence in sentences] if hide else sentences


def _split_batch(batch: dict) -> dict:
    return {"text": [sentence for text in batch["text"] for sentence in split_sentences(text)]}


def split_dataset(ds: Dataset | IterableDataset, key: str = "data") -> tuple[Dataset | IterableDataset, dict]:
    """Every row of the "text" column replaced by its sentences, in order. Returns (sentences, counts) with counts
    {"num_rows", "num_sentences"} (None for a stream, which is split lazily as it is read)."""
    if isinstance(ds, IterableDataset):
        return ds.map(_split_batch, batched=True, remove_columns=ds.column_names or ["text"]), {
            "num_rows": None, "num_sentences": None}
    sentences = ds.map(_split_batch, batched=True, remove_columns=ds.column_names,
                       features=Features({"text": Value("string")}), desc=f"split {key} into sentences")
    return sentences, {"num_rows": len(ds), "num_sentences": len(sentences)}
