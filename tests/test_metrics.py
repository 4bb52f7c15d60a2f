"""Tests of sentmim.metrics against independent computations (torch.distributions, float64 Python loops, sacreBLEU
called directly, closed forms). Tiny stub models stand in for SentenceMIMModel: the metrics only use
``model.encode`` and ``model.log_likelihood``."""

import math
import warnings
from collections import Counter

import pytest
import sacrebleu
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from sentmim import gaussian, metrics

LOG_2PI = math.log(2 * math.pi)


def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _log_normal_loop(z, mean, logvar):
    return sum(-0.5 * (LOG_2PI + lv + (zi - m) ** 2 / math.exp(lv)) for zi, m, lv in zip(z, mean, logvar, strict=True))


def _random_posteriors(num, dim, seed, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    mean = spread * torch.randn(num, dim, generator=g, dtype=torch.float64)
    logvar = torch.rand(num, dim, generator=g, dtype=torch.float64) * 3 - 2.5  # exp in [0.08, 1.6]
    z = mean + torch.exp(0.5 * logvar) * torch.randn(num, dim, generator=g, dtype=torch.float64)
    return mean, logvar, z


# ---------------------------------------------------------------------------------------------------------------------
# KL and Gaussian densities
# ---------------------------------------------------------------------------------------------------------------------


def test_kl_divergence_matches_torch_distributions():
    mean, logvar, _ = _random_posteriors(6, 5, seed=0, spread=2.0)
    expected = torch.distributions.kl_divergence(
        Normal(mean, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ).sum(-1)
    got = metrics.kl_divergence(mean, logvar)
    assert got.shape == (6,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(metrics.kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)) == 0)


def test_log_normal_and_standard_normal_match_torch_distributions():
    mean, logvar, z = _random_posteriors(7, 4, seed=1)
    expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian.log_normal(z, mean, logvar), expected, rtol=1e-12, atol=1e-12)
    expected_std = Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian.log_standard_normal(z), expected_std, rtol=1e-12, atol=1e-12)
    # Broadcasting: K samples [B, K, d] against one posterior per row [B, 1, d].
    zk = z.unsqueeze(1).repeat(1, 3, 1)
    torch.testing.assert_close(gaussian.log_normal(zk, mean.unsqueeze(1), logvar.unsqueeze(1))[:, 1], expected)


