"""Decoding options reach the algorithms: sampling temperature, top-k and top-p, beam search's length penalty, and
the functions' defaults, each checked against an independent computation.

The reference distributions come from teacher-forced `model.log_likelihood` on hand-built prefixes, not from the
decoding path (`decode_step`) that the algorithms use.
"""

import itertools
import math

import pytest
import torch

from sentmim import SentenceMIMModel


def peaked_model(tiny_config, **overrides) -> SentenceMIMModel:
    """An untrained GRU model with weights drawn wide enough that its next-token distributions are far from uniform
    (so a temperature or a length penalty visibly changes what is decoded)."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.6)
    return model


def next_token_log_probs(model, z: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    """log p(w | BOS prefix, z) for every w of the vocabulary, from teacher-forced log-likelihoods [V], float64.

    log_likelihood(BOS prefix w) = log p(prefix) + log p(w | prefix); normalising over w removes log p(prefix)."""
    config = model.config
    vocabulary = torch.arange(config.vocab_size)
    rows = torch.tensor([[config.bos_token_id, *prefix]]).expand(config.vocab_size, -1)
    input_ids = torch.cat([rows, vocabulary[:, None]], dim=1)
    with torch.no_grad():
        joint = model.log_likelihood(input_ids, z.expand(config.vocab_size, -1), torch.ones_like(input_ids))
    return joint.double().log_softmax(-1)


def decoding_log_probs(model, z, prefix) -> torch.Tensor:
    """The distribution decoding draws from: BOS and padding are never generated, the rest renormalised."""
    log_probs = next_token_log_probs(model, z, prefix)
    log_probs[[model.config.bos_token_id, model.config.pad_token_id]] = -math.inf
    return log_probs.log_softmax(-1)


# -- sampling ---------------------------------------------------------------------------------------------------------

NUM_DRAWS = 20000


def expected_first_token_probs(log_probs: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """softmax(logits / T), then top-k, then the smallest top set reaching top_p, renormalised (definitions)."""
    probs = (log_probs / temperature).softmax(-1)
    order = probs.argsort(descending=True).tolist()
    kept, mass = [], 0.0
    for rank, token in enumerate(order):
        if (top_k and rank >= top_k) or mass >= top_p or probs[token] == 0:
            break
        kept.append(token)
        mass += float(probs[token])
    expected = torch.zeros_like(probs)
    expected[kept] = probs[kept] / probs[kept].sum()
    return expected


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.5, 0, 1.0), (2.0, 0, 1.0), (0.7, 4, 1.0),
                                                             (1.5, 0, 0.6)])
def test_first_token_frequencies_follow_softmax_of_logits_over_temperature(tiny_config, temperature, top_k, top_p):
    model = peaked_model(tiny_config)
    z = torch.randn(1, model.config.latent_size, generator=torch.Generator().manual_seed(3))
    log_probs = decoding_log_probs(model, z, [])
    expected = expected_first_token_probs(log_probs, temperature, top_k, top_p)
    untempered = expected_first_token_probs(log_probs, 1.0, top_k, top_p)
    assert 0.5 * float((expected - untempered).abs().sum()) > 0.05, "the temperature must matter for this test"

    first = model.decode(z.expand(NUM_DRAWS, -1), max_length=1, do_sample=True, temperature=temperature,
                         top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(0))[:, 0]
    frequencies = torch.bincount(first, minlength=model.config.vocab_size).double() / NUM_DRAWS
    # each frequency within 5 binomial standard errors (fixed seed: deterministic, and far from the edge)
    tolerance = 5 * (expected * (1 - expected) / NUM_DRAWS).sqrt() + 1e-4
    assert ((frequencies - expected).abs() <= tolerance).all(), (frequencies, expected)


# -- beam search ------------------------------------------------------------------------------------------------------


def all_outputs(model, z: torch.Tensor, max_length: int) -> list[tuple[list[int], float]]:
    """Every output of at most max_length tokens (ended by EOS, or cut at max_length without it) with its summed
    log-probability under the decoding distribution."""
    config = model.config
    words = [t for t in range(config.vocab_size) if t not in (config.pad_token_id, config.bos_token_id,
                                                              config.eos_token_id)]
    outputs = []
    for length in range(max_length + 1):
        for prefix in itertools.product(words, repeat=length):
            score = sum(float(decoding_log_probs(model, z, list(prefix[:i]))[prefix[i]]) for i in range(length))
            if length < max_length:
                ended = float(decoding_log_probs(model, z, list(prefix))[config.eos_token_id])
                outputs.append(([*prefix, config.eos_token_id], score + ended))
            else:
                outputs.append((list(prefix), score))
    return outputs


def exhaustive_search(outputs, length_penalty: float) -> tuple[list[int], float]:
    """The output with the best sum of log-probabilities / length ** length_penalty (EOS counts in the length),
    and its margin over the runner-up."""
    ranked = sorted(((score / len(tokens) ** length_penalty, tokens) for tokens, score in outputs), reverse=True)
    return ranked[0][1], ranked[0][0] - ranked[1][0]


def test_beam_search_with_enough_beams_equals_exhaustive_search(tiny_config):
    """Vocabulary of 6 (3 words + EOS can be generated), at most 3 tokens: 40 possible outputs, 64 beams hold
    them all, so beam search must return the exhaustive argmax for every length penalty."""
    model = peaked_model(tiny_config, vocab_size=6)
    z = torch.randn(6, model.config.latent_size, generator=torch.Generator().manual_seed(5)) * 2
    outputs = [all_outputs(model, z[row : row + 1], 3) for row in range(z.size(0))]
    assert len(outputs[0]) == 1 + 3 + 9 + 27
    winners, compared = {}, 0
    for length_penalty in (0.0, 1.0, 3.0):
        decoded = model.decode(z, max_length=3, num_beams=64, length_penalty=length_penalty)
        for row in range(z.size(0)):
            best, margin = exhaustive_search(outputs[row], length_penalty)
            winners.setdefault(row, set()).add(tuple(best))
            if margin < 1e-4:  # a near tie: either answer is right
                continue
            compared += 1
            padded = best + [model.config.pad_token_id] * (decoded.size(1) - len(best))
            assert decoded[row].tolist() == padded, (length_penalty, row)
    assert compared >= 15
    assert any(len(found) > 1 for found in winners.values()), "a length penalty must change some winner"


def test_beam_search_stops_when_every_beam_has_ended(tiny_config):
    """EOS made certain at every step: the best beam is EOS alone, and the search stops long before max_length
    (at step 2, when the beams that did not take EOS at step 1 have taken it)."""
    model = peaked_model(tiny_config)
    with torch.no_grad():
        model.lm_head.bias[model.config.eos_token_id] = 100.0
    decoded = model.decode(torch.randn(3, model.config.latent_size), max_length=10, num_beams=4)
    assert decoded.tolist() == [[model.config.eos_token_id, model.config.pad_token_id]] * 3


def test_beam_search_refuses_sampling(tiny_config):
    model = peaked_model(tiny_config)
    with pytest.raises(ValueError, match="num_beams > 1 with do_sample=True is not supported"):
        model.decode(torch.randn(1, model.config.latent_size), num_beams=2, do_sample=True)


def test_the_decoding_functions_defaults_are_the_models(tiny_config):
    """Called directly, the algorithms decode greedily, filter nothing and use length penalty 1, as model.decode."""
    from sentmim.generation import beam_search, decode_latents

    model = peaked_model(tiny_config, vocab_size=6)  # EOS is one of 4 tokens: sentences of many lengths
    z = torch.randn(8, model.config.latent_size, generator=torch.Generator().manual_seed(6)) * 2
    assert torch.equal(decode_latents(model, z, 6), model.decode(z, max_length=6))
    sampled = decode_latents(model, z, 6, do_sample=True, generator=torch.Generator().manual_seed(1))
    expected = model.decode(z, max_length=6, do_sample=True, top_k=0, top_p=1.0,
                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(sampled, expected)
    assert torch.equal(beam_search(model, z, 6, 3), model.decode(z, max_length=6, num_beams=3, length_penalty=1.0))
    assert not torch.equal(model.decode(z, max_length=6, num_beams=3, length_penalty=3.0),
                           model.decode(z, max_length=6, num_beams=3, length_penalty=1.0))
