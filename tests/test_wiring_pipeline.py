"""SentenceMIMPipeline hands the right latents and options to the model: its length limit, batching, device,
interpolation method, perturbation noise and prior defaults, each checked against the model called directly."""

import pytest
import torch

from sentmim import SentenceMIMModel, SentenceMIMPipeline
from sentmim.aggregate_posterior import AggregatePosterior
from sentmim.pipeline import slerp
from sentmim.tokenization import train_tokenizer

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "it rained ."]
LATENT = 8


def make_pipe(tiny_config, tokenizer_max_length: int = 16, **kwargs) -> SentenceMIMPipeline:
    """An untrained model with wide weights (it writes long, varied sentences) and a word tokenizer."""
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=tokenizer_max_length)
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, unk_token_id=tokenizer.unk_token_id, max_position_embeddings=16,
        latent_size=LATENT,
    ))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.6)
        model.lm_head.bias[tokenizer.eos_token_id] -= 3.0  # long sentences, so that length limits show
    return SentenceMIMPipeline(model, tokenizer, **kwargs)


def spy_on_decode(pipe) -> list:
    calls, decode = [], pipe.model.decode

    def recording_decode(z, **kwargs):
        calls.append((z.clone(), kwargs))
        return decode(z, **kwargs)

    pipe.model.decode = recording_decode
    return calls


def latents(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed)) * 2


def test_the_tokenizer_limit_bounds_encoding_and_decoding(tiny_config):
    pipe = make_pipe(tiny_config, tokenizer_max_length=6)
    assert pipe.max_length == 6 and pipe.tokenizer.padding_side == "right"
    z = latents(6)
    assert max(len(text.split()) for text in pipe.decode(z)) <= 5  # BOS + at most 5 tokens
    longest = (pipe.model.decode(z, max_length=15) != pipe.model.config.pad_token_id).sum(1).max()
    assert longest > 6, "the model must write longer sentences than the limit for this test to mean anything"
    assert make_pipe(tiny_config, tokenizer_max_length=100).max_length == 16  # the model's limit then


def test_decoding_in_batches_equals_decoding_one_by_one(tiny_config):
    pipe = make_pipe(tiny_config, batch_size=2)
    z = latents(5)
    assert pipe.decode(z) == [pipe.decode(z[row : row + 1])[0] for row in range(5)]


def test_from_pretrained_on_a_device(tiny_config, tmp_path):
    pipe = make_pipe(tiny_config)
    pipe.save_pretrained(tmp_path)
    loaded = SentenceMIMPipeline.from_pretrained(tmp_path, device="cpu")
    assert loaded.device.type == "cpu"
    torch.testing.assert_close(loaded.encode(SENTENCES), pipe.encode(SENTENCES))


def test_interpolate_decodes_the_path_of_the_method_asked_for(tiny_config):
    pipe = make_pipe(tiny_config)
    first, second = SENTENCES[0], SENTENCES[2]
    linear = pipe.interpolation_latents(first, second, steps=4, method="linear")
    spherical = pipe.interpolation_latents(first, second, steps=4, method="slerp")
    assert not torch.allclose(linear, spherical)
    torch.testing.assert_close(pipe.interpolation_latents(first, second, steps=4), linear)  # default: linear
    calls = spy_on_decode(pipe)
    pipe.interpolate(first, second, steps=4, method="slerp")
    torch.testing.assert_close(calls[0][0], spherical)
    with pytest.raises(ValueError, match="method='cubic': must be linear or slerp"):
        pipe.interpolation_latents(first, second, method="cubic")


def test_slerp_of_parallel_vectors_is_the_straight_path():
    start = torch.tensor([1.0, 2.0, -1.0])
    fractions = torch.tensor([0.0, 0.25, 1.0])
    path = slerp(start, 3 * start, fractions)
    torch.testing.assert_close(path, torch.stack([start, 1.5 * start, 3 * start]))


def test_perturbed_reconstruction_adds_noise_of_the_default_scale(tiny_config):
    pipe = make_pipe(tiny_config)
    sentences = SENTENCES * 100
    mean = pipe.encode(sentences)
    calls = spy_on_decode(pipe)
    pipe.reconstruct(sentences, mode="perturb")
    noise = torch.cat([z for z, _ in calls]) - mean
    assert float(noise.std()) == pytest.approx(0.1, rel=0.05)


def test_slerp_between_opposite_vectors_keeps_its_endpoints():
    """Rounding puts the cosine of these opposite vectors at -1.0000001: without the clamp, acos gives NaN."""
    start = torch.tensor([10.751029968261719, -2.0471582412719727, -15.20070743560791, 3.9657607078552246,
                          -7.566360950469971, -9.757547378540039, 2.8140201568603516, 5.846638202667236])
    assert float(torch.dot(start, -start) / (start.norm() * start.norm())) < -1.0
    path = slerp(start, -start, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path[0], start)
    torch.testing.assert_close(path[2], -start)