def test_kl_parts_sum_to_kl_and_match_their_definitions():
    mean, logvar, _ = _random_posteriors(6, 5, seed=20, spread=2.0)
    code_energy, variance_part = metrics.kl_parts(mean, logvar)
    expected_kl = torch.distributions.kl_divergence(
        Normal(mean, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ).sum(-1)
    torch.testing.assert_close(code_energy + variance_part, expected_kl, rtol=1e-12, atol=1e-12)
    for row in range(6):
        assert float(code_energy[row]) == pytest.approx(0.5 * sum(m**2 for m in mean[row].tolist()), abs=1e-12)
        expected = 0.5 * sum(math.exp(lv) - lv - 1 for lv in logvar[row].tolist())
        assert float(variance_part[row]) == pytest.approx(expected, abs=1e-12)
    # MIM at its logvar floor: the variance part is ~4.5 nats per dimension, whatever the means.
    floor = torch.full((2, 3), -10.0, dtype=torch.float64)
    assert metrics.kl_parts(mean[:2, :3], floor)[1].tolist() == pytest.approx([3 * 0.5 * (math.exp(-10) + 9)] * 2)
    assert metrics.kl_parts(torch.zeros(2, 3), floor)[0].tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------------
# Mutual information
# ---------------------------------------------------------------------------------------------------------------------


def _mi_loop(mean, logvar, z, batch_size=None):
    """He et al.'s estimator with explicit loops over i and j, in Python floats (float64)."""
    mean, logvar, z = mean.tolist(), logvar.tolist(), z.tolist()
    num, dim = len(mean), len(mean[0])
    neg_entropy = sum(-dim / 2 * LOG_2PI - 0.5 * sum(1 + v for v in logvar[i]) for i in range(num)) / num
    step = num if batch_size is None else batch_size
    total = 0.0
    for start in range(0, num, step):
        members = range(start, min(start + step, num))
        for i in members:
            log_densities = [_log_normal_loop(z[i], mean[j], logvar[j]) for j in members]
            total += _logsumexp(log_densities) - math.log(len(members))
    return neg_entropy - total / num


def test_mutual_information_whole_split_matches_double_loop():
    mean, logvar, z = _random_posteriors(37, 3, seed=2, spread=1.5)
    got = metrics.mutual_information(mean, logvar, z=z)
    assert isinstance(got, float)
    assert got == pytest.approx(_mi_loop(mean, logvar, z), abs=1e-10)
    # float32 inputs are promoted to float64 internally.
    got32 = metrics.mutual_information(mean.float(), logvar.float(), z=z.float())
    assert got32 == pytest.approx(_mi_loop(mean.float().double(), logvar.float().double(), z.float().double()),
                                  abs=1e-9)


@pytest.mark.parametrize("batch_size", [1, 5, 8, 37, 100])
def test_mutual_information_per_batch_matches_double_loop(batch_size):
    mean, logvar, z = _random_posteriors(37, 3, seed=3, spread=1.5)  # 37 = uneven last batch for 5 and 8
    got = metrics.mutual_information(mean, logvar, z=z, batch_size=batch_size)
    assert got == pytest.approx(_mi_loop(mean, logvar, z, batch_size), abs=1e-10)


def test_mutual_information_per_batch_differs_from_whole_split():
    mean, logvar, z = _random_posteriors(40, 2, seed=4, spread=3.0)
    whole = metrics.mutual_information(mean, logvar, z=z)
    batched = metrics.mutual_information(mean, logvar, z=z, batch_size=4)
    assert whole > batched  # log 40 vs log 4 caps: the two estimators are not interchangeable


def test_mutual_information_zero_when_posterior_ignores_x():
    num, dim = 4000, 4
    g = torch.Generator().manual_seed(5)
    mean = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64).expand(num, dim)
    logvar = torch.tensor([0.0, -1.0, 0.5, -2.0], dtype=torch.float64).expand(num, dim)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(num, dim, generator=g, dtype=torch.float64)
    got = metrics.mutual_information(mean, logvar, z=z)
    # q_agg == q(z|x) here, so the estimate is exactly E[log q] - mean_i log q(z_i): zero up to Monte Carlo noise.
    neg_entropy = -dim / 2 * LOG_2PI - 0.5 * float((1 + logvar[0]).sum())
    mean_log_q = float(Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1).mean())
    assert got == pytest.approx(neg_entropy - mean_log_q, abs=1e-9)
    assert abs(got) < 0.1


def test_mutual_information_close_to_log_n_for_narrow_distant_posteriors():
    num, dim = 200, 2
    g = torch.Generator().manual_seed(6)
    mean = 50.0 * torch.randn(num, dim, generator=g, dtype=torch.float64)
    logvar = torch.full((num, dim), -10.0, dtype=torch.float64)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(num, dim, generator=g, dtype=torch.float64)
    got = metrics.mutual_information(mean, logvar, z=z)
    # Each z_i only has mass under its own posterior: MI = log N + (E[log q] - mean_i log q(z_i|x_i)).
    own = Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1).mean()
    neg_entropy = (-dim / 2 * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).mean()
    assert got == pytest.approx(math.log(num) + float(neg_entropy - own), abs=1e-6)
    assert got == pytest.approx(math.log(num), abs=0.3)
    assert metrics.mutual_information(mean, logvar, z=z, batch_size=10) == pytest.approx(math.log(10), abs=0.3)


def test_mutual_information_chunked_equals_unchunked():
    # Mixed scales, including very narrow posteriors, on a set larger than one chunk.
    mean, logvar, z = _random_posteriors(300, 6, seed=7, spread=2.0)
    logvar[::3] = -10.0
    z[::3] = mean[::3] + math.exp(-5.0) * 0.7
    one_chunk = metrics.mutual_information(mean, logvar, z=z, chunk_size=300)
    for chunk_size in (1, 7, 64):
        assert metrics.mutual_information(mean, logvar, z=z, chunk_size=chunk_size) == pytest.approx(
            one_chunk, abs=1e-10
        )
    assert metrics.mutual_information(mean, logvar, z=z) == pytest.approx(one_chunk, abs=1e-10)
    # And both equal a direct broadcast of log N(z_i; mean_j, var_j) over [M, M, d].
    log_densities = Normal(mean.unsqueeze(0), torch.exp(0.5 * logvar).unsqueeze(0)).log_prob(z.unsqueeze(1)).sum(-1)
    log_q_agg = torch.logsumexp(log_densities, dim=1) - math.log(300)
    neg_entropy = (-6 / 2 * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).mean()
    assert one_chunk == pytest.approx(float(neg_entropy - log_q_agg.mean()), abs=1e-8)


