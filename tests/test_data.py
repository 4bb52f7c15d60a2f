"""Loading from every supported source, one-line errors, cleaning, tokenizing, and length-bucketed batching."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

import sentmim.batching as batching_module
import sentmim.data as data_module
from sentmim.apps.corpus import builtin_sentences
from sentmim.batching import LengthBucketSampler, collate_batch, make_dataloader
from sentmim.data import DataError, load_text_dataset
from sentmim.preprocessing import clean_dataset, clean_text, tokenize_dataset
from sentmim.tokenization import train_tokenizer

SENTENCES = builtin_sentences(60, seed=5)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(builtin_sentences(2000, seed=0), kind="word")


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def all_texts(splits):
    return [text for split in splits.values() for text in split["text"]]


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def test_txt_file_gets_a_seeded_validation_split(tmp_path):
    path = write_lines(tmp_path / "corpus.txt", SENTENCES)
    splits = load_text_dataset(str(path), validation_fraction=0.1, seed=3)
    assert list(splits) == ["train", "validation"]
    assert len(splits["validation"]) == round(0.1 * len(SENTENCES))
    assert sorted(all_texts(splits)) == sorted(SENTENCES)  # a partition of the file's lines
    again = load_text_dataset(path, validation_fraction=0.1, seed=3)
    assert list(again["validation"]["text"]) == list(splits["validation"]["text"])
    other_seed = load_text_dataset(path, validation_fraction=0.1, seed=4)
    assert list(other_seed["validation"]["text"]) != list(splits["validation"]["text"])
    assert list(load_text_dataset(path, validation_fraction=0.0)) == ["train"]


def test_jsonl_csv_tsv_and_parquet_files(tmp_path):
    rows = [{"id": i, "sentence": text, "label": i % 2} for i, text in enumerate(SENTENCES)]
    with open(tmp_path / "corpus.jsonl", "w") as stream:
        stream.writelines(json.dumps(row) + "\n" for row in rows)
    csv_text = "sentence,label\n" + "".join(f'"{text}, really",{i % 2}\n' for i, text in enumerate(SENTENCES))
    (tmp_path / "corpus.csv").write_text(csv_text)
    (tmp_path / "corpus.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}, ok\t1\n" for t in SENTENCES))
    pq.write_table(pa.table({"text": SENTENCES, "label": [0] * len(SENTENCES)}), tmp_path / "corpus.parquet")

    expected = {
        "corpus.jsonl": SENTENCES,  # the only string column is picked
        "corpus.csv": [f"{text}, really" for text in SENTENCES],  # the comma inside quotes is kept
        "corpus.tsv": [f"{text}, ok" for text in SENTENCES],
        "corpus.parquet": SENTENCES,  # "text" is preferred
    }
    for name, texts in expected.items():
        splits = load_text_dataset(tmp_path / name, validation_fraction=0.1)
        assert all(split.column_names == ["text"] for split in splits.values()), name
        assert sorted(all_texts(splits)) == sorted(texts), name


@pytest.mark.parametrize(
    "names",
    [
        ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        ("train.txt", "validation.txt", "test.txt"),
        ("train.jsonl", "dev.jsonl", "test.jsonl"),
    ],
)
def test_folder_of_split_files(tmp_path, names):
    contents = {"train": SENTENCES[:40], "validation": SENTENCES[40:50], "test": SENTENCES[50:]}
    for name, lines in zip(names, contents.values(), strict=True):
        if name.endswith(".jsonl"):
            (tmp_path / name).write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
        else:
            write_lines(tmp_path / name, lines)
    (tmp_path / "README.md").write_text("not data")
    splits = load_text_dataset(tmp_path)
    assert list(splits) == ["train", "validation", "test"]  # no carving: the folder has a validation file
    assert {key: list(split["text"]) for key, split in splits.items()} == contents


def test_save_to_disk_folders(tmp_path):
    saved = DatasetDict(
        {
            "train": Dataset.from_dict({"body": SENTENCES[:50], "n": list(range(50))}),
            "test": Dataset.from_dict({"body": SENTENCES[50:], "n": list(range(10))}),
        }
    )
    saved.save_to_disk(tmp_path / "dict")
    splits = load_text_dataset(tmp_path / "dict", validation_fraction=0.2)
    assert list(splits) == ["train", "validation", "test"]
    assert len(splits["validation"]) == 10 and list(splits["test"]["text"]) == SENTENCES[50:]
    assert sorted(splits["train"]["text"][:] + splits["validation"]["text"][:]) == sorted(SENTENCES[:50])

    saved["test"].save_to_disk(tmp_path / "single")
    single = load_text_dataset(tmp_path / "single", validation_fraction=0.0)
    assert list(single) == ["train"] and list(single["train"]["text"]) == SENTENCES[50:]
    sliced = load_text_dataset(tmp_path / "dict", split="test[:3]")
    assert list(sliced) == ["test"] and list(sliced["test"]["text"]) == SENTENCES[50:53]


def test_split_slicing_on_files_and_builtin(tmp_path):
    path = write_lines(tmp_path / "corpus.txt", SENTENCES)
    sliced = load_text_dataset(path, split="train[:10]", validation_fraction=0.0)
    assert list(sliced) == ["train"] and list(sliced["train"]["text"]) == SENTENCES[:10]
    builtin = load_text_dataset("builtin", split="test[:7]")
    assert list(builtin) == ["test"] and len(builtin["test"]) == 7
    full = load_text_dataset("builtin")
    assert list(full) == ["train", "validation", "test"] and len(full["train"]) == 20000


def test_streaming_carves_validation_by_a_seeded_hash(tmp_path):
    lines = builtin_sentences(1000, seed=9)
    path = write_lines(tmp_path / "big.txt", lines)
    splits = load_text_dataset(path, streaming=True, validation_fraction=0.2, seed=1)
    assert isinstance(splits, IterableDatasetDict)
    train = [example["text"] for example in splits["train"]]
    validation = [example["text"] for example in splits["validation"]]
    assert sorted(train + validation) == sorted(lines)
    assert 150 <= len(validation) <= 250
    assert validation == [example["text"] for example in splits["validation"]]  # same seed, same split
    other = load_text_dataset(path, streaming=True, validation_fraction=0.2, seed=2)
    assert [example["text"] for example in other["validation"]] != validation
    # The split follows the sentences, not their positions: the same lines in two shards split the same way.
    (tmp_path / "shards").mkdir()
    write_lines(tmp_path / "shards" / "part-b.txt", lines[:500])
    write_lines(tmp_path / "shards" / "part-a.txt", lines[500:])
    sharded = load_text_dataset(tmp_path / "shards", streaming=True, validation_fraction=0.2, seed=1)
    assert sorted(example["text"] for example in sharded["validation"]) == sorted(validation)
    builtin = load_text_dataset("builtin", streaming=True)
    assert isinstance(builtin["test"], IterableDataset)


# ---------------------------------------------------------------------------------------------------------------------
# Errors: one line that names the culprit and says what to do
# ---------------------------------------------------------------------------------------------------------------------


def check_one_line(error_info):
    assert "\n" not in str(error_info.value)


def test_missing_file_and_folder(tmp_path):
    for missing in (tmp_path / "nope.txt", f"{tmp_path}/no-such-folder/"):
        with pytest.raises(DataError, match=r"no such file or folder: .*(nope\.txt|no-such-folder)") as info:
            load_text_dataset(missing)
        check_one_line(info)


def test_hub_id_while_offline_says_so_and_suggests_local_files():
    with pytest.raises(DataError, match=r"'someorg/nonexistent'.*Hub is unreachable.*offline.*\.txt.*save_to_disk"):
        load_text_dataset("someorg/nonexistent")


def test_hub_errors_without_the_offline_flag(monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(data_module, "load_dataset", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(DataError, match=r"Hub is unreachable \(no connection\)"):
        load_text_dataset("org/corpus")

    def not_found(*args, **kwargs):
        raise FileNotFoundError("Dataset 'org/corpus' doesn't exist on the Hub\nsecond line")

    monkeypatch.setattr(data_module, "load_dataset", not_found)
    with pytest.raises(DataError, match=r"could not load 'org/corpus' from the .*Hub: FileNotFoundError") as info:
        load_text_dataset("org/corpus")
    check_one_line(info)


def test_missing_wrong_and_ambiguous_text_columns(tmp_path):
    txt = write_lines(tmp_path / "a.txt", SENTENCES)
    with pytest.raises(DataError, match=r"no column 'body' .*available columns: text \(string\)"):
        load_text_dataset(txt, text_column="body")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"title": t, "body": t, "stars": 3}) + "\n" for t in SENTENCES))
    with pytest.raises(DataError, match=r"cannot tell which column .*title \(string\), body \(string\).*--text-col"):
        load_text_dataset(jsonl)
    with pytest.raises(DataError, match=r"column 'stars' .* holds int64, not text"):
        load_text_dataset(jsonl, text_column="stars")
    assert all_texts(load_text_dataset(jsonl, text_column="body", validation_fraction=0)) == SENTENCES
    with_text = tmp_path / "b.jsonl"  # several string columns, one of them "text": that one is the default
    with_text.write_text("".join(json.dumps({"title": "t", "text": t}) + "\n" for t in SENTENCES))
    assert all_texts(load_text_dataset(with_text, validation_fraction=0)) == SENTENCES


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"data file .*empty\.txt.* is empty"):
        load_text_dataset(tmp_path / "empty.txt")
    blank = write_lines(tmp_path / "blank.txt", ["", "   ", "\t", " \u00a0 "])
    with pytest.raises(DataError, match=r"split 'train' is empty after cleaning"):
        clean_dataset(load_text_dataset(blank))
    with pytest.raises(DataError, match="too few to carve a validation split"):
        load_text_dataset(write_lines(tmp_path / "one.txt", ["just one"]))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"first line\nsecond line\n" + "caf\u00e9 au lait\n".encode("latin-1") + b"last\n")
    with pytest.raises(DataError, match=r"latin1\.txt.* is not valid UTF-8: line 3, byte 4") as info:
        load_text_dataset(path)
    check_one_line(info)


def test_utf8_check_handles_characters_across_chunk_boundaries(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["çàé€ 日本語"] * 50)
    data_module._check_utf8(path, chunk_size=7)  # many multi-byte characters straddle the 7-byte chunks
    path.write_bytes(path.read_bytes()[:-2])  # cut in the middle of a character
    with pytest.raises(DataError, match="not valid UTF-8"):
        data_module._check_utf8(path, chunk_size=7)


def test_unsupported_extension_and_bad_folders(tmp_path):
    (tmp_path / "notes.docx").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.docx' for .*notes\.docx.*\.txt"):
        load_text_dataset(tmp_path / "notes.docx")
    with pytest.raises(DataError, match=r"no data files in folder"):
        load_text_dataset(tmp_path)
    write_lines(tmp_path / "train.txt", SENTENCES)
    (tmp_path / "test.csv").write_text("text\nhello\n")
    with pytest.raises(DataError, match=r"mixes file types \.csv, \.txt"):
        load_text_dataset(tmp_path)


def test_bad_arguments(tmp_path, tokenizer):
    path = write_lines(tmp_path / "a.txt", SENTENCES)
    with pytest.raises(DataError, match="validation_fraction"):
        load_text_dataset(path, validation_fraction=1.5)
    with pytest.raises(DataError, match="dataset_config='x' applies to Hub datasets only"):
        load_text_dataset(path, dataset_config="x")
    with pytest.raises(DataError, match=r"could not read .*a\.txt.*split"):
        load_text_dataset(path, split="nosuchsplit")
    with pytest.raises(DataError, match=r"bad split 'nosuchsplit' for 'builtin'"):
        load_text_dataset("builtin", split="nosuchsplit")
    ds = Dataset.from_dict({"text": SENTENCES})
    with pytest.raises(DataError, match="overlong must be 'drop' or 'truncate'"):
        tokenize_dataset(ds, tokenizer, max_length=10, overlong="wrap")
    with pytest.raises(DataError, match="max_length must be at least 3"):
        tokenize_dataset(ds, tokenizer, max_length=2)


# ---------------------------------------------------------------------------------------------------------------------
# Cleaning and tokenizing
# ---------------------------------------------------------------------------------------------------------------------


def test_clean_text():
    assert clean_text("  the \t cat\u00a0 sat \n") == "the cat sat"
    assert clean_text("\ufeffThe Cat", lowercase=True) == "the cat"
    assert clean_text(None) == ""
    assert clean_text("aaa bbb ccc", max_chars=9) == "aaa bbb"  # cut at a space
    assert len(clean_text("x" * 100_000, max_chars=500)) == 500


def test_cleaning_counts_the_lines_it_cuts(caplog):
    raw = ["short", "x " * 30, "a" + " " * 200, "   ", "y" * 100]  # max_chars=20: two lines lose text
    with caplog.at_level("INFO", logger="sentmim.preprocessing"):
        cleaned = clean_dataset(Dataset.from_dict({"text": raw}), max_chars=20)
    assert list(cleaned["text"]) == ["short", "x x x x x x x x x x", "a", "y" * 20]
    assert "cut 2 line(s) longer than 20 characters" in caplog.text  # "a" + spaces loses nothing
    assert "dropped 1 blank lines of 5" in caplog.text
    caplog.clear()
    stream = clean_dataset(Dataset.from_dict({"text": raw}).to_iterable_dataset(), max_chars=20)
    with caplog.at_level("WARNING", logger="sentmim.preprocessing"):
        assert [example["text"] for example in stream] == list(cleaned["text"])
    assert "1 line(s) cut to 20 characters so far" in caplog.text
    assert "2 line(s) cut to 20 characters so far" in caplog.text


def test_clean_dataset_drops_blank_lines_in_memory_and_streaming():
    raw = ["a  b", "", "   ", "C d", None, "e"]
    expected = ["a b", "c d", "e"]
    cleaned = clean_dataset(Dataset.from_dict({"text": raw}), lowercase=True)
    assert list(cleaned["text"]) == expected
    stream = clean_dataset(Dataset.from_dict({"text": raw}).to_iterable_dataset(), lowercase=True)
    assert [example["text"] for example in stream] == expected


def test_tokenize_drop_and_truncate_against_word_counts(tokenizer):
    texts = builtin_sentences(300, seed=11)
    max_length = 10
    full_lengths = [len(text.split()) + 2 for text in texts]  # word-level: one id per word, plus BOS and EOS
    overlong = sum(length > max_length for length in full_lengths)
    assert 0 < overlong < len(texts)
    ds = Dataset.from_dict({"text": texts})

    dropped, stats = tokenize_dataset(ds, tokenizer, max_length=max_length, overlong="drop")
    assert dropped.column_names == ["input_ids", "length"]
    assert stats["num_dropped"] == stats["num_overlong"] == overlong and stats["num_truncated"] == 0
    assert len(dropped) == len(texts) - overlong
    assert list(dropped["length"]) == [n for n in full_lengths if n <= max_length]
    assert stats["num_tokens"] == sum(n for n in full_lengths if n <= max_length)

    truncated, stats = tokenize_dataset(ds, tokenizer, max_length=max_length, overlong="truncate")
    assert stats["num_truncated"] == overlong and stats["num_dropped"] == 0 and len(truncated) == len(texts)
    for text, ids, length in zip(texts, truncated["input_ids"], truncated["length"], strict=True):
        full = tokenizer(text)["input_ids"]
        assert length == len(ids) == min(len(full), max_length)
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert ids[:-1] == full[: len(ids) - 1]


def test_tokenize_dict_of_splits_and_streams(tokenizer):
    texts = builtin_sentences(200, seed=12)
    splits = DatasetDict(
        {"train": Dataset.from_dict({"text": texts[:150]}), "test": Dataset.from_dict({"text": texts[150:]})}
    )
    tokenized, stats = tokenize_dataset(splits, tokenizer, max_length=12)
    assert set(stats) == {"train", "test"} and stats["test"]["num_sentences"] == 50
    streamed, stream_stats = tokenize_dataset(splits["train"].to_iterable_dataset(), tokenizer, max_length=12)
    assert stream_stats["num_dropped"] is None  # counted lazily: unknown
    assert [example["input_ids"] for example in streamed] == list(tokenized["train"]["input_ids"])


def test_results_in_memory_are_plain_tables(tmp_path, tokenizer):
    # Rows are dropped inside the maps, not by filters: a filter leaves an index mapping, through which every later
    # read gathers rows one by one (several times slower on a million sentences).
    texts = ["", *builtin_sentences(300, seed=13), "   "]
    cleaned = clean_dataset(Dataset.from_dict({"text": texts}))
    assert len(cleaned) == 300 and cleaned._indices is None
    tokenized, stats = tokenize_dataset(cleaned, tokenizer, max_length=10)
    assert 0 < stats["num_dropped"] < 300 and tokenized._indices is None
    everything, stats = tokenize_dataset(cleaned, tokenizer, max_length=3)  # all dropped: the columns remain
    assert len(everything) == 0 and everything.column_names == ["input_ids", "length"] and stats["num_tokens"] == 0
    assert tokenized.features == everything.features


def test_streaming_reads_text_files_in_small_chunks(tmp_path, monkeypatch):
    calls = []

    def recording_load_dataset(*args, **kwargs):
        calls.append(kwargs)
        return load_dataset(*args, **kwargs)

    load_dataset = data_module.load_dataset
    monkeypatch.setattr(data_module, "load_dataset", recording_load_dataset)
    monkeypatch.setattr(data_module, "_STREAM_CHUNK_BYTES", 4096)  # many chunk boundaries in a small file
    lines = builtin_sentences(3000, seed=14)
    path = write_lines(tmp_path / "corpus.txt", lines)
    streamed = load_text_dataset(path, streaming=True, validation_fraction=0)
    assert [example["text"] for example in streamed["train"]] == lines  # no line lost or split at a boundary
    assert calls[-1]["chunksize"] == 4096
    load_text_dataset(path, validation_fraction=0)
    assert "chunksize" not in calls[-1]  # in memory: the datasets default


def test_very_long_line_is_dropped_or_truncated_not_a_crash(tmp_path, tokenizer):
    long_line = " ".join(["the dog"] * 50_000)  # 100k characters on one line
    path = write_lines(tmp_path / "long.txt", [*SENTENCES[:20], long_line, *SENTENCES[20:40]])
    splits = clean_dataset(load_text_dataset(path, validation_fraction=0))
    tokenized, stats = tokenize_dataset(splits, tokenizer, max_length=32, overlong="truncate")
    assert stats["train"]["num_truncated"] == 1 and max(tokenized["train"]["length"]) == 32
    _, stats = tokenize_dataset(splits, tokenizer, max_length=32, overlong="drop")
    assert stats["train"]["num_dropped"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------------------


def padding_fraction(batches, lengths):
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return 1 - sum(lengths[i] for batch in batches for i in batch) / padded


@pytest.fixture(scope="module")
def lengths():
    return np.random.default_rng(0).integers(3, 60, size=5000).tolist()


def test_sampler_yields_every_index_once_per_epoch(lengths):
    sampler = LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=0)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        assert len(batches) == len(sampler) == -(-len(lengths) // 32)
        assert sum(len(batch) < 32 for batch in batches) == (1 if len(lengths) % 32 else 0)
    full = LengthBucketSampler(lengths, batch_size=32, drop_last=True)
    batches = list(full)
    assert len(batches) == len(full) == len(lengths) // 32 and all(len(batch) == 32 for batch in batches)
    assert len({i for batch in batches for i in batch}) == 32 * len(batches)


def test_sampler_has_far_less_padding_than_random_batches(lengths):
    bucketed = list(LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=0))
    permutation = np.random.default_rng(1).permutation(len(lengths))
    random_batches = [permutation[i : i + 32].tolist() for i in range(0, len(lengths), 32)]
    assert padding_fraction(bucketed, lengths) < 0.25 * padding_fraction(random_batches, lengths)
    plain = list(LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=0, chunk_batches=1))
    assert padding_fraction(plain, lengths) > 0.5 * padding_fraction(random_batches, lengths)


def test_sampler_order_depends_only_on_seed_and_epoch(lengths):
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=4)
    sampler.set_epoch(3)
    epoch3 = list(sampler)
    resumed = LengthBucketSampler(lengths, batch_size=16, seed=4)  # e.g. a restarted run
    resumed.set_epoch(3)
    assert list(resumed) == epoch3
    resumed.set_epoch(4)
    assert list(resumed) != epoch3
    assert list(LengthBucketSampler(lengths, batch_size=16, seed=5, shuffle=True)) != list(resumed)
    in_order = LengthBucketSampler(lengths, batch_size=16, shuffle=False, seed=1)
    assert list(in_order) == list(LengthBucketSampler(lengths, batch_size=16, shuffle=False, seed=2))
    assert sorted(i for batch in in_order for i in batch) == list(range(len(lengths)))


def test_collate_pads_right_with_the_pad_id():
    examples = [{"input_ids": [2, 5, 6, 3]}, {"input_ids": torch.tensor([2, 9, 3])}, {"input_ids": [2, 3]}]
    batch = collate_batch(examples, pad_token_id=7)
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 9, 3, 7], [2, 3, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]


def test_collate_accepts_tuples_and_arrays():
    examples = [{"input_ids": (2, 5, 3)}, {"input_ids": np.array([2, 3])}]
    batch = collate_batch(examples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    single = collate_batch([{"input_ids": [2, 3]}], pad_token_id=0)
    assert single["input_ids"].tolist() == [[2, 3]] and single["attention_mask"].tolist() == [[1, 1]]


def add_one(example):
    return {"x": example["x"] + 1}


@pytest.mark.parametrize("num_shards", [1, 3])
def test_streams_shuffle_as_datasets_does(num_shards):
    """Tokenized streams (mapped: examples, not Arrow tables) come in datasets' own shuffled order; every stream is
    shuffled (a permutation that depends on the seed and the epoch)."""
    stream = Dataset.from_dict({"x": list(range(500))}).to_iterable_dataset(num_shards=num_shards)
    for mapped in (True, False):
        source = stream.map(add_one) if mapped else stream
        orders = {}
        for epoch in (0, 3):
            ours, theirs = batching_module._shuffle_stream(source, 7, 64), source.shuffle(seed=7, buffer_size=64)
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            orders[epoch] = [example["x"] for example in ours]
            assert sorted(orders[epoch]) == sorted(example["x"] for example in source)
            if mapped:
                assert orders[epoch] == [example["x"] for example in theirs]
        assert orders[0] != orders[3] and orders[0] != sorted(orders[0])


def batches_of(loader, pad_token_id):
    """The unpadded rows of every batch, checking that padding is pad_token_id exactly where the mask is 0."""
    batches = []
    for batch in loader:
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert ((batch["input_ids"] == pad_token_id) == (batch["attention_mask"] == 0)).all()
        ids_and_masks = zip(batch["input_ids"], batch["attention_mask"], strict=True)
        batches.append([tuple(ids[mask.bool()].tolist()) for ids, mask in ids_and_masks])
    return batches


def rows_of(loader, pad_token_id):
    return [row for batch in batches_of(loader, pad_token_id) for row in batch]


@pytest.mark.parametrize("bucket", [True, False])
def test_make_dataloader_covers_every_sentence(tokenizer, bucket):
    tokenized, _ = tokenize_dataset(Dataset.from_dict({"text": builtin_sentences(500, seed=2)}), tokenizer, 40)
    loader = make_dataloader(
        tokenized, batch_size=16, pad_token_id=tokenizer.pad_token_id, shuffle=True, bucket=bucket
    )
    expected = Counter(tuple(ids) for ids in tokenized["input_ids"])
    assert Counter(rows_of(loader, tokenizer.pad_token_id)) == expected
    loader.batch_sampler.set_epoch(1)
    assert Counter(rows_of(loader, tokenizer.pad_token_id)) == expected


def test_streaming_dataloader_buckets_a_window(tokenizer):
    texts = builtin_sentences(600, seed=6)
    stream, _ = tokenize_dataset(Dataset.from_dict({"text": texts}).to_iterable_dataset(num_shards=2), tokenizer, 40)
    loader = make_dataloader(stream, batch_size=8, pad_token_id=0, shuffle=True, seed=0, bucket_batches=25)
    first = rows_of(loader, 0)
    expected = Counter(tuple(tokenizer(text)["input_ids"]) for text in texts)
    assert Counter(first) == expected
    assert rows_of(loader, 0) == first  # same epoch, same order
    loader.dataset.set_epoch(1)
    assert rows_of(loader, 0) != first

    batches = batches_of(loader, 0)
    assert max(len(batch) for batch in batches) == 8
    row_lengths = [len(row) for batch in batches for row in batch]
    bucketed = [[sum(map(len, batches[:b])) + i for i in range(len(batches[b]))] for b in range(len(batches))]
    permutation = np.random.default_rng(0).permutation(len(row_lengths))
    random_batches = [permutation[i : i + 8].tolist() for i in range(0, len(row_lengths), 8)]
    assert padding_fraction(bucketed, row_lengths) < 0.25 * padding_fraction(random_batches, row_lengths)


def test_folder_files_naming_no_split_are_reported_not_read(tmp_path, caplog):
    """Split names come from datasets' rules; a file naming no split beside ones that do is left out, and said so."""
    write_lines(tmp_path / "train.txt", SENTENCES[:20])
    write_lines(tmp_path / "dev.txt", SENTENCES[20:30])
    write_lines(tmp_path / "notes.txt", ["not a sentence of the corpus"])
    with caplog.at_level("WARNING", logger="sentmim.data"):
        splits = load_text_dataset(tmp_path)
    assert {key: len(split) for key, split in splits.items()} == {"train": 20, "validation": 10}
    assert "notes.txt" in caplog.text and "not read" in caplog.text
    (tmp_path / "train.txt").unlink()
    (tmp_path / "dev.txt").unlink()
    write_lines(tmp_path / "more.txt", SENTENCES[:5])
    only = load_text_dataset(tmp_path, validation_fraction=0.0)
    assert list(only) == ["train"] and len(only["train"]) == 6  # no split word anywhere: every file is train


