"""Backbone models (sentmim.backbones) against independent recomputations, on tiny random BART, T5, GPT-2 and Llama
models and tokenizers built in tests/backbone_helpers.py (no network, no Hub).

The reference path calls the backbone directly (its public forward, without a cache), on a float64 copy of the
model, and does the pooling, the latent projections, the log-likelihood and the objectives by hand."""

import copy
import json
import shutil

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from transformers import AutoModel, AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from sentmim import SentenceMIMConfig, SentenceMIMModel, SentenceMIMPipeline, metrics
from sentmim.backbones import adapt_tokenizer, load_backbone_tokenizer
from sentmim.generation import beam_search, greedy_or_sample
from tests.backbone_helpers import SENTENCES, fit, make_backbone, make_tokenizer, save_backbone

MODEL_FAMILIES = ["bart", "t5", "gpt2", "llama"]


@pytest.fixture(scope="module")
def backbone_folders(tmp_path_factory):
    """One saved tiny backbone (weights, config, tokenizer) per family, as a Hub repository would hold it."""
    return {family: save_backbone(family, tmp_path_factory.mktemp(family)) for family in [*MODEL_FAMILIES, "qwen2"]}


def make_model(folder, **overrides) -> SentenceMIMModel:
    torch.manual_seed(0)
    settings = dict(latent_size=4, num_memory_slots=2)
    return SentenceMIMModel.from_backbone(folder, **{**settings, **overrides}).eval()


BATCH = ["the cat sat on the mat .", "a dog ran .", "we walked home in the rain and the wind moved the trees ."]


def sentence_batch(tokenizer, sentences=BATCH):
    encoded = tokenizer(list(sentences), padding=True, return_tensors="pt")
    assert encoded["attention_mask"].sum(1).unique().numel() > 1, "the batch needs padding"
    return encoded["input_ids"], encoded["attention_mask"]


# -- tokenizer ------------------------------------------------------------------------------------------------------

ADDED = {"bart": set(), "t5": {"bos"}, "gpt2": {"bos", "pad"}, "llama": {"pad"}, "qwen2": {"bos", "pad"}}


@pytest.mark.parametrize("family", [*MODEL_FAMILIES, "qwen2"])
def test_adapted_tokenizer_follows_the_sentmim_convention(family):
    original = make_tokenizer(family)
    original_ids = original("the cat sat on the mat .", add_special_tokens=False)["input_ids"]
    before = original.backend_tokenizer.to_str()
    tokenizer = adapt_tokenizer(original)
    assert original.backend_tokenizer.to_str() == before, "the caller's tokenizer must stay as it was"

    ids = tokenizer("the cat sat on the mat .")["input_ids"]
    assert ids == [tokenizer.bos_token_id, *original_ids, tokenizer.eos_token_id]  # the backbone's own word pieces
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    new_tokens = {role for role in ("bos", "pad", "eos") if getattr(tokenizer, f"{role}_token_id") >= len(original)}
    assert new_tokens == ADDED[family]
    if "eos" not in ADDED[family]:
        assert tokenizer.eos_token == original.eos_token
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "the cat sat on the mat ."
    padded = tokenizer(["a", "the cat sat on the mat ."], padding=True)["input_ids"]
    assert padded[0][-1] == tokenizer.pad_token_id  # right padding
    again = adapt_tokenizer(tokenizer)  # idempotent
    assert len(again) == len(tokenizer) and again("a dog")["input_ids"] == tokenizer("a dog")["input_ids"]