def test_mutual_information_samples_z_reproducibly():
    mean, logvar, _ = _random_posteriors(50, 3, seed=8)
    first = metrics.mutual_information(mean, logvar, generator=torch.Generator().manual_seed(0))
    second = metrics.mutual_information(mean, logvar, generator=torch.Generator().manual_seed(0))
    third = metrics.mutual_information(mean, logvar, generator=torch.Generator().manual_seed(1))
    assert first == second != third


def _mi_terms_loop(mean, logvar, z, batch_size=None):
    """Per-sentence terms neg_entropy_i - log q_agg(z_i) of He et al.'s estimator, with explicit loops (float64)."""
    mean, logvar, z = mean.tolist(), logvar.tolist(), z.tolist()
    num, dim = len(mean), len(mean[0])
    step = num if batch_size is None else batch_size
    terms = []
    for i in range(num):
        start = i // step * step
        members = range(start, min(start + step, num))
        log_q_agg = _logsumexp([_log_normal_loop(z[i], mean[j], logvar[j]) for j in members]) - math.log(len(members))
        terms.append(-dim / 2 * LOG_2PI - 0.5 * sum(1 + v for v in logvar[i]) - log_q_agg)
    return terms


@pytest.mark.parametrize("batch_size", [None, 4])
def test_mutual_information_with_se_matches_loop(batch_size):
    mean, logvar, _ = _random_posteriors(13, 3, seed=21, spread=1.0)
    g = torch.Generator().manual_seed(22)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(5, 13, 3, generator=g, dtype=torch.float64)  # S = 5 draws
    got = metrics.mutual_information_with_se(mean, logvar, batch_size=batch_size, z=z)
    terms = [_mi_terms_loop(mean, logvar, z[s], batch_size) for s in range(5)]  # [S][N]
    per_sentence = [[terms[s][i] for s in range(5)] for i in range(13)]
    estimate = sum(sum(row) for row in per_sentence) / (5 * 13)
    variances = [sum((t - sum(row) / 5) ** 2 for t in row) / 4 for row in per_sentence]
    assert got.value == pytest.approx(estimate, abs=1e-10)
    assert got.standard_error == pytest.approx(math.sqrt(sum(variances) / 5) / 13, abs=1e-12)
    # The estimate is the mean of the one-draw estimates of mutual_information.
    one_draw = [metrics.mutual_information(mean, logvar, z=z[s], batch_size=batch_size) for s in range(5)]
    assert got.value == pytest.approx(sum(one_draw) / 5, abs=1e-10)


def _clustered_posteriors():
    """40 posteriors in 2-D: 10 identical ones (their z cannot tell them apart) and 30 spread ones of mixed widths,
    so the per-sentence expectations of the MI terms differ a lot between sentences."""
    g = torch.Generator().manual_seed(23)
    mean = torch.cat([torch.zeros(10, 2, dtype=torch.float64), 3.0 * torch.randn(30, 2, generator=g,
                                                                                 dtype=torch.float64)])
    logvar = torch.cat([torch.zeros(10, 2, dtype=torch.float64),
                        torch.rand(30, 2, generator=g, dtype=torch.float64) * 3 - 2.5])
    return mean, logvar


