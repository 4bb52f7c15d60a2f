"""The model's numbers against independent recomputations (float64, direct loops, closed forms)."""

import math
from itertools import pairwise

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from sentmim import SentenceMIMModel

ARCHITECTURES = ["gru", "transformer"]


def make_model(tiny_config, **overrides) -> SentenceMIMModel:
    torch.manual_seed(0)
    return SentenceMIMModel(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("objective", ["mim", "vae", "ae"])
def test_loss_matches_float64_recomputation(tiny_config, batch, architecture, objective):
    model = make_model(tiny_config, architecture=architecture, objective=objective)
    input_ids, attention_mask = batch
    out = model(input_ids, attention_mask=attention_mask, kl_weight=0.3)
    ll, z = out.log_likelihood.double(), out.z.double()
    mean, std = out.mean.double(), (0.5 * out.logvar.double()).exp()
    posterior, prior = Normal(mean, std), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    if objective == "mim":
        expected = -ll - 0.5 * (posterior.log_prob(z).sum(-1) + prior.log_prob(z).sum(-1))
    elif objective == "vae":
        expected = -ll + 0.3 * kl_divergence(posterior, prior).sum(-1)
    else:
        assert torch.equal(out.z, out.mean)
        expected = -ll
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-5, abs=1e-5)
    assert torch.allclose(out.kl.double(), kl_divergence(posterior, prior).sum(-1), atol=1e-5)
    assert out.logits.shape == (3, input_ids.size(1) - 1, model.config.vocab_size)


def teacher_forced_loop(model, sentence: list[int], z: torch.Tensor) -> float:
    """log p(x|z) token by token through the decoding state, in float64."""
    state = model.start_decoding(z[None])
    total = 0.0
    for previous, target in pairwise(sentence):
        logits, state = model.decode_step(torch.tensor([previous]), state)
        total += logits.double().log_softmax(-1)[0, target].item()
    return total


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_log_likelihood_equals_token_by_token_loop(tiny_config, batch, architecture):
    model = make_model(tiny_config, architecture=architecture, num_layers=2)
    input_ids, attention_mask = batch
    out = model(input_ids, attention_mask=attention_mask)
    for row in range(input_ids.size(0)):
        sentence = input_ids[row][attention_mask[row].bool()].tolist()
        expected = teacher_forced_loop(model, sentence, out.z[row])
        assert out.log_likelihood[row].item() == pytest.approx(expected, abs=1e-4)
    # The public method (no logits, padding-free path) gives the same numbers.
    again = model.log_likelihood(input_ids, out.z, attention_mask)
    assert torch.allclose(again, out.log_likelihood, atol=1e-5)
    # And so does the full-logits forward path turned off.
    torch.manual_seed(1)
    with_logits = model(input_ids, attention_mask=attention_mask)
    torch.manual_seed(1)
    without = model(input_ids, attention_mask=attention_mask, return_logits=False)
    assert without.logits is None
    assert torch.allclose(with_logits.log_likelihood, without.log_likelihood, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("reverse_input", [False, True])
def test_padding_never_changes_a_sentence(tiny_config, batch, architecture, reverse_input):
    model = make_model(tiny_config, architecture=architecture, num_layers=2, reverse_input=reverse_input)
    input_ids, attention_mask = batch
    mean, logvar = model.encode(input_ids, attention_mask)
    z = torch.randn(3, model.config.latent_size)
    ll = model.log_likelihood(input_ids, z, attention_mask)
    for row in range(3):
        alone = input_ids[row : row + 1, : int(attention_mask[row].sum())]
        mean_alone, logvar_alone = model.encode(alone)
        assert torch.allclose(mean_alone[0], mean[row], atol=1e-5)
        assert torch.allclose(logvar_alone[0], logvar[row], atol=1e-5)
        assert model.log_likelihood(alone, z[row : row + 1]).item() == pytest.approx(ll[row].item(), abs=1e-4)


def test_reverse_input_reads_the_sentence_backwards(tiny_config):
    """A reversed-input encoder on x equals a forward encoder (same weights) on the reversed sentence."""
    forward_model = make_model(tiny_config, reverse_input=False)
    backward_model = make_model(tiny_config, reverse_input=True)
    backward_model.load_state_dict(forward_model.state_dict())
    sentence = torch.tensor([[2, 5, 6, 7, 3, 0]])
    flipped = torch.tensor([[3, 7, 6, 5, 2, 0]])
    assert torch.allclose(backward_model.encode(sentence)[0], forward_model.encode(flipped)[0], atol=1e-6)


def test_logvar_is_floored(tiny_config, batch):
    model = make_model(tiny_config, logvar_min=-0.01)
    with torch.no_grad():
        model.encoder.to_posterior.bias[model.config.latent_size :] = -50.0
    _, logvar = model.encode(batch[0])
    assert logvar.min().item() == pytest.approx(-0.01)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_gradients_reach_encoder_and_decoder_under_mim(tiny_config, batch, architecture):
    model = make_model(tiny_config, architecture=architecture).train()
    model(batch[0]).loss.backward()
    for part in (model.encoder, model.decoder, model.embed_tokens, model.lm_head):
        norms = [p.grad.norm().item() for p in part.parameters() if p.grad is not None]
        assert norms and max(norms) > 0, f"no gradient reached {type(part).__name__}"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tied_output_layer_shares_the_embedding(tiny_config, batch, architecture, tmp_path):
    model = make_model(tiny_config, architecture=architecture, tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    reloaded = SentenceMIMModel.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.embed_tokens.weight.data_ptr()
    torch.manual_seed(3)
    expected = model(batch[0]).loss
    torch.manual_seed(3)
    assert torch.allclose(reloaded.eval()(batch[0]).loss, expected)


def test_input_errors_are_clear(tiny_config):
    model = make_model(tiny_config)
    with pytest.raises(ValueError, match="right-padded"):
        model.encode(torch.tensor([[0, 2, 5, 3]]), torch.tensor([[0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="at least BOS and EOS"):
        model.encode(torch.tensor([[2]]))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model.encode(torch.tensor([2, 5, 3]))
    transformer = make_model(tiny_config, architecture="transformer", max_position_embeddings=4)
    with pytest.raises(ValueError, match="max_position_embeddings=4"):
        transformer.encode(torch.tensor([[2, 5, 6, 7, 3]]))


def test_sinusoidal_positions_follow_the_formula(tiny_config):
    model = make_model(tiny_config, architecture="transformer", position_embedding_type="sinusoidal")
    table = model.encoder.positions(0, 5, torch.device("cpu"))
    width = model.config.hidden_size
    for position in range(5):
        for i in range(width // 2):
            angle = position / 10000 ** (2 * i / width)
            assert table[position, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[position, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_a_misspelt_keyword_is_an_error_not_ignored(tiny_config, batch):
    """forward takes named options only (what generate() passes included): a typo must not silently train with
    beta = 1."""
    model = SentenceMIMModel(tiny_config(objective="vae"))
    input_ids, attention_mask = batch
    with pytest.raises(TypeError, match="kl_wieght"):
        model(input_ids, attention_mask, kl_wieght=0.5)
    assert model(input_ids, attention_mask, kl_weight=0.5, use_cache=False, return_dict=True).loss.isfinite()
