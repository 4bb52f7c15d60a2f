"""The aggregate posterior q(z) = E_x q(z|x) as a Gaussian fitted to the training codes: fit, sample, save, load.

    aggregate = fit_aggregate_posterior(model, train_batches)    # one pass over the split, float64 streaming sums
    aggregate.save(model_dir)                                    # model_dir/aggregate_posterior.safetensors
    aggregate = AggregatePosterior.load(model_dir)
    z = aggregate.sample(10, generator=generator)                # [10, latent] float64; decode with model.decode

A MIM encoder puts its codes near the origin, where samples of the N(0, I) prior never go; sampling z from where
the training codes are shows what the model learned. The fit (moment matching, full covariance, one float64
streaming pass) is defined in docs/metrics.md ("Samples").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .evaluation import eval_mode
from .files import TMP_PREFIX, replace_durably

AGGREGATE_POSTERIOR_FILE = "aggregate_posterior.safetensors"
_TENSORS = ("mean", "covariance_of_means", "mean_posterior_variance")


@dataclass
class AggregatePosterior:
    """A Gaussian N(mean, covariance_of_means + diag(mean_posterior_variance)) over the latent space (float64)."""

    mean: torch.Tensor  # [d]
    covariance_of_means: torch.Tensor  # [d, d], unbiased covariance of the posterior means
    mean_posterior_variance: torch.Tensor  # [d], mean_x exp(logvar(x)); zeros when left out of the fit
    num_sentences: int

    @property
    def latent_size(self) -> int:
        return self.mean.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        return self.covariance_of_means + torch.diag(self.mean_posterior_variance)

    @cached_property
    def _scale(self) -> torch.Tensor:
        """A [d, d] matrix A with A A^T = covariance, from its eigendecomposition (robust when the covariance is
        singular, e.g. an AE's codes spanning fewer than d directions: rounding-negative eigenvalues count as 0)."""
        eigenvalues, eigenvectors = torch.linalg.eigh(self.covariance)
        return eigenvectors * eigenvalues.clamp(min=0).sqrt()

    def sample(
        self, n: int, generator: torch.Generator | None = None, latent_temperature: float = 1.0
    ) -> torch.Tensor:
        """[n, d] float64 codes z = mean + latent_temperature * A eps, eps ~ N(0, I), on the generator's device (the
        CPU by default); decode them with ``model.decode`` or ``SentenceMIMPipeline.decode``."""
        if n < 1:
            raise ValueError(f"n={n}: must be >= 1")
        if not 0 <= latent_temperature < float("inf"):
            raise ValueError(f"latent_temperature={latent_temperature!r}: must be a finite number >= 0")
        device = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(n, self.latent_size, generator=generator, dtype=torch.float64, device=device)
        return self.mean.to(device) + latent_temperature * eps @ self._scale.to(device).T

    # -- storage (safetensors only: loading never runs code) ---------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write folder/aggregate_posterior.safetensors atomically (a temporary file in the folder, flushed, then
        renamed into place): a reader sees the old file or the new one, never a mix."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / AGGREGATE_POSTERIOR_FILE
        tensors = {name: getattr(self, name).detach().double().cpu().contiguous() for name in _TENSORS}
        metadata = {
            "num_sentences": str(self.num_sentences),
            "fit": "moment-matched Gaussian: covariance = Cov_x(E[z|x]) (unbiased) + diag(mean_x exp(logvar))",
        }
        temporary = folder / f"{TMP_PREFIX}{path.name}"
        try:
            save_file(tensors, temporary, metadata=metadata)
            replace_durably(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, latent_size: int | None = None) -> AggregatePosterior:
        """Read folder/aggregate_posterior.safetensors; with latent_size, check it matches the model's."""
        path = Path(folder) / AGGREGATE_POSTERIOR_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no aggregate posterior here; fit one after training with "
                "sentmim.aggregate_posterior.fit_aggregate_posterior(model, train_batches).save(folder)"
            )
        try:
            with safe_open(path, framework="pt") as stored:
                names, metadata = set(stored.keys()), stored.metadata() or {}
                tensors = {name: stored.get_tensor(name) for name in _TENSORS if name in names}
        except SafetensorError as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error}); fit and save it again") from None
        aggregate = cls._checked(path, tensors, metadata)
        if latent_size is not None and aggregate.latent_size != latent_size:
            raise ValueError(
                f"{path}: fitted for latent size {aggregate.latent_size}, the model has {latent_size}; "
                "fit it again for this model"
            )
        return aggregate

    @classmethod
    def _checked(cls, path: Path, tensors: dict, metadata: dict) -> AggregatePosterior:
        missing = [name for name in _TENSORS if name not in tensors]
        if missing:
            raise ValueError(f"{path}: missing tensor(s) {', '.join(missing)}; fit and save it again")
        mean, covariance, variance = (tensors[name].double() for name in _TENSORS)
        size = mean.shape[0] if mean.dim() == 1 else -1
        if size < 1 or covariance.shape != (size, size) or variance.shape != (size,):
            raise ValueError(
                f"{path}: inconsistent shapes mean {list(mean.shape)}, covariance_of_means {list(covariance.shape)},"
                f" mean_posterior_variance {list(variance.shape)}; fit and save it again"
            )
        try:
            num_sentences = int(metadata.get("num_sentences", ""))
        except ValueError:
            raise ValueError(f"{path}: no valid num_sentences in its metadata; fit and save it again") from None
        return cls(mean, covariance, variance, num_sentences)


