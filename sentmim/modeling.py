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
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
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
# GRU layers: torch's fused kernel on accelerators, the time loop written out on the CPU


def values_are_free(tensor: torch.Tensor) -> bool:
    """Whether Python may read a tensor's values at no cost. On the CPU it may; on an accelerator a read waits for
    all queued work (a host sync), so there the forward pass takes the branches that need no values: it runs over
    the padding instead of skipping it, and it does not check the attention mask's values."""
    return tensor.device.type == "cpu"


# On the CPU a GRU skips the padding of a batch (packed layout: each time step runs only the sentences still going)
# when more than this fraction of it is padding. Skipping costs a reordering of the rows and smaller matrix products
# per step: on PTB at batch 20 a training step took the same time either way at 13% padding, 8% less time when
# packed at 29% and 23% less at 50% (random batches); length-bucketed batches hold 1-2%.
PADDED_RUN_MAX_PADDING = 0.2


class GRURecurrence(torch.autograd.Function):
    """The time loop of one GRU layer (torch's gate order: reset, update, new), given the input side of its gates.

        r = sigmoid(i_r + W_hr h + b_hr)   u = sigmoid(i_u + W_hu h + b_hu)   n = tanh(i_n + r * (W_hn h + b_hn))
        h' = n + u * (h - n)

    torch's CPU GRU records every time step's products in the autograd graph, so its backward computes the small
    weight gradient of W_hh once per step. Here the backward loops over time only for the state gradient and
    computes W_hh's gradient as one matrix product over all steps.

    input_gates [N, 3H] and the returned outputs [N, H] are in packed layout (PackedSequence.data): the rows of
    step 0, then those of step 1, ...; step t holds rows 0 .. batch_sizes[t] - 1 of the batch (sorted by length,
    longest first), so a step runs only the sentences not yet finished. initial: [B, H] in the same row order.
    """

    @staticmethod
    def forward(ctx, input_gates, initial, weight_hh, bias_hh, batch_sizes: list[int]):
        hidden = initial.size(1)
        outputs = input_gates.new_empty(input_gates.size(0), hidden)
        reset_update = input_gates.new_empty(input_gates.size(0), 2 * hidden)  # saved for the backward
        new_gates = input_gates.new_empty(input_gates.size(0), hidden)  # n
        hidden_new_gates = input_gates.new_empty(input_gates.size(0), hidden)  # W_hn h + b_hn
        with torch.autocast(input_gates.device.type, enabled=False):  # computed in the dtype it is given
            for rows, previous in _steps(batch_sizes, initial, outputs):
                hidden_gates = torch.addmm(bias_hh, previous, weight_hh.t())
                gates = torch.sigmoid(input_gates[rows, : 2 * hidden] + hidden_gates[:, : 2 * hidden])
                reset, update = gates.chunk(2, dim=1)
                new = torch.tanh(torch.addcmul(input_gates[rows, 2 * hidden :], reset, hidden_gates[:, 2 * hidden :]))
                torch.addcmul(new, update, previous - new, out=outputs[rows])
                reset_update[rows], new_gates[rows], hidden_new_gates[rows] = gates, new, hidden_gates[:, 2 * hidden :]
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(initial, outputs, reset_update, new_gates, hidden_new_gates, weight_hh)
        return outputs

    @staticmethod
    def backward(ctx, grad_outputs):
        initial, outputs, reset_update, new_gates, hidden_new_gates, weight_hh = ctx.saved_tensors
        hidden = initial.size(1)
        grad_state = torch.zeros_like(initial)  # d loss / d state of each row; a finished row's passes through
        grad_input_gates = outputs.new_empty(outputs.size(0), 3 * hidden)
        grad_hidden_gates = torch.empty_like(grad_input_gates)
        steps = list(_steps(ctx.batch_sizes, initial, outputs))
        for rows, previous in reversed(steps):
            size = previous.size(0)
            grad = grad_state[:size] + grad_outputs[rows]
            reset, update = reset_update[rows].chunk(2, dim=1)
            new = new_gates[rows]
            grad_new = grad * (1 - update) * (1 - new * new)
            grad_update = grad * (previous - new) * update * (1 - update)
            grad_reset = grad_new * hidden_new_gates[rows] * reset * (1 - reset)
            torch.cat([grad_reset, grad_update, grad_new], dim=1, out=grad_input_gates[rows])
            torch.cat([grad_reset, grad_update, grad_new * reset], dim=1, out=grad_hidden_gates[rows])
            grad_state[:size] = torch.addmm(grad * update, grad_hidden_gates[rows], weight_hh)
        previous_states = torch.cat([previous for _, previous in steps])
        grad_weight_hh = grad_hidden_gates.t() @ previous_states
        return grad_input_gates, grad_state, grad_weight_hh, grad_hidden_gates.sum(0), None


