"""sentmim.sentences (--split-sentences): rows become their sentences, nothing else changes, and the counts say so."""

from pathlib import Path

import pytest
from datasets import Dataset

from sentmim.sentences import split_dataset, split_sentences

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "valid.txt"


def same_characters(text: str, sentences: list[str]) -> bool:
    return "".join(text.split()) == "".join("".join(sentences).split())


def test_sentences_of_a_paragraph():
    text = "The market fell sharply. Traders sold! Did it recover? Mr. Smith said no."
    assert split_sentences(text) == ["The market fell sharply.", "Traders sold!", "Did it recover?",
                                     "Mr. Smith said no."]


def test_blank_lines_end_sentences_single_newlines_do_not():
    text = "A heading\n\nThe paragraph starts here\nand goes on. It ends.\n \n\tLast one"
    assert split_sentences(text) == ["A heading", "The paragraph starts here\nand goes on.", "It ends.", "Last one"]


def test_wikitext_number_points_are_not_sentence_ends():
    text = "It weighs 0 @.@ 7 – 2 @.@ 2 kg . It is blue ."
    assert split_sentences(text) == ["It weighs 0 @.@ 7 – 2 @.@ 2 kg .", "It is blue ."]
    # A text that holds the stand-in itself is segmented as it is, and keeps its characters.
    odd = "A @\u2024@ sign and 0 @.@ 7 . Next ."
    assert same_characters(odd, split_sentences(odd)) and "@\u2024@" in "".join(split_sentences(odd))


@pytest.mark.parametrize("text", [None, "", "  \n\n  "])
def test_nothing_to_split(text):
    assert split_sentences(text) == []


def test_no_text_is_lost_on_wikitext():
    if not WIKITEXT.is_file():
        pytest.skip(f"{WIKITEXT} is absent")
    rows = [row for row in WIKITEXT.read_text(encoding="utf-8").splitlines() if row.strip()][:300]
    pieces = [split_sentences(row) for row in rows]
    assert all(same_characters(row, sentences) for row, sentences in zip(rows, pieces, strict=True))
    assert sum(map(len, pieces)) > 2 * len(rows)  # paragraphs do become sentences


def test_split_dataset_keeps_order_and_counts_in_memory_and_streaming():
    rows = ["One. Two.", "", "Three!\n\nFour? Five.", "Six"]
    expected = [sentence for row in rows for sentence in split_sentences(row)]
    assert expected == ["One.", "Two.", "Three!", "Four?", "Five.", "Six"]
    sentences, counts = split_dataset(Dataset.from_dict({"text": rows, "label": [0, 1, 0, 1]}))
    assert list(sentences["text"]) == expected and sentences.column_names == ["text"]
    assert counts == {"num_rows": 4, "num_sentences": 6}
    stream, stream_counts = split_dataset(Dataset.from_dict({"text": rows}).to_iterable_dataset())
    assert [example["text"] for example in stream] == expected
    assert stream_counts == {"num_rows": None, "num_sentences": None}
