"""Straightforward reference implementations of what sentmim does fast.

They are the baselines of `benchmarks/throughput.py` and the references of `tests/test_fast_paths.py`, which checks
that the library's fast paths compute the same numbers:

- `padded_log_likelihood`: log p(x|z) with the output layer applied at every position, padding included, and
  cross-entropy with `ignore_index` on the padding (the library projects only the real targets).
- `padded_loss`: the training loss of a model computed with `padded_log_likelihood`.
- `greedy_by_recomputing_prefix`: greedy decoding that runs the model's teacher-forced forward (full logits) on the
  whole prefix at every step, as `generate()` does without a cache, for all rows until every row has ended (the
  library carries a recurrent state / key-value cache and drops finished rows).
"""

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from sentmim import objectives

IGNORE_INDEX = -100


def padded_log_likelihood(model, input_ids: torch.Tensor, z: torch.Tensor, attention_mask: torch.Tensor):
    """log p(x|z) per sentence [B]: logits at every position [B, T-1, V], padding ignored in the cross-entropy."""
    hidden = model._teacher_forced_hidden(input_ids[:, :-1], z)
    logits = model.project(hidden)
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    token_nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return -token_nll.sum(1)


def padded_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, kl_weight: float = 1.0):
    """The model's objective (config.objective) as a batch mean, with the padded full-projection likelihood."""
    mean, logvar = model.encode(input_ids, attention_mask)
    z = model.sample_latent(mean, logvar)
    log_likelihood = padded_log_likelihood(model, input_ids, z, attention_mask)
    objective = model.config.objective
    if objective == "mim":
        per_sentence = objectives.mim_loss(log_likelihood, z, mean, logvar)
    elif objective == "vae":
        per_sentence = objectives.vae_loss(log_likelihood, mean, logvar, beta=kl_weight)
    else:
        per_sentence = objectives.ae_loss(log_likelihood)
    return per_sentence.mean()


@torch.no_grad()
def greedy_by_recomputing_prefix(model, z: torch.Tensor, max_length: int) -> torch.Tensor:
    """Greedy decoding without a decoding state: each step re-runs the model on the whole prefix of every row.

    Same output convention as `model.decode`: tokens after BOS up to and including EOS, then padding; BOS and
    padding are never generated.
    """
    config = model.config
    encoder_outputs = BaseModelOutput(last_hidden_state=z[:, None])
    prefix = torch.full((z.size(0), 1), config.bos_token_id, dtype=torch.long, device=z.device)
    finished = torch.zeros(z.size(0), dtype=torch.bool, device=z.device)
    for _ in range(max_length):
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=prefix).logits[:, -1].float()
        logits[:, [config.bos_token_id, config.pad_token_id]] = float("-inf")
        tokens = logits.argmax(-1).masked_fill(finished, config.pad_token_id)
        prefix = torch.cat([prefix, tokens[:, None]], dim=1)
        finished |= tokens == config.eos_token_id
        if bool(finished.all()):
            break
    return prefix[:, 1:]
