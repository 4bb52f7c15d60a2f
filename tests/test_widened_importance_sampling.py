"""The IW bound with a widened proposal r(z|x) = N(mean, exp(logvar) + s^2) (key iw_nll_wide) and the choice of s.

The reference is the exact marginal likelihood of a toy model with a 1-D latent: a tiny vocabulary, a decoder
p(x_t|z) = softmax(z w + b) for every target token, and log p(x) = log int N(z; 0, 1) p(x|z) dz by a fine grid in
float64. Its encoder is near-deterministic (sigma = 0.0067, MIM's logvar floor) and centred on the exact posterior
mean, as a MIM encoder would be: q(z|x) is then a near-delta while p(z|x) has a standard deviation of ~0.4.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from sentmim import metrics

NEAR_DELTA_LOGVAR = 2 * math.log(0.0067)
GRID = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)


class OneDimensionalToy(nn.Module):
    """Latent z in R, vocabulary of 5 tokens; position 0 of a sentence is BOS (never predicted)."""

    def __init__(self, logvar=NEAR_DELTA_LOGVAR):
        super().__init__()
        self.weight = torch.tensor([1.5, -1.0, 0.4, -1.6, 0.9], dtype=torch.float64)
        self.bias = torch.tensor([0.0, 0.3, -0.2, 0.1, -0.4], dtype=torch.float64)
        self.logvar = logvar
        self.decoded_rows = 0

    def log_likelihood(self, input_ids, z, attention_mask=None):
        self.decoded_rows += input_ids.shape[0]
        log_probs = torch.log_softmax(z[:, :1] * self.weight + self.bias, dim=-1)  # [N, V]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return (log_probs.gather(1, input_ids[:, 1:]) * mask[:, 1:]).sum(-1)

    def log_joint_on_grid(self, tokens, grid=GRID):
        """[G] log p(x|z) + log N(z; 0, 1) at every grid point, for one sentence given as a list of target tokens."""
        log_probs = torch.log_softmax(grid[:, None] * self.weight + self.bias, dim=-1)  # [G, V]
        return log_probs[:, tokens].sum(-1) + Normal(0.0, 1.0).log_prob(grid)

    def exact_nll(self, input_ids, attention_mask, grid=GRID):
        """-log p(x) per sentence by the trapezoid rule (the integrand vanishes at the ends of the grid)."""
        step = float(grid[1] - grid[0])
        nll = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            log_joint = self.log_joint_on_grid([t for t, m in zip(ids[1:], mask[1:], strict=True) if m], grid)
            nll.append(-(torch.logsumexp(log_joint, 0) + math.log(step)).item())
        return torch.tensor(nll, dtype=torch.float64)

    def posterior_moments(self, tokens):
        """(mean, standard deviation) of p(z|x) on a coarse grid: for centring q, any value gives a valid bound."""
        grid = GRID[::100]
        posterior = torch.softmax(self.log_joint_on_grid(tokens, grid), 0)
        mean = float((posterior * grid).sum())
        return mean, math.sqrt(float((posterior * (grid - mean) ** 2).sum()))

    def encode(self, input_ids, attention_mask=None):
        """The posterior mean of each sentence, a fixed (near-delta) variance."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        means = {}  # sentences repeat many times in these tests
        for ids, row_mask in zip(input_ids.tolist(), mask.tolist(), strict=True):
            tokens = tuple(t for t, m in zip(ids[1:], row_mask[1:], strict=True) if m)
            if tokens not in means:
                means[tokens] = self.posterior_moments(list(tokens))[0]
        mean = torch.tensor([[means[tuple(t for t, m in zip(ids[1:], row_mask[1:], strict=True) if m)]]
                             for ids, row_mask in zip(input_ids.tolist(), mask.tolist(), strict=True)],
                            dtype=torch.float64)
        return mean, torch.full_like(mean, self.logvar)


def _sentences(rows):
    input_ids = torch.tensor([row + [0] * (7 - len(row)) for row in rows])
    lengths = torch.tensor([len(row) for row in rows])
    return input_ids, (torch.arange(7)[None] < lengths[:, None]).long()


