"""sentmim.plots: every function writes a PNG, and the numbers behind the plots are right."""

import json

import numpy as np
import pytest
import torch

from sentmim import SentenceMIMModel, metrics
from sentmim.plots import (
    pca_2d,
    plot_kl_per_dimension,
    plot_latent_projection,
    plot_log_likelihood_histogram,
    plot_training_curves,
    write_evaluation_plots,
)

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path


def plane_points(rng, count=60):
    """Points on a known 2-D plane of R^5 (orthonormal basis, an offset), with very different spreads."""
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))
    coefficients = rng.normal(size=(count, 2)) * np.array([3.0, 1.0])
    return coefficients @ basis.T + rng.normal(size=5), basis.T


def test_pca_recovers_a_plane_in_five_dimensions():
    points, plane = plane_points(np.random.default_rng(0))
    coordinates, components, explained = pca_2d(points)

    # Same plane as numpy's SVD (compare projectors: the basis itself is only defined up to sign).
    _, _, vh = np.linalg.svd(points - points.mean(0), full_matrices=False)
    np.testing.assert_allclose(components.T @ components, vh[:2].T @ vh[:2], atol=1e-10)
    np.testing.assert_allclose(components.T @ components, plane.T @ plane, atol=1e-10)
    # The two coordinates lose nothing: the points are exactly on the plane.
    np.testing.assert_allclose(coordinates @ components + points.mean(0), points, atol=1e-10)
    np.testing.assert_allclose(np.abs(coordinates), np.abs((points - points.mean(0)) @ vh[:2].T), atol=1e-10)
    assert explained.sum() == pytest.approx(1.0) and explained[0] > explained[1]


def test_latent_projection_writes_png_with_and_without_labels(tmp_path):
    points, _ = plane_points(np.random.default_rng(1))
    coordinates = plot_latent_projection(torch.tensor(points), path=tmp_path / "plain.png")
    assert coordinates.shape == (60, 2)
    assert_png(tmp_path / "plain.png")
    plot_latent_projection(points, labels=np.arange(60), path=tmp_path / "numeric.png", label_name="length")
    plot_latent_projection(points, labels=["a", "b", "c"] * 20, path=tmp_path / "classes.png")
    assert_png(tmp_path / "numeric.png")
    assert_png(tmp_path / "classes.png")
    shown = plot_latent_projection(points, path=tmp_path / "subset.png", max_points=10)
    assert shown.shape == (10, 2)
    with pytest.raises(ValueError, match="path"):
        plot_latent_projection(points)


def test_latent_projection_tsne(tmp_path):
    pytest.importorskip("sklearn")
    points, _ = plane_points(np.random.default_rng(2), count=25)
    coordinates = plot_latent_projection(points, path=tmp_path / "tsne.png", method="tsne")
    assert coordinates.shape == (25, 2) and np.isfinite(coordinates).all()
    assert_png(tmp_path / "tsne.png")


def test_kl_per_dimension_numbers_and_png(tmp_path):
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(40, 6, generator=generator) * torch.tensor([2.0, 1.0, 0.5, 0.0, 0.0, 0.01])
    logvar = torch.randn(40, 6, generator=generator) * 0.1 - 1
    numbers = plot_kl_per_dimension(mean, logvar, tmp_path / "kl.png")
    assert_png(tmp_path / "kl.png")
    # Per-dimension KLs sum to the mean closed-form KL per sentence.
    assert numbers["kl"].sum() == pytest.approx(metrics.kl_divergence(mean, logvar).mean().item(), rel=1e-6)
    np.testing.assert_allclose(numbers["posterior_variance"], logvar.exp().mean(0).numpy(), rtol=1e-6)
    assert int((numbers["mean_variance"] >= 0.01).sum()) == metrics.active_units(mean) == 3


def test_log_likelihood_histogram_png(tmp_path):
    path = plot_log_likelihood_histogram(-torch.rand(100) * 50, tmp_path / "ll.png")
    assert_png(path)


def test_training_curves_compare_runs_and_skip_missing_keys(tmp_path):
    logs = {}
    for name, scale in (("mim", 1.0), ("vae", 0.1)):
        lines = [json.dumps({"step": step, "train_kl": scale * step, "loss": 10 - step}) for step in range(0, 50, 10)]
        lines.append(json.dumps({"step": 50, "val_kl": 1.0, "val_mi_whole_split": 0.5}))
        lines.append('{"step": 60, "kl":')  # a half-written last line
        logs[name] = tmp_path / f"{name}.jsonl"
        logs[name].write_text("\n".join(lines) + "\n")
    plotted = plot_training_curves(logs, tmp_path / "curves.png", keys=("kl", "mi_batch", "loss", "mi_whole_split"))
    assert plotted == ["kl", "loss", "mi_whole_split"]
    assert_png(tmp_path / "curves.png")
    assert plot_training_curves(logs["mim"], tmp_path / "one.png") == ["loss", "kl", "mi_whole_split"]
    with pytest.raises(ValueError, match="numeric keys"):
        plot_training_curves(logs["mim"], tmp_path / "none.png", keys=("bleu",))


def test_write_evaluation_plots(tmp_path, tiny_config, batch):
    input_ids, attention_mask = batch
    model = SentenceMIMModel(tiny_config())
    paths = write_evaluation_plots(model, [{"input_ids": input_ids, "attention_mask": attention_mask}], tmp_path)
    assert sorted(paths) == ["kl_per_dimension", "latent_projection", "log_likelihood_histogram"]
    for path in paths.values():
        assert_png(path)