def _steps(batch_sizes: list[int], initial: torch.Tensor, outputs: torch.Tensor):
    """(rows of step t in the packed layout, the states those rows start step t from) for each step t."""
    start = 0
    for step, size in enumerate(batch_sizes):
        if step == 0:
            previous = initial[:size]
        else:
            previous = outputs[start - batch_sizes[step - 1] : start - batch_sizes[step - 1] + size]
        yield slice(start, start + size), previous
        start += size


def run_gru(rnn: nn.GRU, inputs, initial=None, lengths=None, sentence_inputs=None):
    """Run the batch-first `rnn` over inputs [B, T, I] from initial states [layers, B, H] (None: zeros).

    sentence_inputs [B, S], constant over time, are appended to every step's first-layer input (the rnn's input
    size is I + S): the same model as concatenating them to `inputs`, but on the CPU their share of the input
    products is computed once per sentence instead of at every step. lengths [B]: each row's real steps (None: all
    T). Returns the last layer's outputs [B, T, H] (unspecified past a row's length) and every layer's state after
    each row's last real step [layers, B, H].
    """
    if not values_are_free(inputs):
        return run_torch_gru(rnn, inputs, initial, lengths, sentence_inputs)
    batch_size, width = inputs.shape[:2]
    num_layers, hidden = rnn.num_layers, rnn.hidden_size
    if initial is None:
        initial = inputs.new_zeros(num_layers, batch_size, hidden)
    real_steps = batch_size * width if lengths is None else int(lengths.sum())
    if real_steps >= (1 - PADDED_RUN_MAX_PADDING) * batch_size * width:  # a padded run, rows in batch order
        data = inputs.transpose(0, 1).reshape(width * batch_size, -1)
        batch_sizes, order = [batch_size] * width, None
        step_of_row = (width - 1 if lengths is None else lengths - 1)
        last_rows = step_of_row * batch_size + torch.arange(batch_size, device=inputs.device)
    else:  # packed: each step runs only the rows still going, longest sentences first
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        data, batch_sizes, order = packed.data, packed.batch_sizes.tolist(), packed.sorted_indices
        step_starts = torch.cumsum(packed.batch_sizes, 0) - packed.batch_sizes
        last_rows = step_starts[lengths - 1] + packed.unsorted_indices
    finals = []
    for layer in range(num_layers):
        weight_ih, bias_ih = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"bias_ih_l{layer}")
        if layer == 0 and sentence_inputs is not None:
            gates = F.linear(data, weight_ih[:, : data.size(1)], bias_ih)
            sentence_gates = F.linear(sentence_inputs, weight_ih[:, data.size(1) :])  # once per sentence
            if order is None:  # in place: the product's backward does not need its output
                gates.view(width, batch_size, -1).add_(sentence_gates)
            else:
                rows = torch.cat([torch.arange(size, device=data.device) for size in batch_sizes])
                gates.add_(sentence_gates[order][rows])
        else:
            gates = F.linear(data, weight_ih, bias_ih)
        start = initial[layer] if order is None else initial[layer].index_select(0, order)
        weight_hh, bias_hh = getattr(rnn, f"weight_hh_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        data = GRURecurrence.apply(gates, start.to(gates.dtype), weight_hh.to(gates.dtype), bias_hh.to(gates.dtype),
                                   batch_sizes)
        finals.append(data.index_select(0, last_rows))
        if layer < num_layers - 1:
            data = F.dropout(data, rnn.dropout, rnn.training)
    if order is None:
        outputs = data.view(width, batch_size, hidden).transpose(0, 1)
    else:
        outputs = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        outputs = pad_packed_sequence(outputs, batch_first=True, total_length=width)[0]
    return outputs, torch.stack(finals)