def test_mutual_information_se_matches_spread_of_repeated_estimates():
    mean, logvar = _clustered_posteriors()
    estimates, errors = [], []
    for seed in range(400):
        result = metrics.mutual_information_with_se(mean, logvar, num_samples=3,
                                                    generator=torch.Generator().manual_seed(1000 + seed))
        estimates.append(result.value)
        errors.append(result.standard_error)
    spread = torch.tensor(estimates).std().item()
    mean_se = sum(errors) / len(errors)
    # 400 repeats: the sample spread is known to ~4% (1 / sqrt(2 * 399)).
    assert mean_se == pytest.approx(spread, rel=0.12)
    # The SE is of the Monte Carlo noise given the split: the spread of the sentences' own terms over the split,
    # std_i(t_i) / sqrt(N), is a different (here much larger) number and would not match the reruns.
    z = mean + torch.exp(0.5 * logvar) * torch.randn(3, 40, 2, generator=torch.Generator().manual_seed(9),
                                                     dtype=torch.float64)
    per_sentence = torch.tensor([_mi_terms_loop(mean, logvar, z[s]) for s in range(3)]).mean(0)
    assert (per_sentence.std() / math.sqrt(40)).item() > 1.5 * spread


def test_mutual_information_with_se_validates_draws():
    mean, logvar, z = _random_posteriors(6, 2, seed=24)
    with pytest.raises(ValueError, match="at least 2 draws"):
        metrics.mutual_information_with_se(mean, logvar, num_samples=1)
    with pytest.raises(ValueError, match=r"\[S, N, d\]"):
        metrics.mutual_information_with_se(mean, logvar, z=z)
    first = metrics.mutual_information_with_se(mean, logvar, generator=torch.Generator().manual_seed(0))
    again = metrics.mutual_information_with_se(mean, logvar, generator=torch.Generator().manual_seed(0))
    assert first == again and first.standard_error > 0


# ---------------------------------------------------------------------------------------------------------------------
# Active units
# ---------------------------------------------------------------------------------------------------------------------


def test_active_units_counts_dims_by_unbiased_variance():
    num = 5
    base = torch.arange(num, dtype=torch.float64)
    base = (base - base.mean()) / base.std(unbiased=True)  # unbiased variance exactly 1
    # Unbiased variances per dim; 0.0101 has biased variance 0.0101 * 4 / 5 < 0.01, so it checks the N - 1.
    variances = torch.tensor([0.0, 0.005, 0.0099, 0.0101, 0.02, 1.0, 3.0], dtype=torch.float64)
    means = base.unsqueeze(1) * variances.sqrt() + torch.linspace(-2, 2, len(variances), dtype=torch.float64)
    assert metrics.active_units(means) == 4
    assert metrics.active_units(means.float()) == 4
    assert metrics.active_units(means, threshold=0.5) == 2
    assert metrics.active_units(means, threshold=0.0099 * 0.999) == 5


def test_active_units_of_one_sentence_is_zero_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about var() of one row; that must not reach a user
        assert metrics.active_units(torch.full((1, 3), 5.0)) == 0
    assert metrics.active_units(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.1]])) == 1  # two rows: counted as before


def test_active_units_relative_divides_by_the_mean_posterior_variance():
    num = 5
    base = torch.arange(num, dtype=torch.float64)
    base = (base - base.mean()) / base.std(unbiased=True)  # unbiased variance exactly 1
    mean_variance = torch.tensor([1e-4, 1e-4, 1.0, 1.0, 4.0, 4.0], dtype=torch.float64)  # E_x exp(logvar_d)
    ratios = torch.tensor([0.0099, 0.0101, 0.005, 0.02, 0.0099, 3.0], dtype=torch.float64)
    means = base.unsqueeze(1) * (ratios * mean_variance).sqrt() + 1.5
    # Posterior variances that differ between sentences, with mean E_x exp(logvar_d): exp of the mean logvar would
    # give another denominator.
    spread = torch.tensor([0.2, 1.8, 1.0, 0.5, 1.5], dtype=torch.float64).unsqueeze(1)
    logvars = torch.log(spread * mean_variance)
    expected = [means[:, d].var(unbiased=True).item() / logvars[:, d].exp().mean().item() for d in range(6)]
    got = metrics.posterior_mean_variance_ratio(means, logvars)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert got.tolist() == pytest.approx(ratios.tolist(), rel=1e-12)
    assert metrics.active_units_relative(means, logvars) == 3  # ratios 0.0101, 0.02, 3.0
    assert metrics.active_units_relative(means.float(), logvars.float()) == 3
    assert metrics.active_units_relative(means, logvars, threshold=0.5) == 1


