"""Tokenizer training: fixed special ids, BOS/EOS placement, PTB's literal <unk>, round trips, save and reload."""

import random
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer

from sentmim.apps.corpus import builtin_sentences
from sentmim.tokenization import (
    SPECIAL_TOKENS,
    decode_keep_unknown,
    encode_batch,
    load_tokenizer,
    train_tokenizer,
)

PTB_LINES = [
    "pierre <unk> N years old will join the board as a nonexecutive director nov. N",
    "mr. <unk> is chairman of <unk> n.v. the dutch publishing group",
    "the company does n't expect the <unk> to be completed",
]


@pytest.fixture(scope="module")
def texts():
    return builtin_sentences(1500, seed=0) + PTB_LINES


@pytest.fixture(scope="module")
def word_tokenizer(texts):
    return train_tokenizer(texts, kind="word")


def small_vocab(kind):
    """Large enough for a word vocabulary to cover `texts`, small enough that subword kinds must split words."""
    return 2000 if kind == "word" else 600


@pytest.fixture(scope="module", params=["word", "bpe", "unigram"])
def any_tokenizer(request, texts):
    return train_tokenizer(texts, kind=request.param, vocab_size=small_vocab(request.param))


def test_special_tokens_have_fixed_ids(any_tokenizer):
    assert any_tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3]
    assert (any_tokenizer.pad_token_id, any_tokenizer.unk_token_id) == (0, 1)
    assert (any_tokenizer.bos_token_id, any_tokenizer.eos_token_id) == (2, 3)
    # Every id is used once: no second "<unk>" entry learnt from the text.
    vocab = any_tokenizer.get_vocab()
    assert sorted(vocab.values()) == list(range(len(vocab)))


def test_bos_and_eos_wrap_every_sentence(any_tokenizer, texts):
    for text in texts[:50]:
        ids = any_tokenizer(text)["input_ids"]
        assert ids[0] == 2 and ids[-1] == 3
        assert 2 not in ids[1:-1] and 3 not in ids[1:-1] and 0 not in ids
        assert ids[1:-1] == any_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_literal_unk_in_text_maps_to_the_unk_id(any_tokenizer):
    ids = any_tokenizer("the <unk> dog")["input_ids"]
    assert ids.count(1) == 1
    assert any_tokenizer.convert_ids_to_tokens(ids).count("<unk>") == 1


def test_word_level_ids_are_the_vocabulary_lookups(word_tokenizer, texts):
    vocab = word_tokenizer.get_vocab()
    for text in texts[:200]:
        expected = [2] + [vocab.get(word, 1) for word in text.split()] + [3]
        assert word_tokenizer(text)["input_ids"] == expected
    assert word_tokenizer("zyzzyva the")["input_ids"][1] == 1  # unseen word -> <unk>


@pytest.mark.parametrize("kind", ["word", "bpe", "unigram"])
def test_decode_round_trip(kind, texts):
    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=small_vocab(kind))
    for text in texts[:300]:  # every word of these was seen in training
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    if kind == "bpe":  # byte-level: lossless on any text, unseen words and characters included
        unseen = "Zebras can't type ünïcödé"
        assert tokenizer.decode(tokenizer(unseen)["input_ids"], skip_special_tokens=True) == unseen


def test_word_decoding_joins_words_with_single_spaces(word_tokenizer):
    text = "he did n't see the dog , did he ?"
    assert word_tokenizer.decode(word_tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_decode_keep_unknown_keeps_unk_and_stops_at_eos(word_tokenizer):
    vocab = word_tokenizer.get_vocab()
    words = ["the", "<unk>", "dog"]
    ids = torch.tensor([[2, vocab["the"], 1, vocab["dog"], 3, vocab["fox"], 0], [2, vocab["dog"], 3, 0, 0, 0, 0]])
    assert decode_keep_unknown(word_tokenizer, ids) == [" ".join(words), "dog"]
    assert word_tokenizer.decode(ids[0].tolist()[:5], skip_special_tokens=True) == "the dog"  # why the helper exists


def test_batch_padding_uses_pad_id_zero(word_tokenizer, texts):
    batch = texts[:5]
    encoded = word_tokenizer(batch, padding=True, return_tensors="pt")
    for row, text in enumerate(batch):
        single = word_tokenizer(text)["input_ids"]
        n = len(single)
        assert encoded["input_ids"][row, :n].tolist() == single
        assert encoded["attention_mask"][row].tolist() == [1] * n + [0] * (encoded["input_ids"].shape[1] - n)
        assert (encoded["input_ids"][row, n:] == 0).all()


def test_save_and_reload_give_the_same_ids(any_tokenizer, texts, tmp_path):
    any_tokenizer.save_pretrained(tmp_path)
    batch = texts[:20] + PTB_LINES
    expected = any_tokenizer(batch)["input_ids"]
    for reloaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        assert reloaded(batch)["input_ids"] == expected
        assert reloaded.pad_token_id == 0 and reloaded.model_max_length == any_tokenizer.model_max_length
        assert reloaded.decode(expected[0], skip_special_tokens=True) == any_tokenizer.decode(
            expected[0], skip_special_tokens=True
        )


def test_load_tokenizer_without_tokenizer_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match=r"no tokenizer in .*empty-folder.*save_pretrained"):
        load_tokenizer(tmp_path / "empty-folder")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ValueError, match="folder has no tokenizer.json"):
        load_tokenizer(tmp_path / "empty-folder")


