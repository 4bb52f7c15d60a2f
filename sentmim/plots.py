"""Plots of a sentence latent space and of training runs (PNG files; needs `pip install 'sentmim[plots]'`).

    write_evaluation_plots(model, batches, "plots/")          # the three evaluation plots below, for a split
    plot_latent_projection(means, path="pca.png", labels=lengths)   # 2-D PCA (or t-SNE) of posterior means
    plot_kl_per_dimension(means, logvars, "kl.png")           # which latent dimensions carry information
    plot_log_likelihood_histogram(log_likelihoods, "ll.png")
    plot_training_curves({"mim": "runs/mim/log.jsonl", "vae": "runs/vae/log.jsonl"}, "curves.png")

matplotlib is imported inside the functions, so `import sentmim` works without it. Figures are drawn through
matplotlib's object API (no pyplot: savefig renders a PNG with Agg), so nothing changes the backend of the caller's
session.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import gaussian
from .evaluation import encode_split
from .files import read_jsonl

# Titles for the usual metrics of a training log (logged as key, train_key or val_key); others are shown by name.
CURVE_LABELS = {
    "loss": "training objective per sentence (nats)",
    "kl": "KL(q(z|x) || N(0, I)) per sentence (nats)",
    "mi_whole_split": "MI I_q(x; z), whole split (He et al., nats)",
    "mi_batch": "MI I_q(x; z), per batch (He et al., nats)",
    "active_units": "active units (Var_x E[z|x] >= 0.01)",
    "iw_nll": "IW-NLL, importance-weighted -log p(x) (nats)",
    "elbo_nll": "ELBO-NLL, -log p(x|z) + KL (nats)",
    "recon_nll": "reconstruction -log p(x|z) per sentence (nats)",
    "recon_ppl": "reconstruction perplexity exp(sum -log p(x|z) / targets)",
    "kl_weight": "VAE KL weight beta",
}
DEFAULT_CURVE_KEYS = ("loss", "recon_nll", "kl", "mi_whole_split", "active_units", "kl_weight")


def new_figure(rows: int = 1, columns: int = 1, size: tuple[float, float] = (6.4, 4.8), sharex: bool = False):
    """(Figure, its [rows, columns] array of axes)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("sentmim plots need matplotlib: pip install 'sentmim[plots]'") from error
    figure = Figure(figsize=size)
    return figure, figure.subplots(rows, columns, squeeze=False, sharex=sharex)


def save_figure(figure, path) -> Path:
    """Lay the figure out and write it as a PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Latent space
# ---------------------------------------------------------------------------------------------------------------------


def pca_2d(points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coordinates [N, 2], components [2, d], explained variance ratio [2]) of the top-2 principal components.

    Computed with a thin SVD of the centred points; each component's sign is fixed (largest entry positive) so the
    plot does not flip between runs. A 1-D latent gets a zero second coordinate.
    """
    x = torch.as_tensor(_array(points))
    centred = x - x.mean(0)
    _, singular_values, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:2]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * torch.where(signs == 0, 1.0, signs)
    variance = singular_values.pow(2)
    explained = variance[:2] / variance.sum().clamp(min=1e-300)
    coordinates = centred @ components.T
    padding = (0, 2 - components.shape[0])  # zeros for the missing second component of a 1-D latent
    return F.pad(coordinates, padding).numpy(), components.numpy(), F.pad(explained, padding).numpy()


