"""Backbone models in the training loop (sentmim.training.train), with a frozen backbone, exact resume, and LoRA
adapters through peft (sentmim.lora): what trains, what stays, and what loads back."""

import copy
import json

import pytest
import torch
from datasets import Dataset, DatasetDict

from sentmim import SentenceMIMModel, SentenceMIMPipeline
from sentmim.backbones import load_backbone_tokenizer
from sentmim.lora import add_lora, load_lora
from sentmim.options import TrainingOptions
from sentmim.preprocessing import tokenize_dataset
from sentmim.training import train
from tests.backbone_helpers import SENTENCES, fit, save_backbone
from tests.test_training import interrupt_after_checkpoint

MODEL_FAMILIES = ["bart", "t5", "gpt2", "llama"]
BATCH = ["the cat sat on the mat .", "a dog ran .", "we walked home in the rain and the wind moved the trees ."]


@pytest.fixture(scope="module")
def backbone_folders(tmp_path_factory):
    return {family: save_backbone(family, tmp_path_factory.mktemp(family)) for family in MODEL_FAMILIES}


def make_model(folder, **overrides) -> SentenceMIMModel:
    torch.manual_seed(0)
    return SentenceMIMModel.from_backbone(folder, **{"latent_size": 4, "num_memory_slots": 2, **overrides})


def tokenized_splits(tokenizer):
    raw = DatasetDict({"train": Dataset.from_dict({"text": SENTENCES}),
                       "validation": Dataset.from_dict({"text": SENTENCES[:4]})})
    return tokenize_dataset(raw, tokenizer, max_length=36)[0]


def arguments(output_dir, **overrides):
    settings = dict(batch_size=4, eval_steps=2, logging_steps=1, max_steps=4, learning_rate=1e-2, disable_tqdm=True)
    return TrainingOptions(output_dir=str(output_dir), **{**settings, **overrides})


def cloned_state(module) -> dict:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_frozen_backbone_keeps_its_weights_through_training(backbone_folders, family, tmp_path):
    folder = backbone_folders[family]
    model = make_model(folder, freeze_backbone=True, objective="vae")
    tokenizer = load_backbone_tokenizer(folder)
    backbone_before, latent_before = cloned_state(model.backbone), cloned_state(model.latent)
    train(model, tokenizer, tokenized_splits(tokenizer), arguments(tmp_path))

    assert all(torch.equal(value, backbone_before[name]) for name, value in model.backbone.state_dict().items())
    assert all(not torch.equal(value, latent_before[name]) for name, value in model.latent.state_dict().items())
    loaded = SentenceMIMPipeline.from_pretrained(tmp_path).model
    assert loaded.config.freeze_backbone
    assert not any(parameter.requires_grad for parameter in loaded.backbone.parameters())
    assert all(parameter.requires_grad for parameter in loaded.latent.parameters())


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_resumed_run_equals_uninterrupted_run_with_tied_backbone_weights(backbone_folders, family, tmp_path,
                                                                         monkeypatch):
    """T5 and GPT-2 tie their output layer to the embeddings inside the backbone: a checkpoint stores the tied
    tensor once and resume puts it back in both places."""
    folder = backbone_folders[family]
    tokenizer = load_backbone_tokenizer(folder)
    splits = tokenized_splits(tokenizer)
    reference = make_model(folder)
    train(reference, tokenizer, splits, arguments(tmp_path / "reference", max_steps=6, save_steps=1))

    interrupt_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(folder), tokenizer, splits, arguments(tmp_path / "resumed", max_steps=6, save_steps=1))
    monkeypatch.undo()
    resumed = make_model(folder, initializer_range=0.5)  # other initial latent layers: they must come from the file
    torch.manual_seed(1234)
    train(resumed, tokenizer, splits, arguments(tmp_path / "resumed", max_steps=6, save_steps=1, resume=True))
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    output, embedding = resumed.backbone.get_output_embeddings(), resumed.backbone.get_input_embeddings()
    assert output.weight is embedding.weight


# -- LoRA -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_lora_adapters_train_save_and_load_back(backbone_folders, family, tmp_path):
    folder = backbone_folders[family]
    tokenizer = load_backbone_tokenizer(folder)
    encoded = tokenizer(BATCH, padding=True, return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    model = make_model(folder)
    model.save_pretrained(tmp_path / "base")
    pretrained = cloned_state(model.backbone)

    lora = add_lora(model, r=2)
    trainable = {name for name, parameter in lora.named_parameters() if parameter.requires_grad}
    assert trainable and all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    assert {name.split(".latent.")[1].split(".")[0] for name in trainable if ".latent." in name} == {
        "to_posterior", "latent_to_memory", "latent_to_input"}
    z = torch.randn(3, model.config.latent_size)
    untrained = lora.log_likelihood(input_ids, z, attention_mask).detach()
    fit(lora, input_ids, attention_mask, steps=3)
    # The pretrained weights are untouched (peft keeps them as each LoRA layer's base_layer).
    for name, value in lora.get_base_model().backbone.state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(value, pretrained[name.replace(".base_layer", "")]), name
    expected_ll = lora.log_likelihood(input_ids, z, attention_mask)
    assert not torch.allclose(expected_ll, untrained)
    expected_decode = lora.decode(z, max_length=6)

    lora.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 2
    loaded = load_lora(SentenceMIMModel.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    assert torch.equal(loaded.log_likelihood(input_ids, z, attention_mask), expected_ll)
    assert torch.equal(loaded.decode(z, max_length=6), expected_decode)

    loaded.merge_and_unload().save_pretrained(tmp_path / "merged")
    merged = SentenceMIMModel.from_pretrained(tmp_path / "merged").eval()
    assert not any(".lora_" in name for name in merged.state_dict())
    torch.testing.assert_close(merged.log_likelihood(input_ids, z, attention_mask), expected_ll, atol=1e-4, rtol=1e-5)


def test_lora_model_trains_through_the_training_loop(backbone_folders, tmp_path):
    """sentmim.training.train accepts the peft model; the run's folder then holds the merged model, the tokenizer and,
    in adapter/, the adapters alone."""
    folder = backbone_folders["gpt2"]
    tokenizer = load_backbone_tokenizer(folder)
    model = make_model(folder)
    model.save_pretrained(tmp_path / "base")
    lora = add_lora(model, r=2)
    adapter_before = {name: value.clone() for name, value in lora.state_dict().items() if ".lora_B." in name}
    train(lora, tokenizer, tokenized_splits(tokenizer), arguments(tmp_path / "run"))
    assert any(not torch.equal(value, lora.state_dict()[name]) for name, value in adapter_before.items())
    loaded = load_lora(SentenceMIMModel.from_pretrained(tmp_path / "base"), tmp_path / "run" / "adapter").eval()
    z = torch.randn(2, 4)
    assert torch.equal(loaded.decode(z, max_length=5), lora.eval().decode(z, max_length=5))


def test_lora_needs_a_backbone_model(tiny_config):
    with pytest.raises(ValueError, match="architecture is 'gru'"):
        add_lora(SentenceMIMModel(tiny_config()))


def test_freeze_backbone_is_a_config_field(backbone_folders):
    """freeze_backbone is a config field: a model loaded with freeze_backbone=False trains its backbone again."""
    model = make_model(backbone_folders["gpt2"], freeze_backbone=True)
    config = copy.deepcopy(model.config)
    config.freeze_backbone = False
    unfrozen = SentenceMIMModel(config)
    assert all(parameter.requires_grad for parameter in unfrozen.backbone.parameters())