def test_active_units_relative_agrees_with_absolute_rule_at_unit_variance_and_ignores_scale():
    g = torch.Generator().manual_seed(25)
    means = torch.randn(200, 8, generator=g, dtype=torch.float64) * torch.logspace(-2.5, 0, 8, dtype=torch.float64)
    unit = torch.zeros_like(means)  # every posterior variance 1
    assert metrics.active_units_relative(means, unit) == metrics.active_units(means)
    assert 0 < metrics.active_units(means) < 8
    # A MIM-like encoder: sigma = 0.0067 and means that vary by 0.03: every dimension carries x, the absolute rule
    # counts none, the relative one all; rescaling z (means by c, variances by c^2) changes neither relative count.
    mim_means, floor = 0.03 * means / means.std(0), torch.full_like(means, -10.0)
    assert metrics.active_units(mim_means) == 0
    assert metrics.active_units_relative(mim_means, floor) == 8
    assert metrics.active_units_relative(means * 100, unit + 2 * math.log(100)) == metrics.active_units(means)
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.active_units_relative(means[:1], unit[:1])


# ---------------------------------------------------------------------------------------------------------------------
# Stub models for the likelihood estimates
# ---------------------------------------------------------------------------------------------------------------------


class CategoricalStub(nn.Module):
    """Bag-of-tokens encoder and a decoder p(x_t | z) = softmax(z @ W + b) for every target t >= 1 (float64)."""

    def __init__(self, vocab_size=7, latent_size=3, ignore_z=False, prior_posterior=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.encoder = nn.Parameter(torch.randn(vocab_size, 2 * latent_size, generator=g, dtype=torch.float64))
        self.weight = nn.Parameter(torch.randn(latent_size, vocab_size, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(vocab_size, generator=g, dtype=torch.float64))
        self.ignore_z, self.prior_posterior = ignore_z, prior_posterior
        self.rows_per_call = []

    def encode(self, input_ids, attention_mask=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pooled = (self.encoder[input_ids] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        mean, logvar = pooled.chunk(2, dim=-1)
        if self.prior_posterior:
            return torch.zeros_like(mean), torch.zeros_like(logvar)
        return mean, torch.tanh(logvar) - 1

    def log_likelihood(self, input_ids, z, attention_mask=None):
        self.rows_per_call.append(input_ids.shape[0])
        logits = self.bias.expand(z.shape[0], -1) if self.ignore_z else z @ self.weight + self.bias
        log_probs = torch.log_softmax(logits, dim=-1).gather(1, input_ids[:, 1:])
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return (log_probs * mask[:, 1:]).sum(-1)

    def log_likelihood_loop(self, tokens, mask, z):
        """log p(x|z) for one sentence with Python floats."""
        weight, bias = self.weight.tolist(), self.bias.tolist()
        logits = [b if self.ignore_z else b + sum(z[i] * weight[i][v] for i in range(len(z))) for v, b in
                  enumerate(bias)]
        norm = _logsumexp(logits)
        return sum(logits[t] - norm for t, m in zip(tokens[1:], mask[1:], strict=True) if m)


def _batch():
    input_ids = torch.tensor([[1, 4, 2, 6, 2], [1, 3, 3, 2, 0], [1, 5, 2, 0, 0]])
    attention_mask = (input_ids != 0).long()
    return input_ids, attention_mask


def test_importance_weighted_nll_matches_float64_loop_over_samples():
    model = CategoricalStub()
    input_ids, attention_mask = _batch()
    num_samples, batch = 20, 3
    got = metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=num_samples,
                                          generator=torch.Generator().manual_seed(11))
    # Same noise as the documented draw: one [K, B, d] standard normal tensor from the generator.
    mean, logvar = (t.tolist() for t in model.encode(input_ids, attention_mask))
    eps = torch.randn(num_samples, batch, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64).tolist()
    for b in range(batch):
        log_w = []
        for k in range(num_samples):
            z = [m + math.exp(0.5 * lv) * e for m, lv, e in zip(mean[b], logvar[b], eps[k][b], strict=True)]
            log_px_z = model.log_likelihood_loop(input_ids[b].tolist(), attention_mask[b].tolist(), z)
            log_prior = sum(-0.5 * (LOG_2PI + zi**2) for zi in z)
            log_w.append(log_px_z + log_prior - _log_normal_loop(z, mean[b], logvar[b]))
        expected = -(_logsumexp(log_w) - math.log(num_samples))
        assert float(got[b]) == pytest.approx(expected, abs=1e-9)


def test_importance_weighted_nll_batches_samples_and_is_chunk_independent():
    model = CategoricalStub()
    input_ids, attention_mask = _batch()
    results = {}
    for chunk_size in (1, 6, 20, 50):
        model.rows_per_call.clear()
        results[chunk_size] = metrics.importance_weighted_nll(
            model, input_ids, attention_mask, num_samples=20, chunk_size=chunk_size,
            generator=torch.Generator().manual_seed(3),
        )
        chunk = min(chunk_size, 20)
        expected_rows = [3 * chunk] * (20 // chunk) + ([3 * (20 % chunk)] if 20 % chunk else [])
        assert model.rows_per_call == expected_rows  # one decoder call per chunk, B * chunk rows
    for result in results.values():
        torch.testing.assert_close(result, results[20], rtol=0, atol=1e-10)
    # max_rows bounds the decoder batch when no chunk size is given.
    model.rows_per_call.clear()
    metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=20, max_rows=9)
    assert max(model.rows_per_call) <= 9 and sum(model.rows_per_call) == 60


def test_importance_weighted_nll_leaves_mode_and_grad_alone():
    model = CategoricalStub()
    input_ids, attention_mask = _batch()
    for train in (True, False):
        model.train(train)
        result = metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=4)
        assert model.training is train
        assert not result.requires_grad
        assert result.shape == (3,) and torch.isfinite(result).all()


def test_importance_weighted_nll_exact_when_decoder_ignores_z_and_q_is_prior():
    # p(x|z) = p(x) and q = N(0, I) = p(z): every weight is exactly p(x), whatever K.
    model = CategoricalStub(ignore_z=True, prior_posterior=True)
    input_ids, attention_mask = _batch()
    exact = torch.tensor([-model.log_likelihood_loop(ids, mask, []) for ids, mask in
                          zip(input_ids.tolist(), attention_mask.tolist(), strict=True)], dtype=torch.float64)
    for num_samples in (1, 3, 50):
        got = metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=num_samples, chunk_size=7)
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-10)


