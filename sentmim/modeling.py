"""SentenceMIMModel: a sentence auto-encoder with a Gaussian latent, as a transformers PreTrainedModel.

    input_ids ──encoder──> q(z|x) = N(mean, diag exp(logvar)) ──z──> decoder ──> p(x|z) = prod_t p(x_t | x_<t, z)

Everything the forward pass of sentmim's own architectures needs is in this file, top-down: shared helpers, the GRU
encoder/decoder (the sentenceMIM paper's model), the Transformer encoder/decoder, then the model class that joins an
encoder and a decoder and applies an objective from `sentmim.objectives`. With `architecture="backbone"` a pretrained
Hugging Face LM reads and writes the sentences instead (`sentmim.backbones`, `SentenceMIMModel.from_backbone`).

Token convention: the tokenizer adds BOS and EOS and pads on the right. The decoder is teacher-forced on
input_ids[:, :-1] and predicts input_ids[:, 1:]; padding never enters any sentence's numbers.
"""

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from . import backbones, objectives
from .configuration import SentenceMIMConfig
from .gaussian import kl_divergence
from .gaussian import sample as gaussian_sample
from .generation import decode_latents


@dataclass
class SentenceMIMOutput(ModelOutput):
    """loss: batch mean of the per-sentence objective. logits: [B, T-1, V] for targets input_ids[:, 1:].
    z, mean, logvar: [B, latent] (for the AE objective z == mean). log_likelihood: [B] log p(x|z) in nats, summed
    over the predicted targets. kl: [B] closed-form KL(q(z|x) || N(0, I))."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    z: torch.FloatTensor | None = None
    mean: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    log_likelihood: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# GRU encoder and decoder


def reverse_within_length(embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `length` positions of each row, leaving the padding where it is."""
    positions = torch.arange(embeds.size(1), device=embeds.device)
    source = (lengths[:, None] - 1 - positions).clamp(min=0)
    source = torch.where(positions < lengths[:, None], source, positions)
    return embeds.gather(1, source[:, :, None].expand_as(embeds))


# A one-layer GRU encoder runs over the padded batch when at most this fraction of it is padding (length-bucketed
# batches: ~1-2%). A padded run computes the input products of all steps as one matrix product; a packed run goes
# step by step and costs ~1.75x more per real token on a CPU (forward + backward, batch 20 and 128), so packing
# only pays when about half the batch is padding.
PADDED_RUN_MAX_PADDING = 0.4


