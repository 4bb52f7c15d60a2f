"""SentenceMIMPipeline on awkward input, each checked against the model called directly on hand-built token ids:
an empty sentence, a sentence of unknown words, an overlong sentence; interpolation paths against closed forms."""

import logging
import math

import pytest
import torch

from sentmim import SentenceMIMModel, SentenceMIMPipeline
from sentmim.batching import collate_batch
from sentmim.evaluation import reconstruct_split
from sentmim.pipeline import max_sentence_length, slerp
from sentmim.tokenization import train_tokenizer

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "it rained ."]
MAX_LENGTH = 8


@pytest.fixture
def pipe(tiny_config):
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=MAX_LENGTH)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         unk_token_id=tokenizer.unk_token_id, max_position_embeddings=MAX_LENGTH)
    return SentenceMIMPipeline(SentenceMIMModel(config).eval(), tokenizer)


def encode_ids(pipe, ids: list[int]) -> torch.Tensor:
    """Posterior mean of one hand-built token sequence."""
    input_ids = torch.tensor([ids])
    return pipe.model.encode(input_ids, torch.ones_like(input_ids))[0][0]


def test_empty_sentence_encodes_as_bos_eos(pipe):
    tokenizer = pipe.tokenizer
    expected = encode_ids(pipe, [tokenizer.bos_token_id, tokenizer.eos_token_id])
    torch.testing.assert_close(pipe.encode([""])[0], expected)


def test_unknown_words_become_the_unknown_token(pipe):
    tokenizer = pipe.tokenizer
    unk = tokenizer.unk_token_id
    expected = encode_ids(pipe, [tokenizer.bos_token_id, unk, unk, unk, tokenizer.eos_token_id])
    torch.testing.assert_close(pipe.encode(["zyzzyva quokka axolotl"])[0], expected)


def test_overlong_sentence_is_truncated_keeping_eos_with_a_warning(pipe, caplog):
    tokenizer = pipe.tokenizer
    words = "the cat sat on the mat and the dog ran in the park ."
    ids = tokenizer(words)["input_ids"]
    assert len(ids) > MAX_LENGTH
    expected = encode_ids(pipe, ids[: MAX_LENGTH - 1] + [tokenizer.eos_token_id])
    with caplog.at_level(logging.WARNING, logger="sentmim"):
        actual = pipe.encode([words, "it rained ."])
    torch.testing.assert_close(actual[0], expected)
    assert any("1 of 2 sentences exceed 8 tokens" in record.getMessage() for record in caplog.records)


def test_a_bare_string_is_refused_with_the_fix(pipe):
    with pytest.raises(TypeError, match=r"pipe.encode\(\[sentence\]\)"):
        pipe.encode("a sentence")


@pytest.mark.parametrize("steps", [-1, 1.5])
def test_interpolation_steps_must_be_a_non_negative_integer(pipe, steps):
    with pytest.raises(ValueError, match="steps="):
        pipe.interpolate("the cat sat .", "it rained .", steps=steps)


def test_linear_path_is_evenly_spaced_between_the_two_means(pipe):
    start, end = pipe.encode(["the cat sat .", "it rained ."])
    path = pipe.interpolation_latents("the cat sat .", "it rained .", steps=3, method="linear")
    assert path.shape == (5, start.numel())
    for index, point in enumerate(path):
        torch.testing.assert_close(point, start + (end - start) * index / 4)


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.acos(float(torch.dot(a, b) / (a.norm() * b.norm())))


def test_slerp_of_unit_vectors_moves_on_the_sphere_at_constant_angular_speed():
    torch.manual_seed(1)
    start, end = torch.nn.functional.normalize(torch.randn(2, 6, dtype=torch.float64), dim=-1)
    path = slerp(start, end, torch.linspace(0, 1, 7, dtype=torch.float64))
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(7, dtype=torch.float64))
    steps = [angle(path[i], path[i + 1]) for i in range(6)]
    assert steps == pytest.approx([angle(start, end) / 6] * 6, abs=1e-9)


def test_slerp_path_of_the_pipeline_is_the_closed_form(pipe):
    start, end = pipe.encode(["the cat sat .", "it rained ."]).double()
    path = pipe.interpolation_latents("the cat sat .", "it rained .", steps=5, method="slerp").double()
    omega = angle(start, end)
    for index, point in enumerate(path):
        t = index / 6
        expected = (math.sin((1 - t) * omega) * start + math.sin(t * omega) * end) / math.sin(omega)
        torch.testing.assert_close(point, expected, rtol=1e-4, atol=1e-5)


def test_interpolation_endpoints_are_the_reconstructions(pipe):
    sentences = pipe.interpolate("the cat sat .", "it rained .", steps=2)
    assert len(sentences) == 4
    assert [sentences[0], sentences[-1]] == pipe.reconstruct(["the cat sat .", "it rained ."])


def test_reconstruct_modes(pipe):
    torch.manual_seed(0)
    sampled = pipe.reconstruct(SENTENCES, mode="sample")
    torch.manual_seed(0)
    assert pipe.reconstruct(SENTENCES, mode="sample") == sampled  # drawn from torch's global generator
    assert pipe.reconstruct(SENTENCES, mode="perturb", noise=0.0) == pipe.reconstruct(SENTENCES, mode="mean")
    with pytest.raises(ValueError, match="mode='nearest'"):
        pipe.reconstruct(SENTENCES, mode="nearest")


def test_max_sentence_length_is_the_model_limit_bounded_by_the_tokenizer(tiny_config):
    config = tiny_config(max_position_embeddings=32)
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=MAX_LENGTH)
    assert max_sentence_length(config, tokenizer) == MAX_LENGTH
    assert max_sentence_length(config) == 32
    tokenizer.model_max_length = int(1e30)  # what transformers reports for a tokenizer without a limit
    assert max_sentence_length(config, tokenizer) == 32
    tokenizer.model_max_length = 64
    assert max_sentence_length(config, tokenizer) == 32


def test_evaluation_decodes_exactly_as_long_as_the_pipeline(tiny_config):
    """One decode length: a model that never ends a sentence writes max_sentence_length - 1 words (BOS is given,
    never generated) in the pipeline and in evaluation's reconstructions alike; the tokenizer's limit (8) binds,
    not the model's (32)."""
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=MAX_LENGTH)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         unk_token_id=tokenizer.unk_token_id, max_position_embeddings=32)
    model = SentenceMIMModel(config).eval()
    with torch.no_grad():
        model.lm_head.bias[tokenizer.eos_token_id] = -1e4  # EOS never wins: every sentence runs to the limit
    pipe = SentenceMIMPipeline(model, tokenizer)
    ids = tokenizer(SENTENCES)["input_ids"]
    batch = collate_batch([{"input_ids": row} for row in ids], tokenizer.pad_token_id)
    hypotheses, _ = reconstruct_split(model, [batch], tokenizer, progress=False)
    assert hypotheses == pipe.reconstruct(SENTENCES)
    assert [len(text.split()) for text in hypotheses] == [MAX_LENGTH - 1] * len(SENTENCES)


def test_sample_latents_defaults_to_ten_codes_of_the_standard_prior(pipe):
    latent_size = pipe.model.config.latent_size
    codes = pipe.sample_latents(generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(codes, torch.randn(10, latent_size, generator=torch.Generator().manual_seed(3)))