def _tsne_2d(points: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise ImportError("method='tsne' needs scikit-learn: pip install 'sentmim[plots]'") from error
    perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))  # t-SNE needs perplexity < number of points
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def plot_latent_projection(
    means, labels=None, path=None, method: str = "pca", max_points: int = 5000, seed: int = 0,
    label_name: str = "label",
) -> np.ndarray:
    """Scatter the posterior means E[z|x] [N, d] of a split in 2-D, by "pca" (top-2 principal components) or "tsne"
    (scikit-learn), into the PNG file `path`; returns the plotted coordinates [n, 2].

    Args:
        labels: optional, one per sentence: numbers with many values (e.g. sentence length) are coloured on a
            colour bar (titled label_name); otherwise each distinct label gets a colour and a legend entry.
        max_points: a seeded random subset of this many points is shown (t-SNE is slow on a whole split).
    """
    if path is None:
        raise ValueError("plot_latent_projection: pass path='file.png'")
    if method not in ("pca", "tsne"):
        raise ValueError(f"method={method!r}: must be 'pca' or 'tsne'")
    points = _array(means)
    labels = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    total = len(points)
    if total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        points, labels = points[keep], None if labels is None else labels[keep]
    if method == "pca":
        coordinates, _, explained = pca_2d(points)
        axis_names = [f"PC{i + 1} ({100 * explained[i]:.1f}% of variance)" for i in range(2)]
    else:
        coordinates = _tsne_2d(points, seed)
        axis_names = ["t-SNE 1", "t-SNE 2"]

    figure, axes = new_figure()
    ax = axes[0, 0]
    if labels is None:
        ax.scatter(coordinates[:, 0], coordinates[:, 1], s=6, alpha=0.6)
    elif np.issubdtype(labels.dtype, np.number) and len(np.unique(labels)) > 10:
        scatter = ax.scatter(coordinates[:, 0], coordinates[:, 1], c=labels, s=6, alpha=0.7, cmap="viridis")
        figure.colorbar(scatter, ax=ax, label=label_name)
    else:
        for value in np.unique(labels):
            chosen = labels == value
            ax.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=6, alpha=0.7, label=str(value))
        ax.legend(title=label_name, markerscale=3, fontsize="small")
    shown = f"{len(points)} of {total} sentences" if len(points) < total else f"{total} sentences"
    ax.set(title=f"Posterior means E[z|x], {method.upper()} projection ({shown})", xlabel=axis_names[0],
           ylabel=axis_names[1])
    save_figure(figure, path)
    return coordinates


def plot_kl_per_dimension(mean, logvar, path) -> dict[str, np.ndarray]:
    """Per latent dimension, sorted by KL: the average KL(q(z_d|x) || N(0, 1)) over sentences (top), and the average
    posterior variance E_x[exp(logvar_d)] with the variance of the posterior mean across sentences, Var_x E[z_d|x],
    whose 0.01 line defines active units (bottom). Returns those three arrays in dimension order (unsorted).
    """
    mean, logvar = torch.as_tensor(_array(mean)), torch.as_tensor(_array(logvar))
    kl = gaussian.kl_per_dimension(mean, logvar).mean(0)
    posterior_variance = logvar.exp().mean(0)
    mean_variance = mean.var(0, unbiased=True) if len(mean) > 1 else torch.zeros_like(kl)
    order = torch.argsort(kl, descending=True)
    ranks = np.arange(len(order))

    figure, axes = new_figure(2, 1, size=(7.0, 6.4))
    top, bottom = axes[0, 0], axes[1, 0]
    top.bar(ranks, kl[order].numpy())
    top.set(title=f"KL(q(z_d|x) || N(0, 1)) per dimension, mean over sentences\n(sum over dimensions {kl.sum():.3f} "
            "nats)", ylabel="KL (nats)")
    # A log axis drops zeros (a collapsed dimension has Var_x E[z_d|x] = 0): draw them at 1e-12 instead.
    floor = 1e-12
    bottom.plot(ranks, posterior_variance[order].clamp(min=floor).numpy(), "o-", markersize=3,
                label="E_x[posterior variance]")
    bottom.plot(ranks, mean_variance[order].clamp(min=floor).numpy(), "s-", markersize=3,
                label="Var_x E[z_d|x] (active units)")
    bottom.axhline(0.01, color="grey", linestyle="--", label="active-unit threshold 0.01")
    bottom.set(yscale="log", xlabel="latent dimension, sorted by KL", ylabel="variance")
    bottom.legend(fontsize="small")
    save_figure(figure, path)
    return {"kl": kl.numpy(), "posterior_variance": posterior_variance.numpy(), "mean_variance": mean_variance.numpy()}