def run_torch_gru(rnn: nn.GRU, inputs, initial=None, lengths=None, sentence_inputs=None):
    """run_gru with torch's GRU (cuDNN on a GPU) on the inputs with the sentence inputs concatenated at every step:
    over the padding, except a multi-layer GRU with lengths (packed; its lengths are read on the host)."""
    if sentence_inputs is not None:
        inputs = torch.cat([inputs, sentence_inputs[:, None].expand(-1, inputs.size(1), -1)], dim=-1)
    if lengths is None:
        return rnn(inputs, initial)
    if rnn.num_layers == 1:
        outputs, _ = rnn(inputs, initial)
        # Padding follows each sentence, so the output at its last token is its final state.
        final = outputs[torch.arange(inputs.size(0), device=inputs.device), lengths - 1]
        return outputs, final[None]
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = rnn(packed, initial)
    return pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))[0], final


# ----------------------------------------------------------------------------------------------------------------
# GRU encoder and decoder


def gru_layers(config: SentenceMIMConfig, input_size: int) -> nn.GRU:
    dropout = config.dropout if config.num_layers > 1 else 0.0  # torch warns about dropout after a single layer
    return nn.GRU(input_size, config.hidden_size, config.num_layers, batch_first=True, dropout=dropout)


def reverse_within_length(embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `length` positions of each row, leaving the padding where it is."""
    positions = torch.arange(embeds.size(1), device=embeds.device)
    source = (lengths[:, None] - 1 - positions).clamp(min=0)
    source = torch.where(positions < lengths[:, None], source, positions)
    return embeds.gather(1, source[:, :, None].expand_as(embeds))


class GRUEncoder(nn.Module):
    """Reads the sentence (optionally backwards); the final states of all layers give mean and logvar."""

    main_input_name = "input_ids"  # generate() reads `model.encoder.main_input_name`

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.reverse_input = config.reverse_input
        self.rnn = gru_layers(config, config.embedding_size)
        self.to_posterior = nn.Linear(config.num_layers * config.hidden_size, 2 * config.latent_size)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = attention_mask.sum(1)
        if self.reverse_input:
            embeds = reverse_within_length(embeds, lengths)
        _, final = run_gru(self.rnn, embeds, lengths=lengths)  # [num_layers, B, hidden], each row at its length
        mean, logvar = self.to_posterior(final.transpose(0, 1).reshape(embeds.size(0), -1)).chunk(2, dim=-1)
        return mean, logvar


class GRUDecoder(nn.Module):
    """z sets the initial state of every layer and is also concatenated to every input step (sentenceMIM paper)."""

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.num_layers, self.hidden_size = config.num_layers, config.hidden_size
        self.latent_to_state = nn.Linear(config.latent_size, config.num_layers * config.hidden_size)
        self.rnn = gru_layers(config, config.embedding_size + config.latent_size)

    def start(self, z: torch.Tensor) -> dict:
        state = torch.tanh(self.latent_to_state(z)).view(z.size(0), self.num_layers, self.hidden_size)
        return {"hidden": state.transpose(0, 1).contiguous(), "z": z}

    def step(self, embeds: torch.Tensor, state: dict, lengths: torch.Tensor | None = None):
        """Run [B, T, E] inputs from `state`; returns [B, T, hidden] outputs and the state after them. lengths [B]:
        the real inputs of each row (teacher forcing), so that the CPU can skip a batch's padding."""
        outputs, hidden = run_gru(self.rnn, embeds, state["hidden"], lengths, sentence_inputs=state["z"])
        return outputs, {"hidden": hidden, "z": state["z"]}

    def forward(self, embeds: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(embeds, self.start(z), lengths)[0]

    @staticmethod
    def reorder_state(state: dict, index: torch.Tensor) -> dict:
        return {"hidden": state["hidden"].index_select(1, index), "z": state["z"].index_select(0, index)}


# ----------------------------------------------------------------------------------------------------------------
# Transformer encoder and decoder (pre-norm blocks; key-value cache for decoding)


def input_projection(config: SentenceMIMConfig) -> nn.Module:
    """Token embeddings -> the model width."""
    if config.embedding_size == config.hidden_size:
        return nn.Identity()
    return nn.Linear(config.embedding_size, config.hidden_size)


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
        self.input_projection = input_projection(config)
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
        mean, logvar = self.to_posterior(backbones.pool(self.final_norm(x), keep, "mean")).chunk(2, dim=-1)
        return mean, logvar


class TransformerDecoder(nn.Module):
    """Causal decoder conditioned on z twice: z is projected to memory slots for cross-attention and added to
    every token embedding (so even a one-layer decoder sees z at every position)."""

    def __init__(self, config: SentenceMIMConfig):
        super().__init__()
        self.num_memory_slots, self.hidden_size = config.num_memory_slots, config.hidden_size
        self.input_projection = input_projection(config)
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
# The output layer's cross-entropy, as one step on the CPU


class OutputLayerNLL(torch.autograd.Function):
    """-log softmax(features @ weight.T + bias)[target] per row [N]: the output layer and its cross-entropy in one.

    F.cross_entropy on the logits makes [N, vocab] passes over memory for the log-softmax, for a dense gradient of
    the loss and for the log-softmax's gradient (~116 MB each at batch 128 on PTB). Here the forward turns the
    logits in place into softmax - onehot, the loss's gradient per unit of each row's weight; the backward folds the
    rows' weights into the small operands of its matrix products and makes no [N, vocab] pass of its own (measured:
    the output layer with its loss ~20% faster at batch 128, the same at batch 20).
    """

    @staticmethod
    def forward(ctx, features, weight, bias, targets, with_gradient: bool):
        logits = torch.addmm(bias, features, weight.t())
        target_logit = logits.gather(1, targets[:, None])
        peak = logits.amax(1, keepdim=True)
        exponentials = logits.sub_(peak).exp_()  # in place: no second [N, vocab] tensor
        total = exponentials.sum(1, keepdim=True)
        nll = (peak + total.log() - target_logit)[:, 0]
        if with_gradient:
            gradient = exponentials.div_(total).scatter_add_(1, targets[:, None], total.new_full(total.shape, -1.0))
            ctx.save_for_backward(features, weight, gradient)
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        features, weight, gradient = ctx.saved_tensors
        scale = grad_nll[:, None]
        return (gradient @ weight) * scale, gradient.t() @ (features * scale), gradient.t() @ grad_nll, None, None


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
        # only the newest token to a decoder that has no cache.
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

    def _check_attention_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, check_values: bool = True
    ) -> torch.Tensor:
        """The attention mask (from the padding when None), after checking that every sentence has BOS and EOS and
        is right-padded. check_values=False checks shapes only: reading values on an accelerator is a host sync."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if input_ids.size(1) < 2 or (check_values and bool((attention_mask.sum(1) < 2).any())):
            raise ValueError("input_ids: every sentence needs at least BOS and EOS (2 tokens)")
        if check_values and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
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

    def _teacher_forced_hidden(
        self, decoder_input_ids: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoder outputs [B, T, hidden] for the inputs; lengths [B]: each row's real inputs (None: all), which lets
        a GRU skip the padding (its outputs there are then unspecified)."""
        if self.training and self.config.word_dropout > 0:
            decoder_input_ids = self._drop_words(decoder_input_ids)
        if self.config.architecture == "backbone":
            return self.latent(self.backbone, decoder_input_ids, z)
        embeds = self.decoder_input_dropout(self.dropout(self.embed_tokens(decoder_input_ids)))
        if self.config.architecture == "gru":
            return self.decoder(embeds, z, lengths)
        return self.decoder(embeds, z)

    def _drop_words(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Replace each input word (never BOS, never padding) by UNK with probability config.word_dropout."""
        dropped = torch.rand(decoder_input_ids.shape, device=decoder_input_ids.device) < self.config.word_dropout
        dropped[:, 0] = False
        dropped &= decoder_input_ids != self.config.pad_token_id
        return decoder_input_ids.masked_fill(dropped, self.config.unk_token_id)

    def _log_likelihood(self, input_ids, z, attention_mask, return_logits: bool):
        """log p(x|z) per sentence, and the full logits when asked for.

        Without logits, only the real target positions go through the output layer (no work on padding) where
        picking them out costs no host sync (the CPU), with its cross-entropy in one step (OutputLayerNLL) unless the
        logits come in a lower precision or from a backbone; on an accelerator every position goes through it,
        padding masked."""
        target_mask = attention_mask[:, 1:]
        hidden = self._teacher_forced_hidden(input_ids[:, :-1], z, lengths=target_mask.sum(1))
        # Scores are at least float32 even when the model runs in bf16/fp16 (cross-entropy needs the precision).
        score_dtype = torch.promote_types(hidden.dtype, torch.float32)
        targets = input_ids[:, 1:]
        if return_logits or not values_are_free(hidden):
            logits = self.project(hidden)
            token_nll = F.cross_entropy(logits.flatten(0, 1).to(score_dtype), targets.flatten(), reduction="none")
            log_likelihood = -(token_nll.view_as(targets) * target_mask).sum(1)
            return log_likelihood, logits if return_logits else None
        real = target_mask.bool()
        rows = torch.arange(input_ids.size(0), device=input_ids.device)[:, None].expand_as(targets)[real]
        low_precision = torch.is_autocast_enabled(hidden.device.type) or hidden.dtype != score_dtype
        if low_precision or self.config.architecture == "backbone":  # (a backbone's decoder returns logits)
            token_nll = F.cross_entropy(self.project(hidden[real]).to(score_dtype), targets[real], reduction="none")
        else:
            features = self.output_projection(self.dropout(hidden[real]))
            token_nll = OutputLayerNLL.apply(features, self.lm_head.weight, self.lm_head.bias, targets[real],
                                             torch.is_grad_enabled())
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
        temperature, top_k, top_p, num_beams, length_penalty, generator, and generate()'s remedies for rows that
        never emit EOS: repetition_penalty, no_repeat_ngram_size)."""
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
        prior_weight: float = 1.0,
        return_logits: bool = True,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ) -> SentenceMIMOutput:
        """Encode, sample z, decode, and score with the configured objective.

        kl_weight: beta of the VAE objective (the training loop passes the annealing schedule's value; None = 1,
        as in evaluation). free_bits: the VAE's per-dimension KL floor in nats (training passes it; 0 = none).
        prior_weight: w_t of the MIM objective's prior terms (training passes the warm-up's value; 1 = the paper's).
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
        # The checks of the mask's values run where they cost no host sync (the CPU): a training step on an
        # accelerator must not wait for its own data.
        attention_mask = self._check_attention_mask(input_ids, attention_mask, check_values=values_are_free(input_ids))
        mean, logvar = self._encode(input_ids, attention_mask)
        z = self.sample_latent(mean, logvar)
        log_likelihood, logits = self._log_likelihood(input_ids, z, attention_mask, return_logits)
        objective = self.config.objective
        if objective == "mim":
            per_sentence = objectives.mim_loss(log_likelihood, z, mean, logvar, prior_weight=prior_weight)
        elif objective == "vae":
            beta = 1.0 if kl_weight is None else kl_weight
            per_sentence = objectives.vae_loss(log_likelihood, mean, logvar, beta=beta, free_bits=free_bits)
        else:
            per_sentence = objectives.ae_loss(log_likelihood)
        return SentenceMIMOutput(
            loss=per_sentence.mean(), logits=logits, z=z, mean=mean, logvar=logvar,
            log_likelihood=log_likelihood, kl=kl_divergence(mean, logvar),
        )