class LinearGaussianStub(nn.Module):
    """z ~ N(0, I), x | z ~ N(W z, s^2 I) with orthogonal columns in W, so the exact posterior is diagonal:
    var = 1 / (1 + |w_d|^2 / s^2), mean = var * W^T x / s^2. ``mean_scale``/``var_scale`` make q worse."""

    def __init__(self, data_size=5, latent_size=3, noise=0.5, mean_scale=1.0, var_scale=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(data_size, latent_size, generator=g, dtype=torch.float64))
        self.weight = basis * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:latent_size]  # [D, d]
        self.noise, self.mean_scale, self.var_scale = noise, mean_scale, var_scale

    def encode(self, x, attention_mask=None):
        var = 1 / (1 + (self.weight**2).sum(0) / self.noise**2)
        mean = var * (x @ self.weight) / self.noise**2
        return self.mean_scale * mean, torch.log(self.var_scale * var).expand_as(mean)

    def log_likelihood(self, x, z, attention_mask=None):
        return Normal(z @ self.weight.T, self.noise).log_prob(x).sum(-1)

    def exact_nll(self, x):
        cov = self.weight @ self.weight.T + self.noise**2 * torch.eye(self.weight.shape[0], dtype=torch.float64)
        return -MultivariateNormal(torch.zeros(self.weight.shape[0], dtype=torch.float64), cov).log_prob(x)

    def sample(self, num, generator):
        z = torch.randn(num, self.weight.shape[1], generator=generator, dtype=torch.float64)
        return z @ self.weight.T + self.noise * torch.randn(num, self.weight.shape[0], generator=generator,
                                                            dtype=torch.float64)


def test_importance_weighted_nll_exact_with_true_posterior():
    model = LinearGaussianStub()
    x = model.sample(8, torch.Generator().manual_seed(0))  # float "input_ids": the metric only passes them through
    for num_samples in (1, 2, 37):
        got = metrics.importance_weighted_nll(model, x, num_samples=num_samples)
        torch.testing.assert_close(got, model.exact_nll(x), rtol=0, atol=1e-9)