SCORED = _sentences([[0, 0, 0, 3], [0, 1, 4, 2, 0, 3], [0, 3, 3, 3, 3, 3, 1], [0, 2, 4]])
HELDOUT = _sentences([[0, 4, 0, 1], [0, 3, 2, 2, 1], [0, 0, 0, 0, 4, 4]])


def test_grid_integral_is_converged():
    model = OneDimensionalToy()
    fine = model.exact_nll(*SCORED)
    coarse = model.exact_nll(*SCORED, grid=torch.linspace(-15.0, 15.0, 30_001, dtype=torch.float64))
    torch.testing.assert_close(fine, coarse, rtol=0, atol=1e-10)


def _replicated_bound(model, sentences, width, num_samples, copies=200, seed=0):
    """[copies, B] independent bound estimates per sentence (each copy of a sentence draws its own noise)."""
    input_ids, attention_mask = sentences
    batch = input_ids.shape[0]
    bound = metrics.importance_weighted_nll(
        model, input_ids.repeat(copies, 1), attention_mask.repeat(copies, 1), num_samples=num_samples,
        max_rows=1 << 16, generator=torch.Generator().manual_seed(seed), proposal_width=width,
    )
    return bound.view(copies, batch)


@pytest.mark.parametrize("width", [0.0, 0.1, 0.4, 1.5])
def test_widened_bound_is_an_upper_bound_within_monte_carlo_error(width):
    model = OneDimensionalToy()
    exact = model.exact_nll(*SCORED)
    for num_samples in (1, 10):
        bound = _replicated_bound(model, SCORED, width, num_samples)
        gap, standard_error = bound.mean(0) - exact, bound.std(0) / math.sqrt(bound.shape[0])
        assert (gap > -3 * standard_error - 1e-9).all(), (width, num_samples, gap, standard_error)


def test_widened_bound_is_much_tighter_than_the_near_delta_q():
    model = OneDimensionalToy()
    exact = model.exact_nll(*SCORED)
    q_gap = (_replicated_bound(model, SCORED, 0.0, 100, copies=20) - exact).mean(0)
    wide_gap = (_replicated_bound(model, SCORED, 0.4, 100, copies=20) - exact).mean(0)
    # A near-delta proposal misses the posterior's width: ~log(0.4 / 0.0067) ~ 4 nats per sentence.
    assert (q_gap > 2.5).all()
    assert (wide_gap.abs() < 0.05).all()


def test_widened_bound_converges_to_the_exact_likelihood_as_k_grows():
    model = OneDimensionalToy()
    exact = model.exact_nll(*SCORED)
    gaps = {k: (_replicated_bound(model, SCORED, 1.0, k, copies=40, seed=k) - exact).mean(0) for k in (1, 10, 2000)}
    assert (gaps[1] > 0.3).all() and (gaps[1] > gaps[10] + 0.2).all()  # s = 1.0 is too wide for one sample
    assert (gaps[2000].abs() < 0.015).all()


WEIGHT = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
POSTERIOR_VARIANCE = 1 / (1 + float((WEIGHT**2).sum()))


class LinearGaussian(nn.Module):
    """z ~ N(0, 1), x | z ~ N(z w, I): p(z|x) = N(v w.x, v), v = 1 / (1 + |w|^2); q has the exact mean and the
    variance shrink * v."""

    def __init__(self, shrink):
        super().__init__()
        self.shrink = shrink

    def encode(self, x, attention_mask=None):
        mean = POSTERIOR_VARIANCE * x @ WEIGHT
        return mean, torch.full_like(mean, math.log(self.shrink * POSTERIOR_VARIANCE))

    def log_likelihood(self, x, z, attention_mask=None):
        return Normal(z @ WEIGHT.T, 1.0).log_prob(x).sum(-1)

    @staticmethod
    def exact_nll(x):
        covariance = WEIGHT @ WEIGHT.T + torch.eye(3, dtype=torch.float64)
        return -torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), covariance).log_prob(x)


