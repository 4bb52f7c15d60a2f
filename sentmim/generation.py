"""Decoding sentences from latent codes: greedy, sampling (temperature, top-k, top-p) and beam search.

The algorithms only need three things from a model, so GRU and Transformer decoders share them:
    state = model.start_decoding(z)                      # recurrent state / key-value cache for a batch of z
    logits, state = model.decode_step(tokens, state)     # one new token per row: [N] -> [N, V]
    state = model.reorder_decoding_state(state, index)   # keep / repeat / permute rows
Each step feeds one new token per sentence (the state carries the prefix), and finished sentences leave the batch,
so a step costs only the sentences still being written.

Output convention (public API): the generated tokens after BOS, up to and including EOS, then `pad_token_id`.
BOS and padding are never generated (their logits are masked), so a decoded row reads as a sentence.

A row that never emits EOS runs to max_length, often in a loop ("every day every day ..."); how often is
`metrics.eos_share`. Greedy decoding and sampling take generate()'s two remedies for it (`RepetitionRemedies`).
"""

import math

import torch


def decode_latents(
    model,
    z: torch.Tensor,
    max_length: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> torch.Tensor:
    if max_length < 1:
        raise ValueError(f"max_length={max_length}: must be >= 1")
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams}: must be >= 1")
    if do_sample and not 0 < temperature < math.inf:  # nan fails this test too
        raise ValueError(f"temperature={temperature}: must be finite and > 0 when sampling (do_sample=False: greedy)")
    if not 0 < repetition_penalty < math.inf:
        raise ValueError(f"repetition_penalty={repetition_penalty}: must be finite and > 0 (1: no penalty)")
    if isinstance(no_repeat_ngram_size, bool) or not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size={no_repeat_ngram_size!r}: must be an integer >= 0 (0: off)")
    remedies = RepetitionRemedies(repetition_penalty, no_repeat_ngram_size)
    if num_beams > 1:
        if do_sample:
            raise ValueError("num_beams > 1 with do_sample=True is not supported: beam search is deterministic")
        if remedies.active:
            raise ValueError("repetition_penalty / no_repeat_ngram_size with num_beams > 1 is not supported: use "
                             "greedy decoding or sampling")
        return beam_search(model, z, max_length, num_beams, length_penalty)
    return greedy_or_sample(model, z, max_length, do_sample, temperature, top_k, top_p, generator, remedies)


class RepetitionRemedies:
    """transformers generate()'s remedies, with its definitions (tests/test_generation.py checks them against it):

    - repetition_penalty theta (CTRL, Keskar et al. 2019): the logit of every token already in the sentence (BOS
      included) is divided by theta when positive and multiplied by theta when negative (1: off).
    - no_repeat_ngram_size n: a token that would complete an n-gram already in the sentence (BOS included) is banned
      (0: off).
    """

    def __init__(self, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0):
        self.repetition_penalty, self.no_repeat_ngram_size = repetition_penalty, no_repeat_ngram_size
        self.active = repetition_penalty != 1.0 or no_repeat_ngram_size > 0

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """logits [N, V] of the next token; history [N, t] the tokens so far."""
        if self.repetition_penalty != 1.0:
            seen = logits.gather(1, history)
            penalised = torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
            logits = logits.scatter(1, history, penalised)
        size = self.no_repeat_ngram_size
        if size > 0 and history.size(1) >= size:
            logits = logits.clone()
            for row, tokens in enumerate(history.tolist()):
                prefix = tuple(tokens[len(tokens) - size + 1:]) if size > 1 else ()
                banned = {tokens[i + size - 1] for i in range(len(tokens) - size + 1)
                          if tuple(tokens[i : i + size - 1]) == prefix}
                if banned:
                    logits[row, list(banned)] = float("-inf")
        return logits


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set whose probability reaches top_p."""
    if top_k > 0:
        kth_best = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probabilities = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already reach top_p (the best token always stays).
        drop_sorted = (probabilities.cumsum(-1) - probabilities) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token_logits(model, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    """One decoding step, with BOS and padding ruled out as next tokens."""
    logits, state = model.decode_step(tokens, state)
    logits = logits.float()
    logits[:, [model.config.bos_token_id, model.config.pad_token_id]] = float("-inf")
    return logits, state


def greedy_or_sample(model, z, max_length, do_sample, temperature, top_k, top_p, generator,
                     remedies: RepetitionRemedies | None = None) -> torch.Tensor:
    config = model.config
    batch_size = z.size(0)
    output = torch.full((batch_size, max_length), config.pad_token_id, dtype=torch.long, device=z.device)
    rows = torch.arange(batch_size, device=z.device)  # which output row each live sentence writes to
    tokens = torch.full((batch_size,), config.bos_token_id, dtype=torch.long, device=z.device)
    state = model.start_decoding(z)
    steps = 0
    for step in range(max_length):
        logits, state = next_token_logits(model, tokens, state)
        if remedies is not None and remedies.active:
            bos = torch.full((rows.numel(), 1), config.bos_token_id, dtype=torch.long, device=z.device)
            logits = remedies(logits, torch.cat([bos, output[rows, :step]], dim=1))
        if do_sample:
            logits = filter_logits(logits / temperature, top_k, top_p)
            tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            tokens = logits.argmax(-1)
        output[rows, step] = tokens
        steps = step + 1
        live = tokens != config.eos_token_id
        if not bool(live.all()):
            keep = live.nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows, tokens = rows[keep], tokens[keep]
            state = model.reorder_decoding_state(state, keep)
    return output[:, :steps]


def beam_search(model, z, max_length, num_beams, length_penalty=1.0) -> torch.Tensor:
    """Beam search over num_beams hypotheses per latent; finished hypotheses keep their score and stay in the beam.

    Hypotheses are ranked by summed log-probability during the search and by score / length**length_penalty at
    the end. With one beam this is exactly greedy decoding.
    """
    config = model.config
    batch_size, device = z.size(0), z.device
    num_rows = batch_size * num_beams
    state = model.start_decoding(z.repeat_interleave(num_beams, dim=0))
    # Only the first beam of each sentence is live at the start; otherwise the beams would all be copies.
    scores = torch.full((batch_size, num_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    tokens = torch.full((num_rows,), config.bos_token_id, dtype=torch.long, device=device)
    sequences = torch.empty((num_rows, 0), dtype=torch.long, device=device)
    finished = torch.zeros(num_rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(num_rows, device=device)
    row_offset = (torch.arange(batch_size, device=device) * num_beams)[:, None]
    for _ in range(max_length):
        logits, state = next_token_logits(model, tokens, state)
        log_probs = logits.log_softmax(-1)
        # A finished hypothesis has exactly one continuation, padding, at no cost.
        log_probs[finished] = float("-inf")
        log_probs[finished, config.pad_token_id] = 0.0
        vocab_size = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(batch_size, num_beams * vocab_size)
        scores, flat_index = candidates.topk(num_beams, dim=1)
        source = (row_offset + flat_index // vocab_size).view(-1)
        tokens = (flat_index % vocab_size).view(-1)
        sequences = torch.cat([sequences[source], tokens[:, None]], dim=1)
        finished, lengths = finished[source], lengths[source]
        lengths = lengths + (~finished).float()
        finished = finished | (tokens == config.eos_token_id)
        state = model.reorder_decoding_state(state, source)
        if bool(finished.all()):
            break
    normalised = scores / lengths.view(batch_size, num_beams).clamp(min=1.0) ** length_penalty
    best = (row_offset.squeeze(1) + normalised.argmax(dim=1))
    return sequences[best]