def test_importance_weighted_nll_converges_with_poor_posterior():
    model = LinearGaussianStub(mean_scale=0.7, var_scale=2.0)
    x = model.sample(256, torch.Generator().manual_seed(100))  # seed differs from the metric's: no shared noise
    exact = model.exact_nll(x)
    gaps = []
    for num_samples in (1, 10, 1000):
        got = metrics.importance_weighted_nll(model, x, num_samples=num_samples, max_rows=8192,
                                              generator=torch.Generator().manual_seed(2))
        gaps.append(float((got - exact).mean()))
    # An upper bound in expectation (bias ~ KL(q || p(z|x)) at K = 1) that tightens as K grows.
    assert gaps[0] > 1.0 and gaps[0] > gaps[1] > 0.05
    assert abs(gaps[2]) < 0.03


def test_elbo_nll_matches_definition_and_bounds_iw_nll():
    model = LinearGaussianStub(mean_scale=0.5, var_scale=3.0)
    x = model.sample(64, torch.Generator().manual_seed(3))
    elbo = metrics.elbo_nll(model, x, generator=torch.Generator().manual_seed(4))
    # Independent recomputation with the same noise (one standard normal draw of shape [B, d]).
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(4),
                                                     dtype=torch.float64)
    kl = torch.distributions.kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(elbo, -model.log_likelihood(x, z) + kl)
    iw = metrics.importance_weighted_nll(model, x, num_samples=200, max_rows=4096)
    assert elbo.mean() > iw.mean() > model.exact_nll(x).mean() - 0.05


def test_melbo_nll_is_reconstruction_plus_log_n():
    model = CategoricalStub(ignore_z=True)
    input_ids, attention_mask = _batch()
    got = metrics.melbo_nll(model, input_ids, attention_mask, num_sentences=3370)
    expected = [-model.log_likelihood_loop(ids, mask, []) + math.log(3370) for ids, mask in
                zip(input_ids.tolist(), attention_mask.tolist(), strict=True)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)
    # With a z-dependent decoder: the same single z as an independent draw with the same generator.
    model = LinearGaussianStub()
    x = model.sample(4, torch.Generator().manual_seed(5))
    got = metrics.melbo_nll(model, x, num_sentences=10, generator=torch.Generator().manual_seed(6))
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(6),
                                                     dtype=torch.float64)
    torch.testing.assert_close(got, -model.log_likelihood(x, z) + math.log(10))


def test_num_targets_and_perplexity():
    input_ids, attention_mask = _batch()
    # 5, 4 and 3 real tokens: BOS is never predicted.
    assert metrics.num_targets(input_ids, attention_mask).tolist() == [4, 3, 2]
    assert metrics.num_targets(input_ids, pad_token_id=0).tolist() == [4, 3, 2]
    eos_as_pad = torch.tensor([[1, 5, 2, 2, 2]])  # pad == EOS: the mask is what defines padding
    assert metrics.num_targets(eos_as_pad, torch.tensor([[1, 1, 1, 0, 0]]), pad_token_id=2).tolist() == [2]
    nll = torch.tensor([10.0, 7.5, 3.25])
    assert metrics.perplexity(nll.sum(), 9) == pytest.approx(math.exp(20.75 / 9))
    assert metrics.perplexity(0.0, 3) == 1.0
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


# ---------------------------------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------------------------------

PAIRS = [
    ("the cat sat on the mat today", "the cat is on the mat today"),
    ("the the the the", "the cat"),
    ("a b c", "a b c d e"),
    ("", "x y"),
    ("x y z", "a b"),
    ("a dog barked", "a dog barked loudly"),
    ("one two three four five six", "one two three four five six"),
]


def _bleu1_loop(hypothesis, reference):
    """NLTK-style sentence BLEU-1: clipped unigram precision x brevity penalty (0 for an empty hypothesis)."""
    hyp, ref = hypothesis.split(), reference.split()
    if not hyp:
        return 0.0
    ref_counts = Counter(ref)
    clipped = sum(min(count, ref_counts[word]) for word, count in Counter(hyp).items())
    brevity = 1.0 if len(hyp) >= len(ref) else math.exp(1 - len(ref) / len(hyp))
    return clipped / len(hyp) * brevity