@pytest.mark.parametrize("family", [*MODEL_FAMILIES, "qwen2"])
def test_new_embedding_rows_start_from_what_the_backbone_knows(backbone_folders, family):
    """Pretrained rows are untouched; a new BOS copies the backbone's start token, a new pad is the mean row."""
    folder = backbone_folders[family]
    original = make_tokenizer(family)
    pretrained = make_backbone(family, original).get_input_embeddings().weight
    model = make_model(folder)
    tokenizer = load_backbone_tokenizer(folder)
    embeddings = model.backbone.get_input_embeddings().weight
    config = model.config
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert config.vocab_size == embeddings.size(0) >= len(tokenizer)
    new_ids = {getattr(tokenizer, f"{role}_token_id") for role in ADDED[family]}
    for token_id in range(pretrained.size(0)):
        if token_id not in new_ids:
            assert torch.equal(embeddings[token_id], pretrained[token_id])
    start = {"t5": original.pad_token_id, "gpt2": original.eos_token_id, "qwen2": original.eos_token_id}.get(family)
    if "bos" in ADDED[family]:  # T5 starts decoding from <pad>; GPT-2 and Qwen2 configs name <|endoftext|> as BOS
        assert torch.equal(embeddings[config.bos_token_id], pretrained[start])
    if "pad" in ADDED[family]:
        torch.testing.assert_close(embeddings[config.pad_token_id], pretrained[: len(original)].mean(0))


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_from_backbone_with_a_tokenizer_object(backbone_folders, family):
    """Passing the backbone's tokenizer (or, for new rows beyond the backbone's, its adapted version) gives the
    model the folder's own tokenizer gives."""
    folder = backbone_folders[family]
    expected = make_model(folder).state_dict()
    given = [make_tokenizer(family)] + ([load_backbone_tokenizer(folder)] if family == "gpt2" else [])
    for tokenizer in given:
        state = make_model(folder, tokenizer=tokenizer).state_dict()
        assert all(torch.equal(value, expected[name]) for name, value in state.items())


# -- the independent reference --------------------------------------------------------------------------------------


def reference_model(model):
    return copy.deepcopy(model).double().eval()


def linear(layer, x):
    return x @ layer.weight.T + layer.bias


def posterior_by_hand(reference, input_ids, attention_mask):
    """mean, logvar from the backbone's final states, pooled by an explicit loop over each row's positions."""
    backbone, config = reference.backbone, reference.config
    if backbone.config.is_encoder_decoder:
        states = backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    else:
        states = backbone(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
    pooled = []
    for row in range(input_ids.size(0)):
        length = int(attention_mask[row].sum())
        weights = {"mean": [1.0] * length, "weighted_mean": [t + 1.0 for t in range(length)],
                   "last": [0.0] * (length - 1) + [1.0]}[config.backbone_pooling]
        pooled.append(sum(w * states[row, t] for t, w in enumerate(weights)) / sum(weights))
    mean, logvar = linear(reference.latent.to_posterior, torch.stack(pooled)).chunk(2, dim=-1)
    return mean, logvar.clamp(min=config.logvar_min)


def logits_by_hand(reference, decoder_input_ids, z):
    """Next-token logits [B, T, V] without any cache: the backbone on the memory / prefix and offset embeddings."""
    backbone, layers = reference.backbone, reference.latent
    z = z.double()
    memory = linear(layers.latent_to_memory, z).view(z.size(0), reference.config.num_memory_slots, -1)
    embeds = backbone.get_input_embeddings()(decoder_input_ids) + linear(layers.latent_to_input, z)[:, None]
    if backbone.config.is_encoder_decoder:
        return backbone(encoder_outputs=BaseModelOutput(last_hidden_state=memory), decoder_inputs_embeds=embeds).logits
    prefix_length = memory.size(1)
    return backbone(inputs_embeds=torch.cat([memory, embeds], dim=1)).logits[:, prefix_length:]


def log_likelihood_by_hand(reference, input_ids, attention_mask, z):
    log_probs = logits_by_hand(reference, input_ids[:, :-1], z).log_softmax(-1)
    totals = []
    for row in range(input_ids.size(0)):
        length = int(attention_mask[row].sum())
        totals.append(sum(log_probs[row, t, input_ids[row, t + 1]] for t in range(length - 1)))
    return torch.stack(totals)


# -- objectives -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("objective", ["mim", "vae", "ae"])
def test_loss_equals_independent_float64_recomputation(backbone_folders, family, objective):
    folder = backbone_folders[family]
    model = make_model(folder, objective=objective)
    input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))
    out = model(input_ids, attention_mask=attention_mask, kl_weight=0.3)

    reference = reference_model(model)
    mean, logvar = posterior_by_hand(reference, input_ids, attention_mask)
    torch.testing.assert_close(out.mean.double(), mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logvar.double(), logvar, atol=1e-5, rtol=1e-5)
    z = out.z.double()
    ll = log_likelihood_by_hand(reference, input_ids, attention_mask, z)
    torch.testing.assert_close(out.log_likelihood.double(), ll, atol=1e-4, rtol=1e-5)
    posterior, prior = Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    if objective == "mim":
        expected = -ll - 0.5 * (posterior.log_prob(z).sum(-1) + prior.log_prob(z).sum(-1))
    elif objective == "vae":
        expected = -ll + 0.3 * kl_divergence(posterior, prior).sum(-1)
    else:
        assert torch.equal(out.z, out.mean)
        expected = -ll
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("family", ["bart", "gpt2"])
@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last"])
def test_every_pooling_equals_its_loop_over_positions(backbone_folders, family, pooling):
    """Each backbone_pooling on both kinds of backbone (the loss test above covers each family's default only)."""
    folder = backbone_folders[family]
    model = make_model(folder, backbone_pooling=pooling)
    input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))
    mean, logvar = model.encode(input_ids, attention_mask)
    expected_mean, expected_logvar = posterior_by_hand(reference_model(model), input_ids, attention_mask)
    torch.testing.assert_close(mean.double(), expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar.double(), expected_logvar, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_padding_never_changes_a_sentence(backbone_folders, family):
    folder = backbone_folders[family]
    model = make_model(folder)
    input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))
    mean, _ = model.encode(input_ids, attention_mask)
    z = torch.randn(3, model.config.latent_size)
    ll = model.log_likelihood(input_ids, z, attention_mask)
    for row in range(3):
        alone = input_ids[row : row + 1, : int(attention_mask[row].sum())]
        torch.testing.assert_close(model.encode(alone)[0][0], mean[row], atol=1e-5, rtol=1e-5)
        assert model.log_likelihood(alone, z[row : row + 1]).item() == pytest.approx(ll[row].item(), abs=1e-4)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("objective", ["mim", "vae", "ae"])
