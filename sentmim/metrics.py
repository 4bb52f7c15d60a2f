"""Evaluation metrics for sentence-level latent variable LMs (definitions: docs/metrics.md). Logs are natural (nats).

- ``importance_weighted_nll``: -log p(x) ~= -(logsumexp_k [log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)] - log K),
  z_k ~ q(z|x). Label it "IW-NLL (K samples)"; the only likelihood comparable across MIM / VAE / AE.
- ``elbo_nll``: -log p(x|z) + KL(q(z|x) || N(0, I)), one z ~ q(z|x). Label it "ELBO-NLL"; an upper bound on -log p(x).
- ``melbo_nll``: -log p(x|z) + log N, one z ~ q(z|x), N = sentences in the split. Label it "MELBO-NLL (sentenceMIM
  paper measure, not a likelihood)"; never compare it with IW-NLL or ELBO-NLL.
- ``perplexity``: exp(sum of per-sentence NLL / sum of predicted targets); name it after its NLL (IW-PPL, ELBO-PPL...).
- ``kl_divergence``: closed form 1/2 sum_d (mean^2 + exp(logvar) - logvar - 1). Label it "KL".
- ``mutual_information``: I_q(x; z), He et al. (2019) estimator over the whole split (batch_size=None, cap ~ log N)
  or averaged over batches of b (cap ~ log b; b = 32 is He et al.'s setting). Label it "MI (split)" / "MI (batch b)".
- ``active_units``: number of latent dims whose posterior-mean variance across the split (unbiased) is >= 0.01.
  Label it "AU".
- ``corpus_bleu``: sacreBLEU corpus BLEU-4, tokenize='none', 0-100; print ``bleu_signature()`` with it.
- ``mean_sentence_bleu1``: mean over sentences of sentence BLEU-1 (clipped unigram precision x brevity penalty),
  0-1 scale. Label it "mean sentence BLEU-1 (sentenceMIM demo)"; it is not corpus BLEU.
"""

from __future__ import annotations

import math

import torch
from sacrebleu.metrics import BLEU

from . import gaussian
from .gaussian import LOG_2PI, kl_divergence, log_normal, log_standard_normal

# Budget for the float64 temporaries of the MI estimator: its [chunk, M] matrices stay under about this many bytes.
_MI_MEMORY_BYTES = 256 * 1024**2


# ---------------------------------------------------------------------------------------------------------------------
# Mutual information and active units
# ---------------------------------------------------------------------------------------------------------------------


