"""The training objectives and the VAE's KL schedules, as pure functions of tensors (natural logs, per sentence).

Each loss function returns one value per sentence; the model's `loss` is their batch mean.

- MIM (sentenceMIM, asymmetric MIM; Livne et al. 2020):
      loss(x) = -log p(x|z) - w_t/2 [ log q(z|x) + log N(z; 0, I) ],   z ~ q(z|x)
  with w_t = 1 (the paper's objective) after an optional warm-up (``mim_prior_weight``).
- VAE: loss(x) = -log p(x|z) + beta_t KL(q(z|x) || N(0, I)), optionally with free bits.
- AE:  loss(x) = -log p(x|z), with z = mean (no sampling).

docs/objectives.md defines each, with the schedules of beta_t and w_t and why they exist.
"""

import math

import torch

from .gaussian import kl_per_dimension, log_normal, log_standard_normal


def mim_loss(log_likelihood: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             prior_weight: float = 1.0) -> torch.Tensor:
    """sentenceMIM loss per sentence; `z` must be the reparameterised sample drawn from N(mean, exp(logvar)).

    prior_weight: w_t, the weight of the two prior terms (1: the paper's objective; the warm-up's value otherwise)."""
    return -log_likelihood - 0.5 * prior_weight * (log_normal(z, mean, logvar) + log_standard_normal(z))


def vae_loss(log_likelihood: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0,
             free_bits: float = 0.0) -> torch.Tensor:
    """Text-VAE loss per sentence: -log p(x|z) + beta * KL, where free bits (Kingma et al. 2016) floor each latent
    dimension's batch-average KL at `free_bits` nats: the batch mean of the KL term is sum_d max(free_bits,
    mean_x KL_d(x)) (docs/objectives.md)."""
    kl = kl_per_dimension(mean, logvar)
    if free_bits > 0:
        below_floor = kl.mean(dim=0, keepdim=True) < free_bits
        kl = torch.where(below_floor, torch.full_like(kl, free_bits), kl)
    return -log_likelihood + beta * kl.sum(dim=-1)


def ae_loss(log_likelihood: torch.Tensor) -> torch.Tensor:
    """Auto-encoder loss per sentence: -log p(x|z) with z the posterior mean."""
    return -log_likelihood


def kl_weight(step: int, options) -> float:
    """beta_t of the VAE objective at optimisation step `step` (0-based), from the kl_* fields of `options`
    (sentmim.options.TrainingOptions, or any object that has them); the schedules are docs/objectives.md's table."""
    schedule, top = options.kl_schedule, options.kl_weight
    if schedule == "constant":
        return top
    if schedule == "linear":
        return top * min(1.0, step / options.kl_anneal_steps)
    if schedule == "logistic":
        return top / (1.0 + math.exp(-options.kl_logistic_k * (step - options.kl_logistic_x0)))
    if schedule == "cyclical":
        position = (step % options.kl_cycle_steps) / options.kl_cycle_steps
        return top * min(1.0, position / options.kl_cycle_ratio)
    raise ValueError(f"kl schedule {schedule!r}: must be one of constant, linear, logistic, cyclical")


def mim_prior_weight(step: int, options) -> float:
    """w_t of the MIM objective at optimisation step `step` (0-based): min(1, step / mim_warmup_steps), or 1 when
    `options.mim_warmup_steps` is 0 (the paper's objective from the first step). Why: docs/objectives.md."""
    warmup = options.mim_warmup_steps
    return 1.0 if warmup == 0 else min(1.0, step / warmup)