def test_vocab_size_min_frequency_and_lowercase():
    texts = ["a a a b b c", "a b d", "The Cat"]
    counts = Counter(word for text in texts for word in text.split())
    frequent = {word for word, count in counts.items() if count >= 2}
    tokenizer = train_tokenizer(texts, kind="word", min_frequency=2)
    assert set(tokenizer.get_vocab()) == set(SPECIAL_TOKENS) | frequent
    assert len(train_tokenizer(texts, kind="word", vocab_size=6)) == 6  # 4 specials + the 2 most frequent
    lowered = train_tokenizer(texts, kind="word", lowercase=True, model_max_length=17)
    assert lowered("THE cat")["input_ids"] == lowered("the CAT")["input_ids"]
    assert 1 not in lowered("the cat")["input_ids"]
    assert lowered.model_max_length == 17


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'chars'"):
        train_tokenizer(["a b"], kind="chars")


# ---------------------------------------------------------------------------------------------------------------------
# encode_batch: the same ids as the tokenizer call, faster
# ---------------------------------------------------------------------------------------------------------------------

TRICKY = [
    "", " ", "the dog", "  the \t dog \n", "The Dog", "THE <unk> DOG", "a<unk>b", "<unk><unk>", "<<unk>>", "<unk>>",
    "<s> the </s>", "the</s>", "</s", "<s", "<pad>", "x <pad>y", "<UNK> dog", "dog\x1cthe", "dog\x1fthe",
    "the\u00a0dog", "the\u3000dog", "the\u2028dog", "the\x85dog", "the\u200bdog", "\ufeffthe", "ΣΑΣ dog",
    "İstanbul the", "ünïcödé the", "zyzzyva",
]


def fuzz_texts(words: list[str], n: int, seed: int) -> list[str]:
    """Random strings of words, special tokens and awkward characters, glued by awkward separators."""
    rng = random.Random(seed)
    pieces = words + SPECIAL_TOKENS + ["<", ">", "/", "Σ", "İ", "é", "Zebra", "DOG", "\x1d"]
    separators = [" ", " ", " ", "  ", "\t", "\n", "", "\x1c", "\u00a0", "\u2003"]
    return [
        "".join(rng.choice(pieces) + rng.choice(separators) for _ in range(rng.randrange(0, 12))) for _ in range(n)
    ]


@pytest.mark.parametrize("kind,lowercase", [("word", False), ("word", True), ("bpe", False), ("unigram", False)])
def test_encode_batch_gives_the_tokenizer_ids(texts, kind, lowercase):
    tokenizer = train_tokenizer(texts + ["The Dog Σ"], kind=kind, lowercase=lowercase, vocab_size=small_vocab(kind))
    words = sorted({word for text in texts[:100] for word in text.split()})
    batch = TRICKY + PTB_LINES + texts[:300] + fuzz_texts(words, 2000, seed=0)
    assert encode_batch(tokenizer, batch) == tokenizer(batch)["input_ids"]
    assert encode_batch(tokenizer, []) == []


def test_encode_batch_follows_the_tokenizer_call_whatever_the_backend_state(texts):
    batch = TRICKY + texts[:50]
    bpe = train_tokenizer(texts, kind="bpe", vocab_size=600)
    bpe.backend_tokenizer.enable_truncation(5)  # the tokenizer call turns it off again
    bpe.backend_tokenizer.enable_padding(length=40)
    assert encode_batch(bpe, batch) == bpe(batch)["input_ids"]
    word = train_tokenizer(texts, kind="word")
    word.add_tokens(["zyzzyva"])
    assert encode_batch(word, batch) == word(batch)["input_ids"]
    assert word("a zyzzyva")["input_ids"][-2] == len(word) - 1
