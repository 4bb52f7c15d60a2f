"""The training objectives and the VAE's KL schedules, as pure functions of tensors (natural logs, per sentence).

Each loss function returns one value per sentence; the model's `loss` is their batch mean.

- MIM (sentenceMIM, asymmetric MIM; Livne et al. 2020):
      loss(x) = -log p(x|z) - w_t/2 [ log q(z|x) + log N(z; 0, I) ],   z ~ q(z|x)
  The paper's objective is w_t = 1 throughout (no hyper-parameters); an optional warm-up raises w_t linearly from 0
  to 1 over the first `mim_warmup_steps` steps (``mim_prior_weight``), after which the objective is the paper's.
- VAE: loss(x) = -log p(x|z) + beta_t KL(q(z|x) || N(0, I)), optionally with free bits.
- AE:  loss(x) = -log p(x|z), with z = mean (no sampling).
"""

import math

import torch

from .gaussian import kl_per_dimension, log_normal, log_standard_normal


def mim_loss(
    log_likelihood: torch.Tensor,
    z: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    prior_weight: float = 1.0,
) -> torch.Tensor:
    """sentenceMIM loss per sentence; `z` must be the reparameterised sample drawn from N(mean, exp(logvar)).

    prior_weight: w_t, the weight of the two prior terms (1: the paper's objective; the warm-up's value otherwise)."""
    return -log_likelihood - 0.5 * prior_weight * (log_normal(z, mean, logvar) + log_standard_normal(z))


def vae_loss(
    log_likelihood: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
    free_bits: float = 0.0,
) -> torch.Tensor:
    """Text-VAE loss per sentence: -log p(x|z) + beta * KL.

    Free bits (Kingma et al. 2016) floor the KL of each latent dimension at `free_bits` nats, measured on the batch
    average: the batch mean of the returned KL term is sum_d max(free_bits, mean_x KL_d(x)). A dimension whose
    batch-average KL is below the floor contributes the constant floor, so the optimiser stops pushing it to zero.
    """
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
    (sentmim.options.TrainingOptions, or any object that has them):

    - constant: kl_weight.
    - linear: rises from 0 to kl_weight over `kl_anneal_steps`, then stays (Bowman et al. 2016).
    - logistic: kl_weight / (1 + exp(-k (step - x0))), k = kl_logistic_k, x0 = kl_logistic_x0 (Bowman et al.; the
      sentenceMIM demo uses k=0.0025, x0=2500).
    - cyclical: each cycle of `kl_cycle_steps` rises linearly over its first `kl_cycle_ratio` fraction, then holds at
      kl_weight (Fu et al. 2019).
    """
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
    `options.mim_warmup_steps` is 0 (the paper's objective from the first step).

    Why a warm-up: the prior terms pull the codes towards the origin from the first step, before the decoder has
    learnt to read them; with w_t rising from 0 the model first learns as an auto-encoder with noisy codes, then
    the pull is phased in (NeMo's A-MIM warms up its non-reconstruction terms the same way)."""
    warmup = options.mim_warmup_steps
    return 1.0 if warmup == 0 else min(1.0, step / warmup)
