"""How good decoded sentences are, as a set: distinct-n, the share that end with EOS, their length, and their
perplexity under a separately trained language model (definitions: docs/metrics.md, "Samples").

    z = pipe.sample_latents(500, prior="aggregate", generator=generator)     # or prior="standard": N(0, I)
    quality, generated = sample_quality(pipe.model, z, language_model=lm, max_length=63)
    # {"distinct_1", "distinct_2", "eos_share", "mean_length", "lm_ppl", "num_samples"}

The decoding is the model's (`SentenceMIMModel.decode`, greedy unless told otherwise); keyword arguments go to it,
e.g. generate()'s remedies for rows that never emit EOS (no_repeat_ngram_size=3, repetition_penalty=1.2).
"""

import torch

from . import metrics
from .evaluation import eval_mode


@torch.no_grad()
def decoded_quality(generated: torch.Tensor, eos_token_id: int, bos_token_id: int, language_model=None) -> dict:
    """The numbers of a set of decoded rows ([N, L], `SentenceMIMModel.decode`'s output).

    distinct-n counts the emitted words (EOS left out); the LM perplexity scores BOS + the emitted tokens up to and
    including EOS (a row that never emitted EOS is scored as emitted), under `language_model.log_likelihood`."""
    emitted = metrics.generated_token_mask(generated, eos_token_id) & (generated != eos_token_id)
    words = [row[mask].tolist() for row, mask in zip(generated, emitted, strict=True)]
    results = {
        "num_samples": generated.shape[0],
        "distinct_1": _distinct_or_none(words, 1),
        "distinct_2": _distinct_or_none(words, 2),
        "eos_share": metrics.eos_share(generated, eos_token_id),
        "mean_length": sum(map(len, words)) / len(words),
        "lm_ppl": None,
    }
    if language_model is not None:
        batch = metrics.decoded_to_batch(generated.cpu(), bos_token_id, eos_token_id)
        results["lm_ppl"] = metrics.language_model_perplexity(language_model.log_likelihood, [batch])
    return results


def _distinct_or_none(words, n: int):
    try:
        return metrics.distinct_n(words, n)
    except ValueError:  # no n-gram at all (every sample shorter than n)
        return None


@torch.no_grad()
def sample_quality(model, z: torch.Tensor, language_model=None, max_length: int | None = None, **decode_options):
    """(numbers, generated ids) of the sentences `model` decodes from the codes z [N, latent]."""
    with eval_mode(model):
        generated = model.decode(z.to(device=model.device, dtype=model.dtype), max_length=max_length,
                                 **decode_options)
    config = model.config
    return decoded_quality(generated, config.eos_token_id, config.bos_token_id, language_model), generated