def test_corpus_bleu_is_sacrebleu_with_tokenize_none():
    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score
    assert metrics.corpus_bleu(hyps, refs) == pytest.approx(expected, abs=1e-12)
    assert 0 < metrics.corpus_bleu(hyps, refs) < 100
    # tokenize='none' splits on whitespace only: "mat." is one token and does not match "mat".
    assert metrics.corpus_bleu(["the cat sat on the mat."], ["the cat sat on the mat ."]) == pytest.approx(
        sacrebleu.corpus_bleu(["the cat sat on the mat."], [["the cat sat on the mat ."]], tokenize="none").score
    )
    sentences = ["a b c d e", "the quick brown fox jumps"]
    assert metrics.corpus_bleu(sentences, sentences) == pytest.approx(100.0)
    assert metrics.corpus_bleu(["", ""], ["a b c d", "e f g h"]) == 0.0
    with pytest.raises(ValueError):
        metrics.corpus_bleu(["a"], ["a", "b"])


def test_bleu_signature():
    signature = metrics.bleu_signature()
    assert "tok:none" in signature and "nrefs:1" in signature and f"version:{sacrebleu.__version__}" in signature


def test_mean_sentence_bleu1_matches_closed_form_and_loop():
    # Hypothesis 3 tokens, all matching, reference 4 tokens: precision 1, brevity penalty exp(1 - 4/3).
    assert metrics.mean_sentence_bleu1(["a dog barked"], ["a dog barked loudly"]) == pytest.approx(
        math.exp(1 - 4 / 3), abs=1e-12
    )
    # the same number worked out by hand: exp(-1/3) = 0.71653...
    assert metrics.mean_sentence_bleu1(["a dog barked"], ["a dog barked loudly"]) == pytest.approx(0.71653, abs=1e-5)
    for hypothesis, reference in PAIRS:
        assert metrics.mean_sentence_bleu1([hypothesis], [reference]) == pytest.approx(
            _bleu1_loop(hypothesis, reference), abs=1e-12
        )
    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    expected = sum(_bleu1_loop(h, r) for h, r in PAIRS) / len(PAIRS)
    assert metrics.mean_sentence_bleu1(hyps, refs) == pytest.approx(expected, abs=1e-12)
    assert metrics.mean_sentence_bleu1(["", ""], ["", "a"]) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# The real model
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("proposal_width", [None, 0.5])  # None: the default call, the proposal q itself
@pytest.mark.parametrize("architecture", ["gru", "transformer"])
def test_importance_weighted_nll_on_sentence_mim_model_matches_per_sample_loop(tiny_config, batch, architecture,
                                                                               proposal_width):
    from sentmim import SentenceMIMModel

    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(vocab_size=20, architecture=architecture)).eval()
    input_ids, attention_mask = batch
    input_ids = input_ids % 20
    num_samples = 12
    widening = {} if proposal_width is None else {"proposal_width": proposal_width}
    got = metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=num_samples, chunk_size=5,
                                          generator=torch.Generator().manual_seed(7), **widening)
    # One decoder call per sample with the B original rows; densities in float64 with torch.distributions, of the
    # proposal N(mean, exp(logvar) + s^2).
    with torch.no_grad():
        mean, logvar = model.encode(input_ids, attention_mask)
        eps = torch.randn(num_samples, *mean.shape, generator=torch.Generator().manual_seed(7))
        proposal_std = torch.sqrt(logvar.double().exp() + (proposal_width or 0.0) ** 2)
        posterior = Normal(mean.double(), proposal_std)
        log_w = []
        for k in range(num_samples):
            z = mean + proposal_std.float() * eps[k]
            log_px_z = model.log_likelihood(input_ids, z, attention_mask).double()
            z64 = z.double()
            log_w.append(log_px_z + Normal(0.0, 1.0).log_prob(z64).sum(-1) - posterior.log_prob(z64).sum(-1))
    log_w = torch.stack(log_w, dim=1).tolist()
    expected = torch.tensor([-(_logsumexp(row) - math.log(num_samples)) for row in log_w], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (3,)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert not model.training
