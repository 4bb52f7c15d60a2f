"""Objectives and KL schedules against direct computations."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from sentmim import objectives
from sentmim.options import TrainingOptions


def test_mim_loss_against_normal_log_probs_in_float64():
    torch.manual_seed(0)
    mean, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    z, ll = torch.randn(5, 3, dtype=torch.float64), -torch.rand(5, dtype=torch.float64) * 20
    loss = objectives.mim_loss(ll, z, mean, logvar)
    for i in range(5):
        log_q = sum(Normal(mean[i, d], math.exp(logvar[i, d] / 2)).log_prob(z[i, d]).item() for d in range(3))
        log_p = sum(-0.5 * (math.log(2 * math.pi) + z[i, d].item() ** 2) for d in range(3))
        assert loss[i].item() == pytest.approx(-ll[i].item() - 0.5 * (log_q + log_p), rel=1e-12)


def test_vae_loss_and_kl_against_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    ll = -torch.rand(5, dtype=torch.float64) * 20
    kl = kl_divergence(Normal(mean, (logvar / 2).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(objectives.vae_loss(ll, mean, logvar, beta=0.25), -ll + 0.25 * kl)
    assert torch.allclose(objectives.ae_loss(ll), -ll)


def test_free_bits_floor_each_dimension_on_the_batch_average():
    torch.manual_seed(0)
    scale = torch.tensor([0.05, 2.0, 0.1, 1.0], dtype=torch.float64)
    mean = (torch.randn(6, 4, dtype=torch.float64) * scale).requires_grad_()
    logvar = torch.zeros(6, 4, dtype=torch.float64)
    ll = torch.zeros(6, dtype=torch.float64)
    floor = 0.3
    loss = objectives.vae_loss(ll, mean, logvar, beta=1.0, free_bits=floor)
    expected = 0.0
    for d in range(4):
        average = sum(0.5 * mean[i, d].item() ** 2 for i in range(6)) / 6  # logvar = 0: KL_d = mean_d^2 / 2
        expected += max(floor, average)
    assert loss.mean().item() == pytest.approx(expected, rel=1e-12)
    # Dimensions under the floor get no gradient; the others do.
    loss.mean().backward()
    mean_kl = (0.5 * mean.detach().pow(2)).mean(0)
    assert {d: mean.grad[:, d].abs().sum().item() == 0.0 for d in range(4)} == {
        d: mean_kl[d].item() < floor for d in range(4)
    }
    assert 0 < int((mean_kl < floor).sum()) < 4, "the test needs dimensions on both sides of the floor"


def test_kl_schedules_follow_their_closed_forms():
    kw = dict(kl_weight=0.8, kl_anneal_steps=100, kl_logistic_k=0.05, kl_logistic_x0=50, kl_cycle_steps=40,
              kl_cycle_ratio=0.5)

    def beta(step, schedule):
        return objectives.kl_weight(step, TrainingOptions(output_dir="unused", kl_schedule=schedule, **kw))

    for step in range(0, 200, 7):
        assert beta(step, "constant") == 0.8
        assert beta(step, "linear") == pytest.approx(0.8 * min(1.0, step / 100))
        assert beta(step, "logistic") == pytest.approx(0.8 / (1 + math.exp(-0.05 * (step - 50))))
        position = step % 40
        assert beta(step, "cyclical") == pytest.approx(0.8 * min(1.0, position / 20))
    with pytest.raises(ValueError, match="kl schedule"):
        objectives.kl_weight(0, SimpleNamespace(kl_schedule="exponential", kl_weight=1.0))
