"""Pretrained Hugging Face language models as sentmim's encoder and decoder (`architecture="backbone"`).

    model = SentenceMIMModel.from_backbone("facebook/bart-base", objective="mim", latent_size=32)
    tokenizer = load_backbone_tokenizer("facebook/bart-base")     # the same adapted tokenizer from_backbone used

An encoder-decoder (`AutoModelForSeq2SeqLM`: BART, T5, ...) reads the sentence with its encoder, and its decoder
cross-attends to memory vectors projected from z. A decoder-only LM (`AutoModelForCausalLM`: GPT-2, Llama, ...)
reads the sentence itself, and the memory vectors are a prefix of its input embeddings. Both decode with the
backbone's own key-value cache; `adapt_tokenizer` gives the backbone's tokenizer sentmim's token conventions.
docs/backbones.md explains each choice (pooling, prefix, new embedding rows) and lists the tested families.
"""

import copy
import inspect
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, normalizers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import BaseModelOutput

from .configuration import SentenceMIMConfig
from .files import first_line
from .tokenization import fast_tokenizer

# Sentences of a backbone without position embeddings (T5's relative positions) are limited to this many tokens.
DEFAULT_MAX_LENGTH = 512


def _auto_class(backbone_config):
    return AutoModelForSeq2SeqLM if backbone_config.is_encoder_decoder else AutoModelForCausalLM


def build_backbone(config) -> PreTrainedModel:
    """A randomly initialised backbone from `config.backbone_config` (weights are loaded afterwards)."""
    # The backbone shares the config object, so that what changes it (resize_token_embeddings) reaches config.json.
    return _auto_class(config.backbone_config).from_config(config.backbone_config, trust_remote_code=False)


def build_latent_layers(config, backbone: PreTrainedModel) -> "LatentLayers":
    layers_class = Seq2SeqLatentLayers if backbone.config.is_encoder_decoder else CausalLatentLayers
    return layers_class(config, backbone)