def test_every_objective_trains(backbone_folders, family, objective):
    """A few Adam steps on one batch lower the loss (same noise before and after), and reach the backbone."""
    folder = backbone_folders[family]
    model = make_model(folder, objective=objective)
    input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))

    def loss_with_fixed_noise() -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            return model.eval()(input_ids, attention_mask=attention_mask).loss.item()

    before = loss_with_fixed_noise()
    backbone_before = copy.deepcopy(model.backbone.state_dict())
    fit(model, input_ids, attention_mask, steps=8)
    assert loss_with_fixed_noise() < before - 1.0
    after = model.backbone.state_dict()
    assert any(not torch.equal(after[name], value) for name, value in backbone_before.items()), "no backbone training"


# -- decoding -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_autoencoders(backbone_folders):
    """family -> (AE model trained to reconstruct BATCH, latents to decode): the posterior means of BATCH and three
    random z. An untrained model repeats one token; this one ends its sentences at different steps."""
    models = {}

    def get(family):
        if family not in models:
            folder = backbone_folders[family]
            model = make_model(folder, objective="ae")
            input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))
            fit(model, input_ids, attention_mask, steps=80)
            with torch.no_grad():
                z = torch.cat([model.encode(input_ids, attention_mask)[0], torch.randn(3, model.config.latent_size)])
            models[family] = model, z
        return models[family]

    return get


def masked_argmax(config, logits) -> int:
    logits = logits.clone()
    logits[[config.bos_token_id, config.pad_token_id]] = float("-inf")
    return int(logits.argmax())


def greedy_by_hand(model, z, max_length):
    """Greedy decoding by full recomputation of the whole prefix at every step (no cache), in float64."""
    reference, config = reference_model(model), model.config
    rows = []
    for latent in z:
        prefix = [config.bos_token_id]
        while len(prefix) <= max_length:
            logits = logits_by_hand(reference, torch.tensor([prefix]), latent[None])
            prefix.append(masked_argmax(config, logits[0, -1]))
            if prefix[-1] == config.eos_token_id:
                break
        rows.append(prefix[1:])
    width = max(len(row) for row in rows)
    return torch.tensor([row + [config.pad_token_id] * (width - len(row)) for row in rows])