def _pairwise_log_normal(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """[n, M] matrix of log N(z_i; mean_j, diag exp(logvar_j)) for z [n, d] and mean, logvar [M, d].

    The quadratic term sum_d (z - m)^2 / v is expanded into matrix products so that no [n, M, d] tensor is ever built
    (40k x 40k x 512 on a PTB split); in float64 its rounding error is ~1e-16 * (|z|^2 + |mean|^2) / min(v).
    """
    precision = torch.exp(-logvar)  # [M, d]
    quadratic = (
        z.pow(2) @ precision.T
        - 2 * z @ (mean * precision).T
        + (mean.pow(2) * precision).sum(-1)  # [M], broadcast over rows i
    )
    const = -0.5 * (z.shape[-1] * LOG_2PI + logvar.sum(-1))  # [M]
    return const - 0.5 * quadratic


def _sum_log_aggregate_posterior(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """sum_i log q_agg(z_i), q_agg = 1/M sum_j N(mean_j, exp(logvar_j)) over the M rows given, chunked over i."""
    num = mean.shape[0]
    if chunk_size is None:
        # About four [chunk, M] float64 temporaries are alive at once (two products, their sum, logsumexp).
        chunk_size = max(1, _MI_MEMORY_BYTES // (4 * 8 * num))
    total = z.new_zeros(())
    for start in range(0, z.shape[0], chunk_size):
        log_density = _pairwise_log_normal(z[start : start + chunk_size], mean, logvar)
        total = total + (torch.logsumexp(log_density, dim=1) - math.log(num)).sum()
    return total


@torch.no_grad()
def mutual_information(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor | None = None,
    batch_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> float:
    """Mutual information I_q(x; z) in nats, He et al. (2019)'s estimator (docs/metrics.md).

    MI = mean_i [-d/2 log 2pi - 1/2 sum_d (1 + logvar_i,d)] - mean_i log q_agg(z_i), z_i ~ q(z|x_i), where
    log q_agg(z_i) = logsumexp_j log N(z_i; mean_j, exp(logvar_j)) - log M over the M examples of the set.

    Args:
        mean, logvar: [N, d] posterior parameters of the N sentences of a split.
        z: [N, d] samples z_i ~ q(z|x_i) to use; drawn with ``generator`` when None.
        batch_size: None, the set is the whole split (the estimate is capped by ~log N); b, the estimate is computed
            per consecutive batch of b rows and averaged weighted by batch size (capped by ~log b; b = 32 reproduces
            He et al.). Report which one was used.
        chunk_size: rows i per chunk of the whole-split computation; by default the [chunk, M] float64 temporaries
            stay under ~256 MB.
    """
    # float64 throughout: logsumexp over tens of thousands of densities loses digits in float32.
    mean, logvar = mean.double(), logvar.double()
    z = gaussian.sample(mean, logvar, generator) if z is None else z.double()
    num, dim = mean.shape
    neg_entropy = (-0.5 * dim * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).mean()

    if batch_size is None:
        log_q_agg = _sum_log_aggregate_posterior(z, mean, logvar, chunk_size)
    else:
        # Each batch uses its own aggregate posterior; summing over i and dividing by N weights batches by size.
        log_q_agg = 0.0
        for s in range(0, num, batch_size):
            rows = slice(s, s + batch_size)
            log_q_agg = log_q_agg + _sum_log_aggregate_posterior(z[rows], mean[rows], logvar[rows], chunk_size)
    return float(neg_entropy - log_q_agg / num)


@torch.no_grad()
def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims whose posterior-mean variance across the split (unbiased, N - 1) is >= threshold.

    Args:
        means: [N, d] posterior means of the N sentences of a split (N >= 2).
    """
    variance = means.double().var(dim=0, unbiased=True)
    return int((variance >= threshold).sum())


# ---------------------------------------------------------------------------------------------------------------------
# Likelihood estimates (use only the public model.encode and model.log_likelihood)
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def importance_weighted_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    num_samples: int = 500,
    chunk_size: int | None = None,
    *,
    max_rows: int = 512,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IW-NLL: importance-weighted estimate of -log p(x) in nats per sentence, [B] float64 (He et al. 2019).

    log w_k = log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x), z_k ~ q(z|x), and
    -log p(x) ~= -(logsumexp_k log w_k - log K). The estimate is an upper bound on -log p(x) in expectation and
    tightens as K grows; it is the likelihood to compare across objectives.

    The model is used as it is (call ``model.eval()`` first to disable dropout) and only through
    ``model.encode(input_ids, attention_mask)`` and ``model.log_likelihood(input_ids, z, attention_mask)``; the logvar
    it returns is used as is. Noise is drawn as one [K, B, d] tensor from ``generator``, so the result does not depend
    on the chunking. Each chunk of samples goes through the decoder as one batch of B * chunk rows.

    Args:
        input_ids: [B, T] one batch of sentences (passed through to the model untouched).
        num_samples: K.
        chunk_size: samples per decoder call; by default max(1, max_rows // B).
        max_rows: bound on the decoder batch (B * chunk rows) when chunk_size is None.
    """
    mean, logvar = model.encode(input_ids, attention_mask)
    batch = mean.shape[0]
    if chunk_size is None:
        chunk_size = max(1, max_rows // batch)
    eps = torch.randn((num_samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    mean64, logvar64 = mean.double(), logvar.double()

    log_w = []
    for start in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - start)
        # Rows ordered sentence-major ([b0 s0, b0 s1, ..., b1 s0, ...]) to match repeat_interleave of the inputs.
        z = gaussian.reparameterize(mean.unsqueeze(1), logvar.unsqueeze(1), eps[start : start + k].transpose(0, 1))
        z = z.reshape(batch * k, -1)
        ids = input_ids.repeat_interleave(k, dim=0)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(k, dim=0)
        log_px_z = model.log_likelihood(ids, z, mask).double().view(batch, k)
        # Densities in float64 at the exact z the decoder saw.
        z64 = z.double().view(batch, k, -1)
        log_prior = log_standard_normal(z64)
        log_q = log_normal(z64, mean64.unsqueeze(1), logvar64.unsqueeze(1))
        log_w.append(log_px_z + log_prior - log_q)
    log_w = torch.cat(log_w, dim=1)  # [B, K]
    return -(torch.logsumexp(log_w, dim=1) - math.log(num_samples))


@torch.no_grad()
def elbo_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ELBO-NLL = -log p(x|z) + KL(q(z|x) || N(0, I)) with one z ~ q(z|x), nats per sentence, [B] float64.

    A single-sample estimate of the negative ELBO, an upper bound on -log p(x) (in expectation).
    """
    mean, logvar = model.encode(input_ids, attention_mask)
    z = gaussian.sample(mean, logvar, generator)
    log_px_z = model.log_likelihood(input_ids, z, attention_mask).double()
    return -log_px_z + kl_divergence(mean.double(), logvar.double())


@torch.no_grad()
def melbo_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    num_sentences: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MELBO-NLL = -log p(x|z) + log N with one z ~ q(z|x), N = ``num_sentences`` in the split; [B] float64.

    This is the measure the sentenceMIM paper (and its demo code) reports for MIM models. It is NOT a bound on the
    marginal likelihood under the N(0, I) prior: label it "MELBO (not a likelihood)" and never compare it with
    IW-NLL or ELBO-NLL (use ``importance_weighted_nll`` for that).
    """
    mean, logvar = model.encode(input_ids, attention_mask)
    z = gaussian.sample(mean, logvar, generator)
    return -model.log_likelihood(input_ids, z, attention_mask).double() + math.log(num_sentences)


def num_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, pad_token_id: int | None = None
) -> torch.Tensor:
    """Predicted targets per sentence, [B]: non-pad tokens minus 1 (words + EOS are predicted, BOS never is).

    The attention mask defines padding when given (pad_token_id may equal a real token such as EOS); otherwise
    tokens equal to pad_token_id are padding.
    """
    if attention_mask is not None:
        tokens = attention_mask.long().sum(-1)
    elif pad_token_id is not None:
        tokens = (input_ids != pad_token_id).long().sum(-1)
    else:
        tokens = torch.full(input_ids.shape[:1], input_ids.shape[-1], dtype=torch.long, device=input_ids.device)
    return (tokens - 1).clamp(min=0)


def perplexity(total_nll: float, total_targets: int) -> float:
    """exp(sum of per-sentence NLL / sum of predicted targets), e.g. IW-PPL from IW-NLL summed over a split."""
    total_nll, total_targets = float(total_nll), float(total_targets)
    if total_targets <= 0:
        raise ValueError("perplexity needs at least one predicted target")
    return math.exp(total_nll / total_targets)


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction BLEU (sacreBLEU; inputs are space-joined tokens, hence tokenize='none')
# ---------------------------------------------------------------------------------------------------------------------


def _check_pairs(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sentence")


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacreBLEU corpus BLEU-4 (0-100) with tokenize='none': the strings are already space-joined tokens."""
    _check_pairs(hypotheses, references)
    return BLEU(tokenize="none").corpus_score(list(hypotheses), [list(references)]).score


def bleu_signature() -> str:
    """The sacreBLEU signature of ``corpus_bleu``, e.g. 'nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:...'."""
    bleu = BLEU(tokenize="none")
    bleu.corpus_score(["a"], [["a"]])  # sacreBLEU only knows the number of references after scoring once
    return str(bleu.get_signature())


def mean_sentence_bleu1(hypotheses: list[str], references: list[str]) -> float:
    """Mean over sentences of sentence BLEU-1 on a 0-1 scale (the sentenceMIM demo's reconstruction number).

    Per sentence: clipped unigram precision x brevity penalty (NLTK's sentence_bleu with weights=(1.0,)); an empty
    hypothesis scores 0.
    """
    _check_pairs(hypotheses, references)
    bleu1 = BLEU(max_ngram_order=1, tokenize="none", effective_order=True)
    scores = [bleu1.sentence_score(h, [r]).score / 100 for h, r in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores)
