"""Useful floating-point operations of a SentenceMIMModel, counted per sentence from its real length (no padding).

A multiply-add counts 2. Counted: the matrix products of the encoder, the decoder and the output layer, and the
attention scores of a Transformer (causal attention counts only the keys a query can see). Not counted: embedding
look-ups, element-wise work (gates, norms, softmax) and the per-sentence latent projections, which are small. z's
share of the GRU decoder's input products is one of them: the model computes it once per sentence, not per step.
Training costs 3x the forward pass (backward = 2x forward).
"""


def _gru_step(config, input_size: int) -> int:
    """One GRU time step over all layers: 3 gates of input and hidden products, 2 FLOPs per multiply-add."""
    hidden = config.hidden_size
    first = 6 * hidden * (input_size + hidden)
    return first + (config.num_layers - 1) * 6 * hidden * (2 * hidden)


def _output_layer(config) -> int:
    if config.tie_word_embeddings:
        return 2 * config.hidden_size * config.embedding_size + 2 * config.embedding_size * config.vocab_size
    return 2 * config.hidden_size * config.vocab_size


def _input_projection(config) -> int:
    return 0 if config.embedding_size == config.hidden_size else 2 * config.embedding_size * config.hidden_size


def encoder_flops(config, num_tokens: int) -> int:
    """The encoder reading one sentence of num_tokens tokens (BOS and EOS included)."""
    if config.architecture == "gru":
        return num_tokens * _gru_step(config, config.embedding_size)
    hidden, width = config.hidden_size, config.intermediate_size
    per_token = _input_projection(config) + config.num_layers * (8 * hidden**2 + 4 * hidden * width)
    attention = config.num_layers * 4 * hidden * num_tokens * num_tokens  # every token attends to all of them
    return num_tokens * per_token + attention


def decoder_flops(config, num_steps: int, start: int = 0) -> int:
    """The decoder and output layer over positions start .. start + num_steps - 1 (one logit row per position)."""
    output = _output_layer(config)
    if config.architecture == "gru":
        return num_steps * (_gru_step(config, config.embedding_size) + output)
    hidden, width, slots = config.hidden_size, config.intermediate_size, config.num_memory_slots
    # self-attention and cross-attention projections (query + out for the cross one), feed-forward
    per_block = 12 * hidden**2 + 4 * hidden * width + 4 * hidden * slots
    per_token = _input_projection(config) + config.num_layers * per_block
    positions = range(start, start + num_steps)
    attention = config.num_layers * sum(4 * hidden * (position + 1) for position in positions)  # causal
    return num_steps * (per_token + output) + attention


def forward_flops(config, num_tokens: int) -> int:
    """One teacher-forced forward pass of a sentence: encoder over all tokens, decoder over all targets."""
    return encoder_flops(config, num_tokens) + decoder_flops(config, num_tokens - 1)


def training_flops(config, lengths) -> int:
    """Forward + backward over sentences of the given lengths (tokens, BOS and EOS included)."""
    return 3 * sum(forward_flops(config, int(n)) for n in lengths)


def iw_nll_flops(config, lengths, num_samples: int) -> int:
    """IW-NLL: the encoder once per sentence, the decoder and output layer once per sample."""
    return sum(encoder_flops(config, int(n)) + num_samples * decoder_flops(config, int(n) - 1) for n in lengths)


def decode_flops(config, lengths) -> int:
    """Generating sentences of the given lengths (generated tokens, EOS included) with a state / cache."""
    return sum(decoder_flops(config, int(n)) for n in lengths)