class WithoutCache:
    """The model behind sentmim.generation's three-method interface, re-running the whole prefix every step."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def start_decoding(self, z):
        return {"z": z, "prefix": torch.empty(z.size(0), 0, dtype=torch.long)}

    def decode_step(self, tokens, state):
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)
        logits = self.model.project(self.model._teacher_forced_hidden(prefix, state["z"]))
        return logits[:, -1], {"z": state["z"], "prefix": prefix}

    def reorder_decoding_state(self, state, index):
        return {"z": state["z"][index], "prefix": state["prefix"][index]}


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_greedy_decode_equals_a_manual_argmax_loop(trained_autoencoders, family):
    model, z = trained_autoencoders(family)
    decoded = model.decode(z, max_length=16)
    lengths = (decoded != model.config.pad_token_id).sum(1)
    assert len(set(lengths.tolist())) >= 3, "the test needs sentences that leave the batch at different steps"
    assert torch.equal(decoded, greedy_by_hand(model, z, 16))
    assert torch.equal(model.decode(z, max_length=16, num_beams=1), decoded)
    never = [[model.config.bos_token_id], [model.config.pad_token_id]]
    generated = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=z[:, None]), max_new_tokens=16, do_sample=False,
        bad_words_ids=never,
    )
    assert torch.equal(generated[:, 1 : 1 + decoded.size(1)], decoded)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_cached_beam_search_and_sampling_equal_recomputation(trained_autoencoders, family):
    """The key-value cache survives reordering: beam search and sampling (rows leaving the batch) give the same
    sentences with the cache as by re-running the prefix at every step."""
    model, z = trained_autoencoders(family)
    with torch.no_grad():
        beams = beam_search(model, z, 16, num_beams=3)
        assert torch.equal(beams, beam_search(WithoutCache(model), z, 16, num_beams=3))
        sampled = greedy_or_sample(model, z, 16, True, 1.0, 0, 1.0, torch.Generator().manual_seed(0))
        again = greedy_or_sample(WithoutCache(model), z, 16, True, 1.0, 0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(sampled, again)
    assert len(set((sampled != model.config.pad_token_id).sum(1).tolist())) > 1


# -- save / load ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_saved_model_loads_offline_without_the_backbone_folder(family, tmp_path):
    folder = save_backbone(family, tmp_path / "backbone")
    model = make_model(folder)
    tokenizer = load_backbone_tokenizer(folder)
    SentenceMIMPipeline(model, tokenizer).save_pretrained(tmp_path / "model")
    shutil.rmtree(folder)
    saved = sorted(path.name for path in (tmp_path / "model").iterdir())
    assert [name for name in saved if name.endswith(".safetensors")] == ["model.safetensors"]
    config = SentenceMIMConfig.from_pretrained(tmp_path / "model")
    assert config.backbone_config.model_type == model.backbone.config.model_type
    assert config.backbone_config.vocab_size == model.config.vocab_size

    input_ids, attention_mask = sentence_batch(tokenizer)
    z = torch.randn(3, model.config.latent_size)
    expected_state = model.state_dict()
    for loader in (SentenceMIMModel, AutoModel, AutoModelForSeq2SeqLM):
        loaded = loader.from_pretrained(tmp_path / "model").eval()
        assert isinstance(loaded, SentenceMIMModel)
        assert loaded.state_dict().keys() == expected_state.keys()
        assert all(torch.equal(value, expected_state[name]) for name, value in loaded.state_dict().items())
        assert torch.equal(loaded.encode(input_ids, attention_mask)[0], model.encode(input_ids, attention_mask)[0])
        assert torch.equal(loaded.log_likelihood(input_ids, z, attention_mask),
                           model.log_likelihood(input_ids, z, attention_mask))
        assert torch.equal(loaded.decode(z, max_length=6), model.decode(z, max_length=6))
        output, embedding = loaded.backbone.get_output_embeddings(), loaded.backbone.get_input_embeddings()
        assert (output.weight is embedding.weight) == (model.backbone.get_output_embeddings().weight
                                                       is model.backbone.get_input_embeddings().weight)
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "model")
    assert pipe.tokenizer("a dog ran")["input_ids"] == tokenizer("a dog ran")["input_ids"]
    texts = pipe.reconstruct(SENTENCES[:2], max_length=5) + pipe.interpolate("a dog", "the cat", steps=1, max_length=5)
    assert len(texts) == 5 and all(isinstance(text, str) for text in texts)
    assert pipe.encode(SENTENCES[:2]).shape == (2, model.config.latent_size)


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_importance_weighted_nll_uses_the_backbone(backbone_folders, family):
    """metrics.importance_weighted_nll (through model.encode / log_likelihood, rows repeated per sample) equals
    the estimator written out with the hand-made posterior and likelihood."""
    folder = backbone_folders[family]
    model = make_model(folder)
    input_ids, attention_mask = sentence_batch(load_backbone_tokenizer(folder))
    num_samples = 3
    estimate = metrics.importance_weighted_nll(
        model, input_ids, attention_mask, num_samples=num_samples, chunk_size=2,
        generator=torch.Generator().manual_seed(4),
    )
    reference = reference_model(model)
    mean, logvar = posterior_by_hand(reference, input_ids, attention_mask)
    eps = torch.randn((num_samples, *mean.shape), generator=torch.Generator().manual_seed(4)).double()
    log_weights = []
    for k in range(num_samples):
        z = mean + (0.5 * logvar).exp() * eps[k]
        posterior, prior = Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros_like(mean), 1.0)
        log_weights.append(log_likelihood_by_hand(reference, input_ids, attention_mask, z)
                           + prior.log_prob(z).sum(-1) - posterior.log_prob(z).sum(-1))
    expected = -(torch.logsumexp(torch.stack(log_weights), dim=0) - torch.log(torch.tensor(float(num_samples))))
    torch.testing.assert_close(estimate, expected, atol=1e-3, rtol=1e-5)


# -- configuration errors -------------------------------------------------------------------------------------------


def test_backbone_config_errors_name_the_field(backbone_folders):
    model = make_model(backbone_folders["gpt2"])
    settings = model.config.to_dict()
    with pytest.raises(ValueError, match=r"SentenceMIMConfig\.backbone_config: model_type='not-a-model'"):
        SentenceMIMConfig(**{**settings, "backbone_config": {"model_type": "not-a-model"}})
    with pytest.raises(ValueError, match=r"SentenceMIMConfig\.dropout=0\.1: .*backbone_config"):
        SentenceMIMConfig(**{**settings, "dropout": 0.1})
    with pytest.raises(ValueError, match=r"SentenceMIMConfig\.vocab_size=.*backbone's vocab_size"):
        SentenceMIMConfig(**{**settings, "vocab_size": settings["vocab_size"] + 1})
    with pytest.raises(ValueError, match=r"SentenceMIMConfig\.architecture='gru'"):
        SentenceMIMConfig(**{**settings, "architecture": "gru"})
    with pytest.raises(ValueError, match=r"SentenceMIMConfig\.backbone_pooling='max'"):
        SentenceMIMConfig(**{**settings, "backbone_pooling": "max"})
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.encode(torch.full((1, model.config.max_position_embeddings + 1), 5))


def test_a_hub_id_goes_to_the_hub():
    """A name that is not a local folder is fetched from the Hub by transformers (offline here: a one-line error)."""
    with pytest.raises(OSError, match=r"backbone 'sentmim-tests/no-such-model': .*huggingface\.co") as caught:
        SentenceMIMModel.from_backbone("sentmim-tests/no-such-model")
    assert "\n" not in str(caught.value)


def test_a_backbone_that_needs_its_own_code_is_refused_without_running_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "not-in-transformers", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"},
    }))
    marker = tmp_path / "executed"
    (tmp_path / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ValueError, match="never runs code shipped with a model") as caught:
        SentenceMIMModel.from_backbone(str(tmp_path))
    assert "\n" not in str(caught.value)
    assert not marker.exists()
