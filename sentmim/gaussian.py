"""The posterior q(z|x) = N(mean, diag exp(logvar)) and the prior N(0, I): densities, KL and sampling.

The one home of these formulas: the objectives, the model, the metrics, the pipeline and the plots all use them.
Each function sums over the last (latent) dimension and broadcasts over the others; logs are natural.
"""

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)): [..., d] -> [...]."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I): [..., d] -> [...]."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_per_dimension(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mean_d, exp(logvar_d)) || N(0, 1)) of each dimension: [..., d] -> [..., d]."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mean, diag exp(logvar)) || N(0, I)) = 1/2 sum_d (mean^2 + exp(logvar) - logvar - 1)."""
    return kl_per_dimension(mean, logvar).sum(-1)


def kl_code_energy(mean: torch.Tensor) -> torch.Tensor:
    """The part of the KL set by the posterior mean, 1/2 sum_d mean_d^2: [..., d] -> [...]."""
    return 0.5 * mean.pow(2).sum(-1)


def kl_variance_part(logvar: torch.Tensor) -> torch.Tensor:
    """The part of the KL set by the posterior variances, 1/2 sum_d (exp(logvar_d) - logvar_d - 1) >= 0:
    [..., d] -> [...]. kl_code_energy + kl_variance_part = kl_divergence. It carries no information about x: a
    posterior variance pinned at a floor (MIM's logvar = -10) costs ~4.5 nats per dimension whatever the sentence."""
    return 0.5 * (logvar.exp() - logvar - 1.0).sum(-1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps: a sample of q(z|x) for standard normal noise eps."""
    return mean + torch.exp(0.5 * logvar) * eps


def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised sample z ~ q(z|x) per row, its noise drawn from `generator` (default: torch's global)."""
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return reparameterize(mean, logvar, eps)