def test_widened_proposal_equal_to_the_true_posterior_is_exact_for_any_k():
    # With s^2 = (1 - shrink) v the widened proposal is p(z|x) itself: every importance weight equals p(x).
    shrink = 1e-4
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = LinearGaussian.exact_nll(x)
    width = math.sqrt((1 - shrink) * POSTERIOR_VARIANCE)
    for num_samples in (1, 5):
        got = metrics.importance_weighted_nll(LinearGaussian(shrink), x, num_samples=num_samples,
                                              proposal_width=width)
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-9)
    unwidened = metrics.importance_weighted_nll(LinearGaussian(shrink), x, num_samples=5,
                                                generator=torch.Generator().manual_seed(2))  # not the global RNG
    assert (unwidened - exact > 1.0).all()


def test_choose_proposal_width_uses_only_held_out_sentences_and_the_same_noise_for_every_width():
    model = OneDimensionalToy()
    heldout = [{"input_ids": HELDOUT[0][:2], "attention_mask": HELDOUT[1][:2]},
               {"input_ids": HELDOUT[0][2:], "attention_mask": HELDOUT[1][2:]}]
    widths = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
    best, table = metrics.choose_proposal_width(model, heldout, widths, num_samples=50, seed=7)
    assert model.decoded_rows == 3 * 50 * len(widths)  # the held-out sentences only, K draws per width
    # Independent recomputation: batch i uses a generator seeded with seed + i, for every width.
    for width in widths:
        total = sum(
            float(metrics.importance_weighted_nll(model, batch["input_ids"], batch["attention_mask"], 50,
                                                  generator=torch.Generator().manual_seed(7 + index),
                                                  proposal_width=width).sum())
            for index, batch in enumerate(heldout)
        )
        assert table[width] == pytest.approx(total / 3, abs=1e-12)
    assert best == min(widths, key=table.get)
    assert best >= 0.3  # about the posterior's own width (0.4 - 0.6) or wider, not the near-delta q
    assert table[0.0] - table[best] > 2.0


def test_choose_proposal_width_keeps_q_when_q_is_the_true_posterior():
    # q = p(z|x) exactly: width 0 gives -log p(x) with no noise; a widened r costs KL(r || p(z|x)) at K = 1
    # (0.04 nats for s = 0.3, 2.1 for s = 1).
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    best, table = metrics.choose_proposal_width(LinearGaussian(1.0), [{"input_ids": x}], (0.0, 0.3, 1.0),
                                                num_samples=1)
    assert best == 0.0
    assert table[0.0] == pytest.approx(float(LinearGaussian.exact_nll(x).mean()), abs=1e-9)
    assert table[1.0] > table[0.3] > table[0.0]


def test_choose_proposal_width_rejects_bad_input_before_decoding():
    model = OneDimensionalToy()
    heldout = [{"input_ids": HELDOUT[0], "attention_mask": HELDOUT[1]}]
    for widths in ((0.0, -0.1), (float("nan"),), (float("inf"),)):
        with pytest.raises(ValueError, match="proposal_width"):
            metrics.choose_proposal_width(model, heldout, widths)
    with pytest.raises(ValueError, match="at least one proposal width"):
        metrics.choose_proposal_width(model, heldout, ())
    with pytest.raises(ValueError, match="heldout_batches is empty"):
        metrics.choose_proposal_width(model, [], (0.0, 0.1))
    assert model.decoded_rows == 0


def test_width_zero_is_the_iw_nll_of_q_on_sentence_mim_model(tiny_config, batch):
    # The widened bound against an independent per-sample loop on the real model is in tests/test_metrics.py.
    from sentmim import SentenceMIMModel

    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(vocab_size=20)).eval()
    input_ids, attention_mask = batch[0] % 20, batch[1]

    def bound(**widening):
        return metrics.importance_weighted_nll(model, input_ids, attention_mask, num_samples=9, chunk_size=4,
                                               generator=torch.Generator().manual_seed(3), **widening)

    assert torch.equal(bound(proposal_width=0.0), bound())
    assert not torch.allclose(bound(proposal_width=0.5), bound())