def pool(states: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, T, H] states -> [B, H]: a weighted mean over the real (mask 1) positions of each row.

    mean: equal weights. weighted_mean: weight t at position t = 1, 2, ... (SGPT). last: only the last real token."""
    weights = attention_mask.to(states.dtype)
    if how == "weighted_mean":
        weights = weights * torch.arange(1, states.size(1) + 1, device=states.device, dtype=states.dtype)
    elif how == "last":
        last = attention_mask.long().sum(1) - 1
        weights = torch.zeros_like(weights).scatter(1, last[:, None], 1.0)
    elif how != "mean":
        raise ValueError(f"backbone_pooling={how!r}: must be mean, weighted_mean or last")
    return (states * weights[:, :, None]).sum(1) / weights.sum(1, keepdim=True)


def _cache_argument(backbone: PreTrainedModel) -> str:
    """The name of the key-value cache argument: transformers 5.24 renamed `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _returned_cache(output):
    """The cache a backbone returned (under its 5.24 name `cache`, or `past_key_values` before)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


class LatentLayers(nn.Module):
    """The layers a backbone model adds: the posterior head, z -> memory, z -> input-embedding offset.

    The backbone itself is passed to every method rather than held: it is the sentmim model's own child, where
    transformers finds its tied weights, and a module that held it too would save it twice."""

    def __init__(self, config, backbone: PreTrainedModel, memory_width: int):
        super().__init__()
        text_config = backbone.config.get_text_config()
        self.pooling = config.backbone_pooling
        self.num_memory_slots = config.num_memory_slots
        self.max_length = config.max_position_embeddings
        self.memory_width = memory_width
        self.cache_argument = _cache_argument(backbone)
        embedding_width = backbone.get_input_embeddings().embedding_dim
        self.to_posterior = nn.Linear(text_config.hidden_size, 2 * config.latent_size)
        self.latent_to_memory = nn.Linear(config.latent_size, config.num_memory_slots * memory_width)
        self.latent_to_input = nn.Linear(config.latent_size, embedding_width)

    def check_length(self, length: int) -> None:
        if length > self.max_length:
            raise ValueError(
                f"sentence of {length} tokens is longer than max_position_embeddings={self.max_length} of this "
                "backbone model; truncate or drop longer sentences (data max_length)"
            )

    def encode(self, backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(mean, logvar) of q(z|x) from the pooled final states of the part of the backbone that reads x."""
        self.check_length(input_ids.size(1))
        states = self.reader(backbone)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.to_posterior(pool(states, attention_mask, self.pooling)).chunk(2, dim=-1)

    def start(self, backbone, z: torch.Tensor, use_cache: bool = True) -> dict:
        memory = self.latent_to_memory(z).view(z.size(0), self.num_memory_slots, self.memory_width)
        return {"memory": memory, "offset": self.latent_to_input(z), "cache": None, "use_cache": use_cache}

    def forward(self, backbone, input_ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits [B, T, V] for decoder inputs input_ids [B, T] given z."""
        self.check_length(input_ids.size(1) + 1)
        return self.step(backbone, input_ids, self.start(backbone, z, use_cache=False))[0]

    def cache_arguments(self, state: dict) -> dict:
        return {"use_cache": state["use_cache"], self.cache_argument: state["cache"]}

    @staticmethod
    def reorder_state(state: dict, index: torch.Tensor) -> dict:
        """Keep / repeat / permute rows. The cache is reordered in place (transformers' Cache API)."""
        if state["cache"] is not None:
            state["cache"].reorder_cache(index)
        return {
            **state,
            "offset": state["offset"].index_select(0, index),
            "memory": None if state["memory"] is None else state["memory"].index_select(0, index),
        }


class Seq2SeqLatentLayers(LatentLayers):
    """An encoder-decoder backbone: pooled encoder states -> q(z|x); the decoder cross-attends to memory from z."""

    def __init__(self, config, backbone: PreTrainedModel):
        super().__init__(config, backbone, memory_width=backbone.config.get_text_config().hidden_size)

    @staticmethod
    def reader(backbone) -> nn.Module:
        return backbone.get_encoder()

    def step(self, backbone, input_ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Logits [B, T, V] for T new decoder inputs after those already in the state's cache."""
        embeds = backbone.get_decoder().get_input_embeddings()(input_ids) + state["offset"][:, None]
        output = backbone(
            encoder_outputs=BaseModelOutput(last_hidden_state=state["memory"]),
            decoder_inputs_embeds=embeds,
            **self.cache_arguments(state),
        )
        return output.logits, {**state, "cache": _returned_cache(output) if state["use_cache"] else None}


class CausalLatentLayers(LatentLayers):
    """A decoder-only backbone: the LM's pooled final states -> q(z|x); z becomes a prefix and an input offset."""

    def __init__(self, config, backbone: PreTrainedModel):
        super().__init__(config, backbone, memory_width=backbone.get_input_embeddings().embedding_dim)

    @staticmethod
    def reader(backbone) -> nn.Module:
        return backbone.base_model

    def start(self, backbone, z: torch.Tensor, use_cache: bool = True) -> dict:
        state = super().start(backbone, z, use_cache)
        if use_cache:  # run the prefix once; its keys and values stay in the cache
            output = backbone.base_model(inputs_embeds=state["memory"], use_cache=True)
            state.update(cache=_returned_cache(output), memory=None)
        return state

    def step(self, backbone, input_ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Logits [B, T, V] for T new inputs after the prefix and the tokens already in the state's cache (or, without
        a cache, for the prefix followed by these T inputs)."""
        embeds = backbone.get_input_embeddings()(input_ids) + state["offset"][:, None]
        if not state["use_cache"]:
            embeds = torch.cat([state["memory"], embeds], dim=1)
        output = backbone(inputs_embeds=embeds, **self.cache_arguments(state))
        if not state["use_cache"]:
            return output.logits[:, self.num_memory_slots :], state
        return output.logits, {**state, "cache": _returned_cache(output)}


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer: the backbone's, with distinct pad / BOS / EOS and a "BOS sentence EOS" template


def adapt_tokenizer(tokenizer, lowercase: bool = False) -> PreTrainedTokenizerFast:
    """The backbone's tokenizer following sentmim's conventions (docs/backbones.md, "Tokens"). Idempotent.

    lowercase: lowercase text before the tokenizer's own normalizer (for lowercased training text, so that text given
    to the trained model later is lowercased the same way)."""
    return _adapt_tokenizer(tokenizer, lowercase)[0]


def _adapt_tokenizer(tokenizer, lowercase: bool = False) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """(adapted tokenizer, {"bos_token" / "pad_token" / "eos_token": id} of the tokens it had to add)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no `tokenizers` backend (tokenizer.json); pass a fast "
            "tokenizer of the backbone (tokenizer=...)"
        )
    backend = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer stays as it was
    backend.no_truncation()
    backend.no_padding()
    if lowercase:
        steps = [normalizers.Lowercase()] + ([backend.normalizer] if backend.normalizer is not None else [])
        backend.normalizer = normalizers.Sequence(steps)
    eos, unk = tokenizer.eos_token, tokenizer.unk_token
    bos = tokenizer.bos_token if tokenizer.bos_token not in (None, eos) else None
    pad = tokenizer.pad_token if tokenizer.pad_token not in (None, bos, eos, unk) else None
    added = {}

    def add(role: str, candidates: tuple[str, ...]) -> str:
        vocabulary = backend.get_vocab(with_added_tokens=True)
        token = next(token for token in candidates if token not in vocabulary)
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        added[role] = backend.token_to_id(token)
        return token

    if eos is None:
        eos = add("eos_token", ("</s>", "<|sentmim_eos|>"))
    if bos is None:
        bos = add("bos_token", ("<s>", "<|sentmim_bos|>"))
    if pad is None:
        pad = add("pad_token", ("<pad>", "<|sentmim_pad|>"))
    adapted = fast_tokenizer(backend, bos, eos, pad, unk, tokenizer.model_max_length,
                             clean_up=getattr(tokenizer, "clean_up_tokenization_spaces", False))
    return adapted, added


def load_backbone_tokenizer(name_or_path: str):
    """The adapted tokenizer of a backbone (a Hub id or a local folder)."""
    load_backbone_config(name_or_path)  # a missing folder or unknown id: the same one-line errors as from_backbone
    return adapt_tokenizer(_load_tokenizer(name_or_path))


def _load_tokenizer(name_or_path: str):
    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise OSError(f"backbone {name_or_path!r}: its tokenizer could not be loaded ({first_line(error)}); a "
                      "backbone folder holds the tokenizer's files beside config.json") from error


def load_backbone_config(name_or_path: str):
    """The backbone's transformers config, from a local folder or (transformers' from_pretrained) the Hugging Face
    Hub; a one-line error for a missing folder, an id that cannot be fetched, or a model type that would need code
    from the folder."""
    path = Path(name_or_path).expanduser()
    if (path.is_absolute() or str(name_or_path).startswith(".")) and not path.is_dir():  # a path, not a Hub id
        raise OSError(f"backbone {name_or_path!r}: no such folder; pass a folder holding the backbone's config.json, "
                      "weights and tokenizer, or a Hugging Face Hub id")
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except OSError as error:
        raise OSError(
            f"backbone {name_or_path!r}: neither a local folder with a config.json nor a model transformers could "
            f"fetch from the Hugging Face Hub ({first_line(error)})"
        ) from error
    except ValueError as error:  # custom code (auto_map), or a model type this transformers does not know
        raise ValueError(
            f"backbone {name_or_path!r}: not a model type of this transformers installation; sentmim never runs "
            f"code shipped with a model ({first_line(error)})"
        ) from error


# ----------------------------------------------------------------------------------------------------------------
# from_backbone


def from_backbone(model_class, name_or_path: str, tokenizer=None, **config_kwargs):
    """A sentmim model (`model_class`, a SentenceMIMModel) around the pretrained backbone `name_or_path`.

    `tokenizer`: the backbone's own tokenizer (an object, or a folder / Hub id to load it from; default: the one at
    `name_or_path`). The model follows `adapt_tokenizer(tokenizer)`."""
    backbone = _auto_class(load_backbone_config(name_or_path)).from_pretrained(name_or_path, trust_remote_code=False)
    if tokenizer is None or isinstance(tokenizer, str):
        tokenizer = _load_tokenizer(tokenizer or name_or_path)
    adapted, added = _adapt_tokenizer(tokenizer)
    _make_room_for_tokens(backbone, adapted, added, trained_rows=len(tokenizer))

    text_config = backbone.config.get_text_config()
    num_memory_slots = config_kwargs.get("num_memory_slots", SentenceMIMConfig().num_memory_slots)
    limit = _max_sentence_length(backbone, tokenizer, num_memory_slots)
    if config_kwargs.get("max_position_embeddings", limit) > limit:
        prefix = "" if backbone.config.is_encoder_decoder else f", less the {num_memory_slots} memory slots' prefix"
        raise ValueError(
            f"max_position_embeddings={config_kwargs['max_position_embeddings']}: backbone {name_or_path!r} "
            f"positions at most {limit} tokens per sentence (BOS and EOS included{prefix}); use a smaller limit "
            "(data max_length)"
        )
    settings = dict(
        vocab_size=backbone.get_input_embeddings().num_embeddings,
        pad_token_id=adapted.pad_token_id,
        bos_token_id=adapted.bos_token_id,
        eos_token_id=adapted.eos_token_id,
        # Word dropout replaces words by the unknown token; without a distinct one it uses the pad token.
        unk_token_id=adapted.unk_token_id
        if adapted.unk_token_id not in (None, adapted.bos_token_id, adapted.eos_token_id)
        else adapted.pad_token_id,
        max_position_embeddings=limit,
        embedding_size=backbone.get_input_embeddings().embedding_dim,
        hidden_size=text_config.hidden_size,
        num_layers=text_config.num_hidden_layers,
        backbone_config=copy.deepcopy(backbone.config),
        backbone_name_or_path=str(name_or_path),
    )
    model = model_class(SentenceMIMConfig(**{**settings, **config_kwargs}))
    model.backbone.load_state_dict(backbone.state_dict())
    return model


def _make_room_for_tokens(backbone, tokenizer, added: dict[str, int], trained_rows: int) -> None:
    """Resize the embeddings for the added tokens and initialise their rows (docs/backbones.md, "Tokens").

    `added`: the special tokens adapting the tokenizer added; a special token beyond the backbone's rows (the
    tokenizer was adapted already) counts as added too."""
    rows = backbone.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    for role in ("bos_token", "pad_token", "eos_token"):
        if getattr(tokenizer, f"{role}_id") >= rows:
            added = {**added, role: getattr(tokenizer, f"{role}_id")}
    trained_rows = min(trained_rows, rows)
    start_token = backbone.config.decoder_start_token_id if backbone.config.is_encoder_decoder else None
    start_token = start_token if start_token is not None else backbone.config.bos_token_id
    matrices = [backbone.get_input_embeddings().weight]
    output = backbone.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    with torch.no_grad():
        for role, token_id in added.items():
            copies_start = role == "bos_token" and isinstance(start_token, int) and 0 <= start_token < trained_rows
            for matrix in matrices:
                matrix[token_id] = matrix[start_token] if copies_start else matrix[:trained_rows].mean(0)


def _max_sentence_length(backbone, tokenizer, num_memory_slots: int) -> int:
    """The longest sentence (BOS and EOS included) the backbone can position; a prefix takes its share."""
    limit = getattr(backbone.config.get_text_config(), "max_position_embeddings", None)
    if limit is None:
        tokenizer_limit = getattr(tokenizer, "model_max_length", None) or DEFAULT_MAX_LENGTH
        limit = min(tokenizer_limit, DEFAULT_MAX_LENGTH)
    if not backbone.config.is_encoder_decoder:
        limit -= num_memory_slots
    return limit