def test_only_sentences_longer_than_the_limit_are_counted_as_truncated(tiny_config, caplog):
    import logging

    pipe = make_pipe(tiny_config, tokenizer_max_length=6)
    with caplog.at_level(logging.WARNING, logger="sentmim.pipeline"):
        pipe.encode(["the cat sat on", "the cat sat on the"])  # BOS + words + EOS: 6 tokens (the limit), then 7
    assert "1 of 2 sentences exceed 6 tokens and were truncated" in caplog.text


# -- the prior sample -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_temperature", [0.0, 0.5, 2.0])
def test_prior_samples_have_the_latent_temperature_as_standard_deviation(tiny_config, latent_temperature):
    pipe = make_pipe(tiny_config)
    calls = spy_on_decode(pipe)
    pipe.sample(n=2000, temperature=0.8, latent_temperature=latent_temperature, seed=1)
    z = torch.cat([latents for latents, _ in calls])
    assert z.shape == (2000, 8)
    assert float(z.std()) == pytest.approx(latent_temperature, rel=0.05, abs=1e-12)
    assert abs(float(z.mean())) < 0.1 * latent_temperature + 1e-12
    assert all(kwargs["do_sample"] and kwargs["temperature"] == 0.8 for _, kwargs in calls)


def test_prior_sample_at_zero_temperatures_is_the_decoded_origin(tiny_config):
    pipe = make_pipe(tiny_config)
    origin = pipe.decode(torch.zeros(1, LATENT))[0]
    assert pipe.sample(n=5, temperature=0, latent_temperature=0.0, seed=2) == [origin] * 5
    varied = pipe.sample(n=20, temperature=0, latent_temperature=1.0, seed=2)
    assert len(set(varied)) > 1, "greedy decoding of distinct prior latents must give distinct sentences here"


def test_token_temperature_reaches_the_decoder(tiny_config):
    pipe = make_pipe(tiny_config)
    calls = spy_on_decode(pipe)
    pipe.sample(n=3, temperature=0.3, seed=4)
    assert [kwargs.get("temperature") for _, kwargs in calls] == [0.3]
    calls.clear()
    pipe.sample(n=3, temperature=0, seed=4)
    assert not any(kwargs.get("do_sample") for _, kwargs in calls)  # temperature 0 decodes greedily


def test_prior_sample_defaults(tiny_config):
    pipe = make_pipe(tiny_config)
    calls = spy_on_decode(pipe)
    assert len(pipe.sample(n=1, seed=0)) == 1
    calls.clear()
    pipe.sample(n=1000, seed=0)  # latent_temperature=1: z ~ N(0, I)
    z = torch.cat([latents for latents, _ in calls])
    assert float(z.std()) == pytest.approx(1.0, rel=0.05)
    assert all(kwargs["do_sample"] and kwargs["temperature"] == 1.0 for _, kwargs in calls)


@pytest.mark.parametrize("n", [True, 2.5, 0])
def test_prior_sample_count_must_be_a_positive_integer(tiny_config, n):
    with pytest.raises(ValueError, match=f"n={n!r}: must be an integer >= 1"):
        make_pipe(tiny_config).sample(n=n)


# -- the aggregate posterior -----------------------------------------------------------------------------------------


def stored_gaussian(mean_value: float = 3.0) -> AggregatePosterior:
    """A correlated Gaussian far from N(0, I): its samples are recognisable as its own."""
    mixing = torch.randn(LATENT, LATENT, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.3
    return AggregatePosterior(mean=torch.full((LATENT,), mean_value, dtype=torch.float64),
                              covariance_of_means=mixing @ mixing.T,
                              mean_posterior_variance=torch.full((LATENT,), 0.01, dtype=torch.float64),
                              num_sentences=100)


def test_aggregate_samples_come_from_the_gaussian_stored_in_the_folder(tiny_config, tmp_path):
    make_pipe(tiny_config, aggregate_posterior=stored_gaussian()).save_pretrained(tmp_path)
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    calls = spy_on_decode(pipe)
    pipe.sample(n=4000, prior="aggregate", temperature=0, seed=3, no_repeat_ngram_size=2)
    z = torch.cat([latents for latents, _ in calls]).double()
    assert z.shape == (4000, LATENT)
    stored = stored_gaussian()
    assert torch.allclose(z.mean(0), stored.mean, atol=0.05)  # not N(0, I): its mean is 3
    assert torch.allclose(torch.cov(z.T), stored.covariance, atol=0.1)  # SE of the largest entry ~0.02
    assert all(kwargs.get("no_repeat_ngram_size") == 2 and not kwargs.get("do_sample") for _, kwargs in calls)
    # the same draws as the stored Gaussian's own sampler with a generator seeded alike
    expected = stored.sample(4000, torch.Generator().manual_seed(3))
    assert torch.allclose(z, expected.float().double(), atol=1e-5)


def test_aggregate_samples_need_a_fitted_gaussian_and_a_known_prior(tiny_config, tmp_path):
    make_pipe(tiny_config).save_pretrained(tmp_path)
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"no aggregate posterior in {tmp_path}.*prior='standard'"):
        pipe.sample(n=2, prior="aggregate")
    with pytest.raises(ValueError, match="prior='uniform': must be 'standard'"):
        pipe.sample(n=2, prior="uniform")