def plot_log_likelihood_histogram(
    log_likelihoods, path, label: str = "log p(x|z = posterior mean) per sentence (nats)", bins: int = 50
) -> Path:
    """Histogram of per-sentence log-likelihoods; `label` says which one (the default is the reconstruction term)."""
    values = _array(log_likelihoods)
    figure, axes = new_figure()
    ax = axes[0, 0]
    ax.hist(values, bins=bins)
    ax.axvline(values.mean(), color="black", linestyle="--", label=f"mean {values.mean():.2f}")
    ax.set(title=f"Per-sentence log-likelihood, {len(values)} sentences", xlabel=label, ylabel="sentences")
    ax.legend()
    return save_figure(figure, path)


# ---------------------------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------------------------


def is_finite_number(value) -> bool:
    """A plottable log value: a finite int or float (not a bool, None or a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_curve(records: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the records of a log that hold a finite number under `key`."""
    points = [(record["step"], record[key]) for record in records if is_finite_number(record.get(key))]
    return [step for step, _ in points], [value for _, value in points]


def _curves(run: list[dict], key: str) -> dict[str, tuple]:
    """{"train" / "val" / "": (steps, values)} for a metric logged as key, train_key or val_key."""
    curves = {}
    for prefix in ("", "train_", "val_"):
        steps, values = metric_curve(run, prefix + key)
        if steps:
            curves[prefix.rstrip("_")] = (steps, values)
    return curves


def plot_training_curves(jsonl_path, path, keys=DEFAULT_CURVE_KEYS) -> list[str]:
    """One panel per metric against "step", from JSONL logs of dicts; returns the keys plotted.

    A metric `key` is read from records as `key`, `train_key` and `val_key` (the training loop's log.jsonl writes
    train_kl at logging steps and val_kl at evaluations); each found series is one line of the panel.

    Args:
        jsonl_path: one log, or a dict {run label: log path} to compare runs (e.g. MIM against VAE) on shared axes.
        keys: metrics to plot; keys that no run logs are left out (a ValueError lists the available keys when
            none is found).
    """
    runs = jsonl_path if isinstance(jsonl_path, dict) else {Path(jsonl_path).stem: jsonl_path}
    records = {label: [r for r in read_jsonl(file) if is_finite_number(r.get("step"))] for label, file in runs.items()}
    curves = {key: {label: _curves(run, key) for label, run in records.items()} for key in keys}
    plotted = [key for key in keys if any(curves[key].values())]
    if not plotted:
        available = sorted({k for rs in records.values() for r in rs for k, v in r.items() if is_finite_number(v)})
        raise ValueError(f"none of the keys {list(keys)} is logged with a 'step'; numeric keys: {available}")

    figure, axes = new_figure(len(plotted), 1, size=(7.0, 2.6 * len(plotted)), sharex=True)
    for ax, key in zip(axes[:, 0], plotted, strict=True):
        for index, (label, run_curves) in enumerate(curves[key].items()):
            for part, (steps, values) in run_curves.items():
                # One colour per run; validation points dashed with markers, training curves solid.
                style = dict(linestyle="--", marker="o", markersize=3) if part == "val" else {}
                ax.plot(steps, values, color=f"C{index}", label=f"{label} {part}".strip(), **style)
        ax.set(title=CURVE_LABELS.get(key, key), ylabel=key)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("training step")
    save_figure(figure, path)
    return plotted


# ---------------------------------------------------------------------------------------------------------------------
# All evaluation plots of a split
# ---------------------------------------------------------------------------------------------------------------------


def write_evaluation_plots(model, batches, out_dir: str | os.PathLike) -> dict[str, Path]:
    """latent_projection.png (posterior means coloured by sentence length), kl_per_dimension.png and
    log_likelihood_histogram.png (log p(x|z = posterior mean)) for a split; returns their paths."""
    out_dir = Path(out_dir)
    split = encode_split(model, batches)
    paths = {name: out_dir / f"{name}.png" for name in ("latent_projection", "kl_per_dimension",
                                                         "log_likelihood_histogram")}
    plot_latent_projection(split["mean"], labels=split["num_targets"].numpy(), path=paths["latent_projection"],
                           label_name="sentence length (predicted targets)")
    plot_kl_per_dimension(split["mean"], split["logvar"], paths["kl_per_dimension"])
    plot_log_likelihood_histogram(split["log_likelihood_mean_z"], paths["log_likelihood_histogram"])
    return paths