# ---------------------------------------------------------------------------------------------------------------------
# Fitting: one streaming pass, float64


def fit_from_posteriors(
    posteriors: Iterable[tuple[torch.Tensor, torch.Tensor]], include_posterior_variance: bool = True
) -> AggregatePosterior:
    """Fit from an iterable of (mean, logvar) batches, each [B, d], in one pass without keeping the codes.

    Each batch's mean and scatter matrix (sum of outer products of deviations from the batch mean) are merged into
    the running ones with Chan et al.'s pairwise update, in float64: no sum of squares of raw codes, so codes far
    from the origin lose no precision, and memory stays O(d^2) whatever the corpus size.
    """
    count, mean, scatter, variance_sum = 0, 0.0, 0.0, 0.0  # the first batch's merge gives its own exactly
    for batch_mean, batch_logvar in posteriors:
        codes = batch_mean.detach().double()
        size = codes.shape[0]
        if size == 0:
            continue
        centre = codes.mean(dim=0)
        deviations = codes - centre
        delta, total = centre - mean, count + size
        mean = mean + delta * (size / total)
        scatter = scatter + deviations.T @ deviations + torch.outer(delta, delta) * (count * size / total)
        variance_sum = variance_sum + batch_logvar.detach().double().exp().sum(dim=0)
        count += size
    if count < 2:
        raise ValueError(f"the aggregate posterior needs the codes of at least 2 sentences, got {count}")
    mean_posterior_variance = variance_sum / count if include_posterior_variance else torch.zeros_like(mean)
    return AggregatePosterior(mean.cpu(), (scatter / (count - 1)).cpu(), mean_posterior_variance.cpu(), count)


@torch.no_grad()
def fit_aggregate_posterior(
    model, batches, include_posterior_variance: bool | None = None, progress: bool = False
) -> AggregatePosterior:
    """Encode every batch ({"input_ids", "attention_mask"} dicts, e.g. the training split) and fit the Gaussian.

    The model is encoded in eval mode (no dropout; its training mode is restored after). include_posterior_variance
    defaults to True except for the AE objective, whose posterior variance is never trained.
    """
    if include_posterior_variance is None:
        include_posterior_variance = model.config.objective != "ae"
    with eval_mode(model):
        posteriors = (
            model.encode(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
            for batch in tqdm(batches, desc="aggregate posterior", disable=not progress, unit="batch")
        )
        return fit_from_posteriors(posteriors, include_posterior_variance)
