"""The built-in corpus: deterministic, PTB-like in form, disjoint splits, and real latent structure."""

import re
import time
from collections import Counter

import pytest

from sentmim.apps.corpus import TOPICS, builtin_sentences, load_builtin_corpus

TOKEN = re.compile(r"[a-z]+|n't|'s|[.,?!]")


@pytest.fixture(scope="module")
def sentences():
    return builtin_sentences(20000, seed=0)


def test_same_seed_same_sentences_and_other_seed_other_sentences():
    first = builtin_sentences(300, seed=7)
    assert first == builtin_sentences(300, seed=7)
    assert builtin_sentences(100, seed=7) == first[:100]  # one stream: asking for more only extends it
    other = builtin_sentences(300, seed=8)
    assert len(set(first) & set(other)) < 30


def test_ptb_like_format(sentences):
    for sentence in sentences:
        tokens = sentence.split(" ")
        assert " ".join(sentence.split()) == sentence  # single spaces, no leading or trailing space
        assert sentence == sentence.lower()
        assert all(TOKEN.fullmatch(token) for token in tokens), sentence  # punctuation is its own token
        assert 4 <= len(tokens) <= 25, sentence
        assert tokens[-1] in (".", "?", "!")


def test_vocabulary_and_length_statistics(sentences):
    counts = Counter(token for sentence in sentences for token in sentence.split())
    assert 400 <= len(counts) <= 800
    lengths = [len(sentence.split()) for sentence in sentences]
    assert 6 <= sum(lengths) / len(lengths) <= 15
    assert min(lengths) == 4 and max(lengths) >= 22  # the whole range is used
    # Zipf-like: a few words are frequent, many are rare.
    frequencies = sorted(counts.values(), reverse=True)
    assert frequencies[0] > 50 * frequencies[len(frequencies) // 2]
    assert len(set(sentences)) > 0.97 * len(sentences)  # too varied to memorise


def test_tense_is_a_latent_variable(sentences):
    """A future time adverbial almost always comes with "will"; a past one rarely does."""

    def share_with_will(marker):
        having = [s.split() for s in sentences if marker in s.split()]
        return sum("will" in tokens or "wo" in tokens for tokens in having) / len(having)

    assert share_with_will("tomorrow") > 0.85
    assert share_with_will("yesterday") < 0.35


def test_topic_is_a_latent_variable(sentences):
    """Words of one topic co-occur far more often than words of two different topics."""
    words = {name: set(topic.agents.items + topic.things.items + topic.places.items) for name, topic in TOPICS.items()}

    def share_mentioning(anchor, topic):
        having = [set(s.split()) for s in sentences if anchor in s.split()]
        return sum(bool(tokens & (words[topic] - {anchor})) for tokens in having) / len(having)

    assert share_mentioning("chef", "kitchen") > 4 * share_mentioning("chef", "farm")
    assert share_mentioning("farmer", "farm") > 4 * share_mentioning("farmer", "kitchen")


def test_load_builtin_corpus_splits_are_disjoint_and_deterministic():
    corpus = load_builtin_corpus(num_train=2000, num_validation=300, num_test=400, seed=3)
    assert list(corpus) == ["train", "validation", "test"]
    assert corpus.column_names == {"train": ["text"], "validation": ["text"], "test": ["text"]}
    texts = {name: list(split["text"][:]) for name, split in corpus.items()}
    assert [len(t) for t in texts.values()] == [2000, 300, 400]
    everything = texts["train"] + texts["validation"] + texts["test"]
    assert len(set(everything)) == len(everything)  # no repeats within or across splits
    # Independent computation: the splits are the seed's stream with repeats removed, cut in order.
    unique = list(dict.fromkeys(builtin_sentences(3000, seed=3)))
    assert everything == unique[:2700]
    again = load_builtin_corpus(num_train=2000, num_validation=300, num_test=400, seed=3)
    assert list(again["test"]["text"][:]) == texts["test"]


def test_negative_split_size_is_an_error():
    with pytest.raises(ValueError, match="split sizes"):
        load_builtin_corpus(num_train=-1)


def test_generation_is_fast():
    start = time.perf_counter()
    builtin_sentences(20000, seed=1)
    assert time.perf_counter() - start < 2.0