class GRUEncoder(nn.Module):
    """Reads the sentence (optionally backwards); the final states of all layers give mean and logvar."""

    main_input_name = "input_ids"  # generate() reads `model.encoder.main_input_name`

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.reverse_input = config.reverse_input
        self.rnn = nn.GRU(
            config.embedding_size, config.hidden_size, config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.to_posterior = nn.Linear(config.num_layers * config.hidden_size, 2 * config.latent_size)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = attention_mask.sum(1)
        if self.reverse_input:
            embeds = reverse_within_length(embeds, lengths)
        batch_size, width = embeds.shape[:2]
        if self.rnn.num_layers == 1 and int(lengths.sum()) >= (1 - PADDED_RUN_MAX_PADDING) * batch_size * width:
            # Padding follows each sentence, so the output at its last token is its final state, and nothing
            # computed on the padding flows back into it.
            outputs, _ = self.rnn(embeds)
            final = outputs[torch.arange(batch_size, device=embeds.device), lengths - 1]
        else:
            packed = pack_padded_sequence(embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, final = self.rnn(packed)  # [num_layers, B, hidden], each row at its own length
            final = final.transpose(0, 1).reshape(batch_size, -1)
        mean, logvar = self.to_posterior(final).chunk(2, dim=-1)
        return mean, logvar


class GRUDecoder(nn.Module):
    """z sets the initial state of every layer and is also concatenated to every input step (sentenceMIM paper)."""

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.num_layers, self.hidden_size = config.num_layers, config.hidden_size
        self.latent_to_state = nn.Linear(config.latent_size, config.num_layers * config.hidden_size)
        self.rnn = nn.GRU(
            config.embedding_size + config.latent_size, config.hidden_size, config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def start(self, z: torch.Tensor) -> dict:
        state = torch.tanh(self.latent_to_state(z)).view(z.size(0), self.num_layers, self.hidden_size)
        return {"hidden": state.transpose(0, 1).contiguous(), "z": z}

    def step(self, embeds: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Run [B, T, E] inputs from `state`; returns [B, T, hidden] outputs and the state after them."""
        z = state["z"]
        inputs = torch.cat([embeds, z[:, None].expand(-1, embeds.size(1), -1)], dim=-1)
        outputs, hidden = self.rnn(inputs, state["hidden"])
        return outputs, {"hidden": hidden, "z": z}

    def forward(self, embeds: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.step(embeds, self.start(z))[0]

    @staticmethod
    def reorder_state(state: dict, index: torch.Tensor) -> dict:
        return {"hidden": state["hidden"].index_select(1, index), "z": state["z"].index_select(0, index)}


# ----------------------------------------------------------------------------------------------------------------
# Transformer encoder and decoder (pre-norm blocks; key-value cache for decoding)


class PositionEmbedding(nn.Module):
    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.kind, self.width = config.position_embedding_type, config.hidden_size
        self.max_positions = config.max_position_embeddings
        if self.kind == "learned":
            self.table = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        if start + length > self.max_positions:
            raise ValueError(
                f"sentence of {start + length} tokens is longer than max_position_embeddings={self.max_positions}; "
                "truncate or drop longer sentences (data max_length) or train with a larger max_position_embeddings"
            )
        positions = torch.arange(start, start + length, device=device)
        if self.kind == "learned":
            return self.table(positions)
        # Computed on the fly (cheap) rather than stored, so there is no buffer to restore when loading.
        frequencies = torch.exp(
            torch.arange(0, self.width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.width)
        )
        angles = positions[:, None].float() * frequencies[None]
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, : self.width]


class Attention(nn.Module):
    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.num_heads, self.dropout = config.num_attention_heads, config.dropout
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key_value = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.num_heads, -1).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key, value = self.key_value(source).chunk(2, dim=-1)
        return self.split_heads(key), self.split_heads(value)

    def forward(self, x, key, value, attn_mask=None, is_causal=False) -> torch.Tensor:
        attended = F.scaled_dot_product_attention(
            self.split_heads(self.query(x)), key, value, attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal,
        )
        return self.out(attended.transpose(1, 2).flatten(2))


class FeedForward(nn.Sequential):
    def __init__(self, config: SentenceMIMConfig):
        super().__init__(
            nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )


class TransformerEncoderBlock(nn.Module):
    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.attention_norm, self.attention = nn.LayerNorm(config.hidden_size), Attention(config)
        self.feed_forward_norm, self.feed_forward = nn.LayerNorm(config.hidden_size), FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.attention_norm(x)
        x = x + self.dropout(self.attention(h, *self.attention.keys_values(h), attn_mask=attn_mask))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class TransformerDecoderBlock(nn.Module):
    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.self_attention_norm, self.self_attention = nn.LayerNorm(config.hidden_size), Attention(config)
        self.cross_attention_norm, self.cross_attention = nn.LayerNorm(config.hidden_size), Attention(config)
        self.feed_forward_norm, self.feed_forward = nn.LayerNorm(config.hidden_size), FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, memory_key_value, cache=None):
        """x: [B, T, H]. With a cache (keys/values of the earlier positions) x holds only the new positions."""
        h = self.self_attention_norm(x)
        key, value = self.self_attention.keys_values(h)
        if cache is not None:
            key, value = torch.cat([cache[0], key], dim=2), torch.cat([cache[1], value], dim=2)
        # Right padding means causality alone keeps every real position away from the padding.
        is_causal = cache is None and x.size(1) > 1
        x = x + self.dropout(self.self_attention(h, key, value, is_causal=is_causal))
        x = x + self.dropout(self.cross_attention(self.cross_attention_norm(x), *memory_key_value))
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, (key, value)


class TransformerEncoder(nn.Module):
    """Bidirectional encoder with a padding mask; masked mean pooling of the final states gives mean and logvar."""

    main_input_name = "input_ids"  # generate() reads `model.encoder.main_input_name`

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.input_projection = (
            nn.Linear(config.embedding_size, config.hidden_size)
            if config.embedding_size != config.hidden_size else nn.Identity()
        )
        self.positions = PositionEmbedding(config)
        self.blocks = nn.ModuleList(TransformerEncoderBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.to_posterior = nn.Linear(config.hidden_size, 2 * config.latent_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.input_projection(embeds) + self.positions(0, embeds.size(1), embeds.device)
        x = self.dropout(x)
        keep = attention_mask.bool()
        for block in self.blocks:
            x = block(x, attn_mask=keep[:, None, None, :])
        x = self.final_norm(x)
        weights = keep[:, :, None].to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1)
        mean, logvar = self.to_posterior(pooled).chunk(2, dim=-1)
        return mean, logvar


class TransformerDecoder(nn.Module):
    """Causal decoder conditioned on z twice: z is projected to memory slots for cross-attention and added to
    every token embedding (so even a one-layer decoder sees z at every position)."""

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.num_memory_slots, self.hidden_size = config.num_memory_slots, config.hidden_size
        self.input_projection = (
            nn.Linear(config.embedding_size, config.hidden_size)
            if config.embedding_size != config.hidden_size else nn.Identity()
        )
        self.positions = PositionEmbedding(config)
        self.latent_to_memory = nn.Linear(config.latent_size, config.num_memory_slots * config.hidden_size)
        self.latent_to_input = nn.Linear(config.latent_size, config.hidden_size)
        self.blocks = nn.ModuleList(TransformerDecoderBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def start(self, z: torch.Tensor) -> dict:
        memory = self.latent_to_memory(z).view(z.size(0), self.num_memory_slots, self.hidden_size)
        return {
            "z_input": self.latent_to_input(z),
            "memory": [block.cross_attention.keys_values(memory) for block in self.blocks],
            "cache": None,
            "length": 0,
        }

    def step(self, embeds: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Run [B, T, E] new inputs after the `state["length"]` positions already in the cache."""
        start = state["length"]
        x = self.input_projection(embeds) + self.positions(start, embeds.size(1), embeds.device)
        x = self.dropout(x + state["z_input"][:, None])
        caches = state["cache"] or [None] * len(self.blocks)
        new_caches = []
        for block, memory, cache in zip(self.blocks, state["memory"], caches, strict=True):
            x, new_cache = block(x, memory, cache)
            new_caches.append(new_cache)
        return self.final_norm(x), {**state, "cache": new_caches, "length": start + embeds.size(1)}

    def forward(self, embeds: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.step(embeds, self.start(z))[0]

    @staticmethod
    def reorder_state(state: dict, index: torch.Tensor) -> dict:
        def pick(pairs):
            return [(key.index_select(0, index), value.index_select(0, index)) for key, value in pairs]

        return {
            "z_input": state["z_input"].index_select(0, index),
            "memory": pick(state["memory"]),
            "cache": None if state["cache"] is None else pick(state["cache"]),
            "length": state["length"],
        }


# ----------------------------------------------------------------------------------------------------------------
# The model


class SentenceMIMPreTrainedModel(PreTrainedModel):
    config_class = SentenceMIMConfig
    base_model_prefix = "sentmim"
    main_input_name = "input_ids"
    _no_split_modules = ("TransformerEncoderBlock", "TransformerDecoderBlock")

    def _init_weights(self, module: nn.Module) -> None:
        # The sentenceMIM reference GRU model trains from PyTorch's default initialisation; keep it. Transformers
        # get the usual normal(0, initializer_range) initialisation, and so do a backbone model's latent layers (the
        # backbone itself is a transformers model: its own _init_weights initialises it).
        if self.config.architecture in ("transformer", "backbone"):
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        # Since transformers 5.24 the loaded weights are views into the memory-mapped safetensors file, at offsets
        # that are not 64-byte aligned. Matrix kernels then round differently, so a loaded model's outputs differ
        # from the saved model's in the last bit; and the weights would change under a process that rewrote the
        # file in place. Copy them into memory of their own (a shared, tied parameter is copied once).
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                tensor.data = tensor.data.clone()
        model._freeze_backbone_if_configured()  # loading made new parameters, which require gradients again
        return model

    def _freeze_backbone_if_configured(self) -> None:
        if self.config.architecture == "backbone" and self.config.freeze_backbone:
            self.backbone.requires_grad_(False)


class _PosteriorMeanEncoder(nn.Module):
    """What `generate(input_ids=...)` calls as the encoder: returns the posterior mean as a one-slot sequence."""

    main_input_name = "input_ids"

    def __init__(self, model: "SentenceMIMModel"):
        super().__init__()
        object.__setattr__(self, "model", model)  # a plain reference: registering it would make a module cycle

    def forward(self, input_ids, attention_mask=None, **unused) -> BaseModelOutput:
        mean, _ = self.model.encode(input_ids, attention_mask)
        return BaseModelOutput(last_hidden_state=mean[:, None])


class SentenceMIMModel(SentenceMIMPreTrainedModel, GenerationMixin):
    """Encoder q(z|x), decoder p(x|z) and the training objective selected by `config.objective`.

    `generate(encoder_outputs=BaseModelOutput(last_hidden_state=z[:, None]))` decodes given latents with any
    transformers decoding strategy; `decode(z)` is the fast native path (recurrent state / key-value cache).
    """

    def __init__(self, config: SentenceMIMConfig):
        super().__init__(config)
        if config.architecture == "backbone":
            self._build_backbone_layers(config)
        else:
            self._build_own_layers(config)
        self.post_init()
        # generate() must not build a transformers Cache for our decoders: without this it either crashes or feeds
        # only the newest token to a decoder that has no cache (ecosystem.md 1.6).
        self.generation_config.use_cache = False

    def _build_own_layers(self, config: SentenceMIMConfig) -> None:
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.decoder_input_dropout = nn.Dropout(config.embedding_dropout)
        if config.architecture == "gru":
            self.encoder, self.decoder = GRUEncoder(config), GRUDecoder(config)
        else:
            self.encoder, self.decoder = TransformerEncoder(config), TransformerDecoder(config)
        if config.tie_word_embeddings:
            self.output_projection = nn.Linear(config.hidden_size, config.embedding_size)
            self.lm_head = nn.Linear(config.embedding_size, config.vocab_size)
            self._tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
        else:
            self.output_projection = nn.Identity()
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)

    def _build_backbone_layers(self, config: SentenceMIMConfig) -> None:
        # The backbone is a direct child, where transformers finds (and ties, initialises, saves) its weights. Its
        # decoder returns logits from the backbone's own output layer, which is more than a linear map for some
        # families (BART's final_logits_bias, T5's rescaling), so `project` is the identity for it.
        self.backbone = backbones.build_backbone(config)
        self.latent = backbones.build_latent_layers(config, self.backbone)
        self._freeze_backbone_if_configured()

    @classmethod
    def from_backbone(cls, name_or_path: str, tokenizer=None, **config_kwargs) -> "SentenceMIMModel":
        """A model around a pretrained Hugging Face encoder-decoder or decoder-only LM (a Hub id or a local folder).

        `tokenizer` is the backbone's tokenizer (default: the one saved with it); the model follows
        `sentmim.backbones.adapt_tokenizer(tokenizer)`, which is what to save with it. Keyword arguments are
        SentenceMIMConfig fields (objective, latent_size, num_memory_slots, freeze_backbone, backbone_pooling, ...).
        """
        return backbones.from_backbone(cls, name_or_path, tokenizer, **config_kwargs)

    # -- encoder side ------------------------------------------------------------------------------------------

    def _check_attention_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if input_ids.size(1) < 2 or bool((attention_mask.sum(1) < 2).any()):
            raise ValueError("input_ids: every sentence needs at least BOS and EOS (2 tokens)")
        if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("attention_mask: sentences must be right-padded (tokens first, then padding)")
        return attention_mask

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Posterior parameters (mean, logvar), each [B, latent]; logvar is floored at config.logvar_min."""
        return self._encode(input_ids, self._check_attention_mask(input_ids, attention_mask))

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """encode() without re-validating a mask the caller has already checked."""
        if self.config.architecture == "backbone":
            mean, logvar = self.latent.encode(self.backbone, input_ids, attention_mask)
        else:
            mean, logvar = self.encoder(self.dropout(self.embed_tokens(input_ids)), attention_mask)
        return mean, logvar.clamp(min=self.config.logvar_min)

    def sample_latent(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterised z = mean + exp(logvar / 2) * eps; the AE objective uses z = mean."""
        if self.config.objective == "ae":
            return mean
        return gaussian_sample(mean, logvar)

    def get_encoder(self) -> nn.Module:
        return _PosteriorMeanEncoder(self)

    # -- decoder side ------------------------------------------------------------------------------------------

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.architecture == "backbone":  # a backbone's decoder already returns logits
            return hidden
        return self.lm_head(self.output_projection(self.dropout(hidden)))

    def _teacher_forced_hidden(self, decoder_input_ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.word_dropout > 0:
            decoder_input_ids = self._drop_words(decoder_input_ids)
        if self.config.architecture == "backbone":
            return self.latent(self.backbone, decoder_input_ids, z)
        embeds = self.decoder_input_dropout(self.dropout(self.embed_tokens(decoder_input_ids)))
        return self.decoder(embeds, z)

    def _drop_words(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Replace each input word (never BOS, never padding) by UNK with probability config.word_dropout."""
        dropped = torch.rand(decoder_input_ids.shape, device=decoder_input_ids.device) < self.config.word_dropout
        dropped[:, 0] = False
        dropped &= decoder_input_ids != self.config.pad_token_id
        return decoder_input_ids.masked_fill(dropped, self.config.unk_token_id)

    def _log_likelihood(self, input_ids, z, attention_mask, return_logits: bool):
        """log p(x|z) per sentence, and the full logits when asked for.

        Without logits, only the real target positions go through the output layer (no work on padding)."""
        hidden = self._teacher_forced_hidden(input_ids[:, :-1], z)
        # Scores are at least float32 even when the model runs in bf16/fp16 (cross-entropy needs the precision).
        score_dtype = torch.promote_types(hidden.dtype, torch.float32)
        targets, target_mask = input_ids[:, 1:], attention_mask[:, 1:].bool()
        if return_logits:
            logits = self.project(hidden)
            token_nll = F.cross_entropy(logits.flatten(0, 1).to(score_dtype), targets.flatten(), reduction="none")
            return -(token_nll.view_as(targets) * target_mask).sum(1), logits
        rows = torch.arange(input_ids.size(0), device=input_ids.device)[:, None].expand_as(targets)[target_mask]
        token_nll = F.cross_entropy(
            self.project(hidden[target_mask]).to(score_dtype), targets[target_mask], reduction="none"
        )
        log_likelihood = torch.zeros(input_ids.size(0), device=input_ids.device, dtype=token_nll.dtype)
        return log_likelihood.index_add(0, rows, -token_nll), None

    def log_likelihood(self, input_ids, z, attention_mask=None) -> torch.Tensor:
        """log p(x|z) in nats per sentence [B], teacher forced, summed over the predicted targets (words + EOS)."""
        attention_mask = self._check_attention_mask(input_ids, attention_mask)
        return self._log_likelihood(input_ids, z, attention_mask, return_logits=False)[0]

    def start_decoding(self, z: torch.Tensor) -> dict:
        if self.config.architecture == "backbone":
            return self.latent.start(self.backbone, z)
        return self.decoder.start(z)

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        if self.config.architecture == "backbone":
            logits, state = self.latent.step(self.backbone, tokens[:, None], state)
            return logits[:, 0], state
        hidden, state = self.decoder.step(self.embed_tokens(tokens)[:, None], state)
        return self.project(hidden[:, 0]), state

    def reorder_decoding_state(self, state: dict, index: torch.Tensor) -> dict:
        if self.config.architecture == "backbone":
            return self.latent.reorder_state(state, index)
        return self.decoder.reorder_state(state, index)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, max_length: int | None = None, **generation_options) -> torch.Tensor:
        """Token ids [B, <=max_length]: the generated tokens after BOS, up to and including EOS, then padding.

        Greedy by default; generation_options are those of `sentmim.generation.decode_latents` (do_sample,
        temperature, top_k, top_p, num_beams, length_penalty, generator)."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.size(1) != self.config.latent_size:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor [batch, {self.config.latent_size}], got {shape}")
        if not torch.isfinite(z).all():  # would decode silently into runs of one token
            row = int((~torch.isfinite(z)).any(1).nonzero()[0, 0])
            raise ValueError(f"z holds nan or inf values (first in row {row}): decode finite latent codes only")
        if max_length is None:
            max_length = self.config.max_position_embeddings - 1
        positioned = self.config.architecture in ("transformer", "backbone")
        if positioned and max_length > self.config.max_position_embeddings - 1:
            raise ValueError(
                f"max_length={max_length}: a {self.config.architecture} decoder positions at most "
                f"max_position_embeddings - 1 = {self.config.max_position_embeddings - 1} generated tokens"
            )
        return decode_latents(self, z, max_length, **generation_options)

    # -- forward -----------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        kl_weight: float | None = None,
        free_bits: float = 0.0,
        return_logits: bool = True,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ) -> SentenceMIMOutput:
        """Encode, sample z, decode, and score with the configured objective.

        kl_weight: beta of the VAE objective (the training loop passes the annealing schedule's value; None = 1,
        as in evaluation). free_bits: the VAE's per-dimension KL floor in nats (training passes it; 0 = none).
        return_logits=False skips the full [B, T-1, V] logits (faster training).
        With encoder_outputs (how generate() calls us) z = encoder_outputs[0][:, 0] and only logits for
        decoder_input_ids are returned. use_cache and return_dict are what generate() passes; the decoders keep
        their own state and the output is always a SentenceMIMOutput.
        """
        if encoder_outputs is not None:
            z = encoder_outputs[0][:, 0]
            return SentenceMIMOutput(logits=self.project(self._teacher_forced_hidden(decoder_input_ids, z)), z=z)
        if input_ids is None:
            raise ValueError("forward needs input_ids (or encoder_outputs with decoder_input_ids, as in generate())")
        attention_mask = self._check_attention_mask(input_ids, attention_mask)
        mean, logvar = self._encode(input_ids, attention_mask)
        z = self.sample_latent(mean, logvar)
        log_likelihood, logits = self._log_likelihood(input_ids, z, attention_mask, return_logits)
        objective = self.config.objective
        if objective == "mim":
            per_sentence = objectives.mim_loss(log_likelihood, z, mean, logvar)
        elif objective == "vae":
            beta = 1.0 if kl_weight is None else kl_weight
            per_sentence = objectives.vae_loss(log_likelihood, mean, logvar, beta=beta, free_bits=free_bits)
        else:
            per_sentence = objectives.ae_loss(log_likelihood)
        return SentenceMIMOutput(
            loss=per_sentence.mean(), logits=logits, z=z, mean=mean, logvar=logvar,
            log_likelihood=log_likelihood, kl=kl_divergence(mean, logvar),
        )
