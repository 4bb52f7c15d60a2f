"""Sample-quality metrics against hand-computed values: distinct-n, the share of samples that end with EOS, and the
perplexity of samples under a separate language model."""

import math

import pytest
import torch

from sentmim import metrics

SAMPLES = ["the cat sat", "the cat ran", "a dog"]


def test_distinct_n_by_hand():
    # unigrams: the cat sat the cat ran a dog -> 6 distinct of 8
    assert metrics.distinct_n(SAMPLES, 1) == pytest.approx(6 / 8)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) (a dog) -> 4 distinct of 5
    assert metrics.distinct_n(SAMPLES, 2) == pytest.approx(4 / 5)
    # trigrams: (the cat sat) (the cat ran); "a dog" has none -> 2 of 2
    assert metrics.distinct_n(SAMPLES, 3) == 1.0
    # The same from token sequences (ids), and n-grams never cross samples: "a b" + "b a" has no (b b).
    assert metrics.distinct_n([[4, 5, 6], [4, 5, 7], [8, 9]], 2) == pytest.approx(4 / 5)
    assert metrics.distinct_n(["a b", "b a"], 2) == 1.0
    assert metrics.distinct_n(["a a a a"], 2) == pytest.approx(1 / 3)
    assert metrics.distinct_n(["every day every day every day"], 2) == pytest.approx(2 / 5)


def test_distinct_n_rejects_what_it_cannot_score():
    with pytest.raises(ValueError, match="no 4-gram"):
        metrics.distinct_n(SAMPLES, 4)
    with pytest.raises(ValueError, match="no 1-gram"):
        metrics.distinct_n(["", " "], 1)
    with pytest.raises(ValueError, match="n=0"):
        metrics.distinct_n(SAMPLES, 0)


def test_eos_share_and_emitted_tokens_by_hand():
    eos, pad = 3, 0
    generated = torch.tensor([
        [5, 6, eos, pad],
        [5, 5, 5, 5],        # never emitted EOS: ran to the maximum length
        [eos, pad, pad, pad],
        [7, 8, 9, eos],
    ])
    assert metrics.eos_share(generated, eos) == 0.75
    assert metrics.generated_token_mask(generated, eos).long().tolist() == [
        [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1],
    ]
    # Padding that reuses the EOS id: the first EOS ends a row, what follows is padding.
    generated = torch.tensor([[5, 0, 0], [5, 6, 7]])
    assert metrics.eos_share(generated, 0) == 0.5
    assert metrics.generated_token_mask(generated, 0).long().tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="N >= 1"):
        metrics.eos_share(torch.empty(0, 4, dtype=torch.long), eos)


def test_decoded_to_batch_prepends_bos_and_masks_after_eos():
    batch = metrics.decoded_to_batch(torch.tensor([[5, 6, 3, 0], [5, 5, 5, 5]]), bos_token_id=2, eos_token_id=3)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3, 0], [2, 5, 5, 5, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert metrics.num_targets(batch["input_ids"], batch["attention_mask"]).tolist() == [3, 4]


def test_language_model_perplexity_by_hand():
    # A unigram "language model": p(5) = 1/2, p(6) = 1/4, p(EOS = 3) = 1/4, summed over the unmasked targets.
    log_p = torch.full((10,), -math.inf, dtype=torch.float64)
    log_p[5], log_p[6], log_p[3] = math.log(0.5), math.log(0.25), math.log(0.25)
    calls = []

    def log_likelihood(input_ids, attention_mask):
        calls.append(input_ids.shape[0])
        targets = input_ids[:, 1:].clamp(min=0)
        return (log_p[targets].masked_fill(attention_mask[:, 1:] == 0, 0.0)).sum(-1)

    generated = torch.tensor([[5, 6, 3, 0], [5, 5, 5, 5]])
    batch = metrics.decoded_to_batch(generated, bos_token_id=2, eos_token_id=3)
    # Targets: 5 6 EOS and 5 5 5 5: log p = 5 log 1/2 + 2 log 1/4 = -9 log 2 over 7 targets.
    expected = 2 ** (9 / 7)
    assert metrics.language_model_perplexity(log_likelihood, [batch]) == pytest.approx(expected, rel=1e-12)
    # The same split into two batches (sums over the whole set, not a mean of batch perplexities).
    halves = [{key: value[:1] for key, value in batch.items()}, {key: value[1:] for key, value in batch.items()}]
    assert metrics.language_model_perplexity(log_likelihood, halves) == pytest.approx(expected, rel=1e-12)
    assert calls == [2, 1, 1]
    with pytest.raises(ValueError, match="at least one predicted target"):
        metrics.language_model_perplexity(log_likelihood, [])