@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_an_empty_split_tokenizes_to_an_empty_table_with_the_columns(tokenizer, overlong):
    empty = DatasetDict({"train": Dataset.from_dict({"text": ["a b ."]}),
                         "validation": Dataset.from_dict({"text": []})})
    tokenized, stats = tokenize_dataset(empty, tokenizer, max_length=8, overlong=overlong)
    assert tokenized["validation"].column_names == ["input_ids", "length"] and len(tokenized["validation"]) == 0
    assert stats["validation"] == {"num_sentences": 0, "num_overlong": 0, "num_dropped": 0, "num_truncated": 0,
                                   "num_tokens": 0, "num_chars": 0, "num_chars_kept": 0, "num_unknown": 0,
                                   "num_unknown_in_text": 0}


def test_linked_files_in_a_folder_are_read_without_a_false_warning(tmp_path, caplog, monkeypatch):
    """A folder of links given by a relative path (benchmarks/finetune links WikiText-2's valid file as train.txt):
    each file gives the split its link names, and none is reported as unread (datasets names files by absolute
    path)."""
    originals = tmp_path / "originals"
    originals.mkdir()
    write_lines(originals / "valid.txt", SENTENCES[:40])
    write_lines(originals / "test.txt", SENTENCES[40:])
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "train.txt").symlink_to(originals / "valid.txt")
    (folder / "test.txt").symlink_to(originals / "test.txt")
    monkeypatch.chdir(tmp_path)
    splits = load_text_dataset("linked", validation_fraction=0)
    assert {key: list(split["text"]) for key, split in splits.items()} == {"train": SENTENCES[:40],
                                                                           "test": SENTENCES[40:]}
    assert not [record for record in caplog.records if "not read" in record.getMessage()]
