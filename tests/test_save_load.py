"""Config validation, save_pretrained / from_pretrained and the transformers Auto classes."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from sentmim import SentenceMIMConfig, SentenceMIMModel


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"architecture": "lstm"}, "architecture"),
        ({"objective": "iwae"}, "objective"),
        ({"latent_size": 0}, "latent_size"),
        ({"hidden_size": -4}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"pad_token_id": 23}, "pad_token_id"),
        ({"eos_token_id": -1}, "eos_token_id"),
        ({"bos_token_id": 0}, "pad_token_id"),
        ({"dropout": 1.0}, "dropout"),
        ({"architecture": "transformer", "hidden_size": 15, "num_attention_heads": 2}, "hidden_size"),
    ],
)
def test_invalid_config_names_the_field(tiny_config, overrides, field):
    with pytest.raises(ValueError, match=rf"SentenceMIMConfig\.{field}="):
        tiny_config(**overrides)


def test_config_round_trip(tiny_config, tmp_path):
    config = tiny_config(architecture="transformer", objective="vae", word_dropout=0.25)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sentmim"
    for loaded in (SentenceMIMConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert isinstance(loaded, SentenceMIMConfig)
        assert loaded.to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize("architecture", ["gru", "transformer"])
def test_model_round_trip_gives_identical_outputs(tiny_config, batch, architecture, tmp_path):
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(architecture=architecture, num_layers=2)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors only"
    input_ids, attention_mask = batch
    z = torch.randn(3, model.config.latent_size)
    expected_mean = model.encode(input_ids, attention_mask)[0]
    expected_ll = model.log_likelihood(input_ids, z, attention_mask)
    for cls in (SentenceMIMModel, AutoModel, AutoModelForSeq2SeqLM):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, SentenceMIMModel)
        assert torch.equal(loaded.encode(input_ids, attention_mask)[0], expected_mean)
        assert torch.equal(loaded.log_likelihood(input_ids, z, attention_mask), expected_ll)
        assert torch.equal(loaded.decode(z, max_length=6), model.decode(z, max_length=6))
    assert loaded.generation_config.use_cache is False


def test_gru_keeps_torch_default_initialisation(tiny_config):
    """GRU models train from PyTorch's defaults (as the sentenceMIM reference code); uniform(-1/sqrt(H), 1/sqrt(H))."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(hidden_size=64))
    bound = 1 / 64**0.5
    weights = model.encoder.rnn.weight_hh_l0
    assert weights.abs().max().item() <= bound
    assert weights.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)  # std of U(-b, b)


def test_loaded_weights_own_aligned_memory_and_stay_tied(tiny_config, tmp_path):
    """transformers >= 5.24 hands out views into the memory-mapped file; from_pretrained copies them (an unaligned
    weight changed the last bit of the GRU's outputs), and tied weights must stay one tensor."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(tie_word_embeddings=True)).eval()
    model.save_pretrained(tmp_path)
    loaded = SentenceMIMModel.from_pretrained(tmp_path).eval()
    assert all(parameter.data_ptr() % 64 == 0 for parameter in loaded.parameters())
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    with torch.no_grad():
        loaded.embed_tokens.weight[5] += 1.0
    assert torch.equal(loaded.lm_head.weight[5], loaded.embed_tokens.weight[5])


def test_a_config_saved_with_training_fields_still_loads(tiny_config, tmp_path):
    """Before training options moved out of the model's config, config.json carried the KL schedule and free bits:
    such a model still loads (the fields are ignored; the schedule is a training option now)."""
    tiny_config(objective="vae").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "kl_schedule": "cyclical", "free_bits": 0.5}))
    loaded = SentenceMIMConfig.from_pretrained(tmp_path)
    assert loaded.objective == "vae" and loaded.latent_size == 4
