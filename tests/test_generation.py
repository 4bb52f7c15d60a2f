"""decode() against a hand-written greedy loop and against transformers' generate()."""

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from benchmarks import naive
from sentmim import SentenceMIMModel
from sentmim.generation import filter_logits

ARCHITECTURES = ["gru", "transformer"]


def make_model(tiny_config, **overrides) -> SentenceMIMModel:
    """An untrained model whose EOS bias is set so that decoded sentences end at different steps."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(num_layers=2, **overrides)).eval()
    z = torch.randn(8, model.config.latent_size, generator=torch.Generator().manual_seed(1)) * 2
    eos_bias = model.lm_head.bias.data[model.config.eos_token_id].clone()
    for shift in torch.linspace(-2, 3, 26):
        model.lm_head.bias.data[model.config.eos_token_id] = eos_bias + shift
        lengths = (model.decode(z, max_length=10) != model.config.pad_token_id).sum(1)
        if len(set(lengths.tolist())) >= 3:
            return model
    raise AssertionError("could not make an untrained model stop at different lengths")


def masked_argmax(model, logits):
    """Greedy choice under the decoding convention: BOS and padding are never generated."""
    logits = logits.clone()
    logits[:, [model.config.bos_token_id, model.config.pad_token_id]] = float("-inf")
    return int(logits.argmax(-1))


def greedy_by_recomputing_prefix(model, z, max_length):
    """The straightforward decoder: re-run the teacher-forced decoder on the whole prefix at every step."""
    config = model.config
    rows = []
    for latent in z:
        prefix = [config.bos_token_id]
        while len(prefix) <= max_length:
            hidden = model._teacher_forced_hidden(torch.tensor([prefix]), latent[None])
            prefix.append(masked_argmax(model, model.project(hidden[:, -1])))
            if prefix[-1] == config.eos_token_id:
                break
        rows.append(prefix[1:])
    width = max(len(row) for row in rows)
    return torch.tensor([row + [config.pad_token_id] * (width - len(row)) for row in rows])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_decode_equals_prefix_recomputation_and_generate(tiny_config, architecture):
    model = make_model(tiny_config, architecture=architecture)
    z = torch.randn(6, model.config.latent_size) * 2
    decoded = model.decode(z, max_length=12)
    expected = greedy_by_recomputing_prefix(model, z, 12)
    assert torch.equal(decoded, expected)
    # The throughput benchmark's baseline: all rows at once, full logits on the whole prefix every step.
    assert torch.equal(naive.greedy_by_recomputing_prefix(model, z, 12), decoded)
    lengths = (decoded != model.config.pad_token_id).sum(1)
    assert len(set(lengths.tolist())) > 1, "the test needs sentences that leave the batch at different steps"
    never = [[model.config.bos_token_id], [model.config.pad_token_id]]
    generated = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=z[:, None]), max_new_tokens=12, do_sample=False,
        bad_words_ids=never,
    )
    assert generated[:, 0].eq(model.config.bos_token_id).all()
    assert torch.equal(generated[:, 1 : 1 + decoded.size(1)], decoded)
    # beam search with one beam is greedy
    assert torch.equal(model.decode(z, max_length=12, num_beams=1), decoded)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_generate_from_input_ids_reconstructs_from_the_posterior_mean(tiny_config, batch, architecture):
    model = make_model(tiny_config, architecture=architecture)
    input_ids, attention_mask = batch
    mean, _ = model.encode(input_ids, attention_mask)
    never = [[model.config.bos_token_id], [model.config.pad_token_id]]
    generated = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, bad_words_ids=never
    )
    decoded = model.decode(mean, max_length=8)
    assert torch.equal(generated[:, 1 : 1 + decoded.size(1)], decoded)


def sequence_log_prob(model, z, tokens):
    """Score of one decoded row under the model: sum of log p over tokens up to and including EOS."""
    config = model.config
    state = model.start_decoding(z[None])
    previous, total = config.bos_token_id, 0.0
    for token in tokens.tolist():
        if token == config.pad_token_id:
            break
        logits, state = model.decode_step(torch.tensor([previous]), state)
        total += logits.double().log_softmax(-1)[0, token].item()
        previous = token
        if token == config.eos_token_id:
            break
    return total


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_beam_search_scores_at_least_greedy(tiny_config, architecture):
    model = make_model(tiny_config, architecture=architecture)
    z = torch.randn(5, model.config.latent_size) * 2
    greedy = model.decode(z, max_length=6)
    beams = model.decode(z, max_length=6, num_beams=4, length_penalty=0.0)  # rank by raw log-probability
    for row in range(5):
        assert sequence_log_prob(model, z[row], beams[row]) >= sequence_log_prob(model, z[row], greedy[row]) - 1e-6


def test_outputs_follow_the_convention(tiny_config):
    model = make_model(tiny_config)
    config = model.config
    for kwargs in ({}, {"num_beams": 3}, {"do_sample": True, "temperature": 0.7}):
        decoded = model.decode(torch.randn(8, config.latent_size) * 2, max_length=10, **kwargs)
        assert decoded.size(1) <= 10
        for row in decoded.tolist():
            assert config.bos_token_id not in row
            if config.pad_token_id in row:  # padding only after EOS
                assert config.eos_token_id in row[: row.index(config.pad_token_id)]
            if config.eos_token_id in row:
                end = row.index(config.eos_token_id)
                assert all(token == config.pad_token_id for token in row[end + 1 :])


def test_sampling_is_reproducible_with_a_generator(tiny_config):
    model = make_model(tiny_config)
    z = torch.randn(4, model.config.latent_size)
    first = model.decode(z, max_length=10, do_sample=True, generator=torch.Generator().manual_seed(7))
    second = model.decode(z, max_length=10, do_sample=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_filter_logits_matches_definitions():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    top3 = filter_logits(logits, top_k=3)
    for row in range(4):
        kept = set(torch.isfinite(top3[row]).nonzero().flatten().tolist())
        assert kept == set(logits[row].topk(3).indices.tolist())
    nucleus = filter_logits(logits, top_p=0.6)
    probabilities = logits.softmax(-1)
    for row in range(4):
        order = probabilities[row].argsort(descending=True).tolist()
        expected, mass = set(), 0.0
        for token in order:  # smallest prefix of the ranking whose mass reaches top_p
            expected.add(token)
            mass += probabilities[row, token].item()
            if mass >= 0.6:
                break
        assert set(torch.isfinite(nucleus[row]).nonzero().flatten().tolist()) == expected


def test_bad_decode_arguments(tiny_config):
    model = make_model(tiny_config)
    z = torch.randn(2, model.config.latent_size)
    with pytest.raises(ValueError, match="max_length"):
        model.decode(z, max_length=0)
    with pytest.raises(ValueError, match="temperature"):
        model.decode(z, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="num_beams"):
        model.decode(z, num_beams=0)


@pytest.mark.parametrize("remedy", [dict(repetition_penalty=1.8), dict(no_repeat_ngram_size=2),
                                    dict(repetition_penalty=1.3, no_repeat_ngram_size=3)])
def test_the_repetition_remedies_decode_as_generate_does(tiny_config, remedy):
    model = make_model(tiny_config)
    z = torch.randn(6, model.config.latent_size, generator=torch.Generator().manual_seed(2)) * 2
    decoded = model.decode(z, max_length=12, **remedy)
    assert not torch.equal(decoded, model.decode(z, max_length=12)), "the remedy must change something here"
    never = [[model.config.bos_token_id], [model.config.pad_token_id]]
    generated = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=z[:, None]), max_new_tokens=12, do_sample=False,
        bad_words_ids=never, **remedy,
    )
    assert torch.equal(generated[:, 1 : 1 + decoded.size(1)], decoded)
    if "no_repeat_ngram_size" in remedy:  # and what it promises, checked directly
        size = remedy["no_repeat_ngram_size"]
        for row in torch.cat([torch.full((6, 1), model.config.bos_token_id), decoded], 1).tolist():
            row = row[: row.index(model.config.eos_token_id) + 1] if model.config.eos_token_id in row else row
            grams = [tuple(row[i : i + size]) for i in range(len(row) - size + 1)]
            assert len(grams) == len(set(grams))


def test_the_repetition_remedies_reject_bad_values_and_beams(tiny_config):
    model = make_model(tiny_config)
    z = torch.zeros(1, model.config.latent_size)
    with pytest.raises(ValueError, match="repetition_penalty=0"):
        model.decode(z, repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size=-1"):
        model.decode(z, no_repeat_ngram_size=-1)
    with pytest.raises(ValueError, match="num_beams > 1 is not supported"):
        model.decode(z, num_beams=2, no_repeat_ngram_size=2)
