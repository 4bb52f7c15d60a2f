"""The posterior/prior formulas every other module uses, against torch.distributions and sample statistics."""

import torch
from torch.distributions import Normal, kl_divergence

from sentmim import gaussian


def test_kl_per_dimension_and_total_against_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian.kl_per_dimension(mean, logvar), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gaussian.kl_divergence(mean, logvar), expected.sum(-1), rtol=1e-12, atol=1e-12)


def test_sample_is_the_reparameterisation_of_the_generators_noise_and_has_the_right_moments():
    mean = torch.tensor([[0.5, -2.0, 3.0]], dtype=torch.float64).expand(200_000, 3)
    logvar = torch.tensor([[0.0, -4.0, 1.0]], dtype=torch.float64).expand(200_000, 3)
    z = gaussian.sample(mean, logvar, torch.Generator().manual_seed(7))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(z, mean + torch.exp(0.5 * logvar) * eps)
    torch.testing.assert_close(z.mean(0), mean[0], atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.exp(0.5 * logvar[0]), atol=0.0, rtol=0.01)
