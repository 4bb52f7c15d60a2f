"""The aggregate posterior: the streaming fit against numpy's mean / cov of the same codes, sampling, and the
safetensors file stored beside model.safetensors."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sentmim.aggregate_posterior import (
    AGGREGATE_POSTERIOR_FILE,
    AggregatePosterior,
    fit_aggregate_posterior,
    fit_from_posteriors,
)


def _codes(num=61, dim=4, offset=0.0, scale=1.0, seed=0):
    """Correlated posterior means and per-sentence logvars, as float32 (what an encoder returns)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    means = offset + scale * torch.randn(num, dim, generator=g, dtype=torch.float64) @ mixing
    logvars = torch.rand(num, dim, generator=g, dtype=torch.float64) * 4 - 3
    return means, logvars


def _batches(means, logvars, sizes):
    start, batches = 0, []
    for size in sizes:
        batches.append((means[start : start + size], logvars[start : start + size]))
        start += size
    assert start == means.shape[0]
    return batches


def test_fit_matches_numpy_mean_and_cov_over_uneven_batches():
    means, logvars = _codes()
    fitted = fit_from_posteriors(_batches(means.float(), logvars.float(), [1, 7, 0, 13, 40]))
    codes, variances = means.float().double().numpy(), np.exp(logvars.float().double().numpy())
    assert fitted.num_sentences == 61 and fitted.latent_size == 4
    np.testing.assert_allclose(fitted.mean.numpy(), codes.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fitted.covariance_of_means.numpy(), np.cov(codes, rowvar=False), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(fitted.mean_posterior_variance.numpy(), variances.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(fitted.covariance.numpy(), np.cov(codes, rowvar=False) + np.diag(variances.mean(0)),
                               rtol=1e-10, atol=1e-12)
    assert fitted.mean.dtype == torch.float64
    # An AE's untrained posterior variance is left out: only the spread of the codes.
    without = fit_from_posteriors(_batches(means, logvars, [30, 31]), include_posterior_variance=False)
    assert torch.equal(without.mean_posterior_variance, torch.zeros(4, dtype=torch.float64))
    np.testing.assert_allclose(without.covariance.numpy(), np.cov(means.numpy(), rowvar=False), rtol=1e-10)


def test_fit_keeps_precision_for_codes_far_from_the_origin():
    # Spread 1e-3 around 1e4: a plain sum of squares in float64 would keep about 2 digits of the covariance.
    means, logvars = _codes(num=500, offset=1e4, scale=1e-3, seed=1)
    fitted = fit_from_posteriors(_batches(means, logvars, [100] * 5))
    np.testing.assert_allclose(fitted.covariance_of_means.numpy(), np.cov(means.numpy(), rowvar=False), rtol=1e-6,
                               atol=1e-14)


def test_fit_needs_two_sentences():
    means, logvars = _codes(num=1)
    with pytest.raises(ValueError, match="at least 2 sentences, got 1"):
        fit_from_posteriors([(means, logvars)])
    with pytest.raises(ValueError, match="got 0"):
        fit_from_posteriors([])


def test_sample_is_mean_plus_a_square_root_of_the_covariance_times_noise():
    fitted = fit_from_posteriors([_codes(num=200, seed=2)])
    z = fitted.sample(5, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    offsets = torch.linalg.solve(torch.linalg.cholesky(fitted.covariance), (z - fitted.mean).T).T
    # z - mean = A eps with A A^T = covariance: whitening by the Cholesky factor L keeps the noise's norm.
    torch.testing.assert_close(offsets.norm(dim=1), eps.norm(dim=1), rtol=1e-9, atol=1e-9)
    many = fitted.sample(100_000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(many.mean(0), fitted.mean, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(many.T), fitted.covariance, rtol=0.03, atol=0.02)
    cooled = fitted.sample(5, generator=torch.Generator().manual_seed(3), latent_temperature=0.5)
    torch.testing.assert_close(cooled - fitted.mean, 0.5 * (z - fitted.mean))
    assert torch.equal(fitted.sample(2, latent_temperature=0.0), fitted.mean.expand(2, 4))
    with pytest.raises(ValueError, match="n=0"):
        fitted.sample(0)


def test_sample_from_a_singular_covariance_stays_in_the_codes_subspace():
    # AE codes on a 2-D plane of a 4-D latent space, no posterior variance: the covariance has rank 2.
    g = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(4, 2, generator=g, dtype=torch.float64))[0]
    means = 1.0 + torch.randn(300, 2, generator=g, dtype=torch.float64) @ basis.T
    fitted = fit_from_posteriors([(means, torch.zeros_like(means))], include_posterior_variance=False)
    z = fitted.sample(50, generator=torch.Generator().manual_seed(6))
    assert torch.isfinite(z).all()
    residual = (z - fitted.mean) - (z - fitted.mean) @ basis @ basis.T
    assert residual.abs().max() < 1e-6


def test_save_and_load_round_trip(tmp_path):
    fitted = fit_from_posteriors([_codes(num=30, seed=7)])
    path = fitted.save(tmp_path)
    assert path == tmp_path / AGGREGATE_POSTERIOR_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [AGGREGATE_POSTERIOR_FILE]  # no temporary left behind
    loaded = AggregatePosterior.load(tmp_path, latent_size=4)
    for name in ("mean", "covariance_of_means", "mean_posterior_variance"):
        assert torch.equal(getattr(loaded, name), getattr(fitted, name))
    assert loaded.num_sentences == 30
    generator_state = torch.Generator().manual_seed(8)
    assert torch.equal(loaded.sample(3, generator=generator_state),
                       fitted.sample(3, generator=torch.Generator().manual_seed(8)))
    # Saving again replaces the file (a refit after more training).
    refitted = fit_from_posteriors([_codes(num=12, seed=9)])
    refitted.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [AGGREGATE_POSTERIOR_FILE]
    assert torch.equal(AggregatePosterior.load(tmp_path).covariance, refitted.covariance)


def test_load_says_what_is_wrong_with_the_file(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=f"{missing / AGGREGATE_POSTERIOR_FILE}: no aggregate posterior"):
        AggregatePosterior.load(missing)
    fit_from_posteriors([_codes(num=10)]).save(tmp_path)
    with pytest.raises(ValueError, match="fitted for latent size 4, the model has 8"):
        AggregatePosterior.load(tmp_path, latent_size=8)
    path = tmp_path / AGGREGATE_POSTERIOR_FILE
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        AggregatePosterior.load(tmp_path)
    save_file({"mean": torch.zeros(4, dtype=torch.float64)}, path, metadata={"num_sentences": "3"})
    with pytest.raises(ValueError, match="missing tensor"):
        AggregatePosterior.load(tmp_path)
    save_file({"mean": torch.zeros(4), "covariance_of_means": torch.eye(3), "mean_posterior_variance": torch.ones(4)},
              path, metadata={"num_sentences": "3"})
    with pytest.raises(ValueError, match="inconsistent shapes"):
        AggregatePosterior.load(tmp_path)


def test_fit_from_a_model_encodes_in_eval_mode_and_is_stored_beside_it(tiny_config, tmp_path):
    from sentmim import SentenceMIMModel

    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(dropout=0.5)).train()
    g = torch.Generator().manual_seed(1)
    batches = []
    for size in (3, 5, 2):
        ids = torch.randint(4, 23, (size, 6), generator=g)
        ids[:, 0], ids[:, -1] = 2, 3
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    fitted = fit_aggregate_posterior(model, batches)
    assert model.training  # restored
    with torch.no_grad():
        model.eval()
        encoded = [model.encode(b["input_ids"], b["attention_mask"]) for b in batches]
    means = torch.cat([m for m, _ in encoded]).double().numpy()
    variances = torch.cat([lv for _, lv in encoded]).double().exp().numpy()
    np.testing.assert_allclose(fitted.covariance.numpy(), np.cov(means, rowvar=False) + np.diag(variances.mean(0)),
                               rtol=1e-9, atol=1e-12)
    # An AE's posterior variance is never trained: left out by default.
    ae = SentenceMIMModel(tiny_config(objective="ae"))
    ae_fit = fit_aggregate_posterior(ae, batches)
    assert torch.equal(ae_fit.mean_posterior_variance, torch.zeros(4, dtype=torch.float64))
    # Beside the model: the folder still loads as a model, and the aggregate posterior loads back.
    model.save_pretrained(tmp_path)
    fitted.save(tmp_path)
    SentenceMIMModel.from_pretrained(tmp_path)
    assert AggregatePosterior.load(tmp_path, latent_size=model.config.latent_size).num_sentences == 10
