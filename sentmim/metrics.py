"""Evaluation metrics for sentence-level latent variable LMs, in nats: likelihood bounds (IW-NLL, ELBO) and MELBO,
KL, mutual information, active units, the quality of decoded samples, reconstruction BLEU.

docs/metrics.md defines each one exactly and says how to label it: which estimator, which cap, which BLEU; MELBO is
not a likelihood and is never compared with IW-NLL or ELBO-NLL.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from sacrebleu.metrics import BLEU

from . import gaussian
from .gaussian import LOG_2PI, kl_divergence, log_normal, log_standard_normal

# Budget for the float64 temporaries of the MI estimator: its [chunk, M] matrices stay under about this many bytes.
_MI_MEMORY_BYTES = 256 * 1024**2


# ---------------------------------------------------------------------------------------------------------------------
# KL, mutual information and active units
# ---------------------------------------------------------------------------------------------------------------------


def kl_parts(mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(code energy, variance part) of KL(q(z|x) || N(0, I)) per sentence, each [B]; they sum to ``kl_divergence``
    (docs/metrics.md, "KL split")."""
    return gaussian.kl_code_energy(mean), gaussian.kl_variance_part(logvar)


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


def _log_mixture_density(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """[n] log q_agg(z_i), q_agg = 1/M sum_j N(mean_j, exp(logvar_j)) over the M rows given, chunked over i."""
    num = mean.shape[0]
    if chunk_size is None:
        # About four [chunk, M] float64 temporaries are alive at once (two products, their sum, logsumexp).
        chunk_size = max(1, _MI_MEMORY_BYTES // (4 * 8 * num))
    chunks = [
        torch.logsumexp(_pairwise_log_normal(z[start : start + chunk_size], mean, logvar), dim=1)
        for start in range(0, z.shape[0], chunk_size)
    ]
    return torch.cat(chunks) - math.log(num)


def _mutual_information_terms(
    mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor, batch_size: int | None, chunk_size: int | None
) -> torch.Tensor:
    """[N] per-sentence terms of He et al.'s estimator for one draw z [N, d] (float64): neg_entropy_i -
    log q_agg(z_i), q_agg the mixture over the whole split (batch_size None) or over the batch of b consecutive rows
    that holds i. Their mean is the MI estimate."""
    num, dim = z.shape
    neg_entropy = -0.5 * dim * LOG_2PI - 0.5 * (1 + logvar).sum(-1)
    step = num if batch_size is None else batch_size
    log_q_agg = torch.cat([
        _log_mixture_density(z[start : start + step], mean[start : start + step], logvar[start : start + step],
                             chunk_size)
        for start in range(0, num, step)
    ])
    return neg_entropy - log_q_agg


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
    """Mutual information I_q(x; z) in nats, He et al. (2019)'s estimator with one z per sentence (docs/metrics.md,
    "MI"); ``mutual_information_with_se`` averages S draws per sentence and gives the standard error.

    Args:
        mean, logvar: [N, d] posterior parameters of the N sentences of a split.
        z: [N, d] samples z_i ~ q(z|x_i) to use; drawn with ``generator`` when None.
        batch_size: None, the set is the whole split (cap ~log N); b, per consecutive batch of b rows, averaged
            weighted by batch size (cap ~log b). Report which one was used.
        chunk_size: rows i per chunk; by default the [chunk, M] float64 temporaries stay under ~256 MB.
    """
    # float64 throughout: logsumexp over tens of thousands of densities loses digits in float32.
    mean, logvar = mean.double(), logvar.double()
    z = gaussian.sample(mean, logvar, generator) if z is None else z.double()
    return float(_mutual_information_terms(mean, logvar, z, batch_size, chunk_size).mean())


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error, in the same unit; print it as "value +- standard_error"."""

    value: float
    standard_error: float


@torch.no_grad()
def mutual_information_with_se(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    num_samples: int = 10,
    batch_size: int | None = None,
    *,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Estimate:
    """He et al.'s MI estimate from S = ``num_samples`` >= 2 draws z_si ~ q(z|x_i) per sentence, with its Monte
    Carlo standard error SE = sqrt(sum_i s_i^2 / S) / N, s_i^2 the unbiased variance over s of the terms t_si of
    ``mutual_information`` (docs/metrics.md, "MI with its standard error": what the SE covers and what it does not).

    The estimate is the mean over s of ``mutual_information(mean, logvar, z=z[s])``; the SE shrinks as 1 / sqrt(S),
    the cost grows as S. ``z``: [S, N, d] draws to use; when None, S draws one after the other from ``generator``.
    ``batch_size``: as in ``mutual_information``.
    """
    mean, logvar = mean.double(), logvar.double()
    if z is not None and (z.dim() != 3 or z.shape[1:] != mean.shape):
        raise ValueError(f"z must be [S, N, d] with [N, d] = {list(mean.shape)}, got {list(z.shape)}")
    num_draws = num_samples if z is None else z.shape[0]
    if num_draws < 2:
        raise ValueError(f"num_samples={num_draws}: a standard error needs at least 2 draws of z per sentence")
    # One draw at a time: memory stays that of the one-draw estimate, [N, d] plus the chunked [chunk, M] matrices.
    terms = torch.stack([
        _mutual_information_terms(
            mean, logvar, gaussian.sample(mean, logvar, generator) if z is None else z[draw].double(), batch_size, None
        )
        for draw in range(num_draws)
    ])  # [S, N]
    per_sentence_variance = terms.var(dim=0, unbiased=True)
    standard_error = float(per_sentence_variance.sum().div(num_draws).sqrt()) / mean.shape[0]
    return Estimate(float(terms.mean()), standard_error)


@torch.no_grad()
def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims whose posterior-mean variance across the N rows of ``means`` [N, d] (a split's
    posterior means; unbiased, N - 1) is >= threshold. One row shows no variation: 0 (a one-sentence validation
    split), where the unbiased variance would be NaN with a warning from torch."""
    if means.shape[0] < 2:
        return 0
    variance = means.double().var(dim=0, unbiased=True)
    return int((variance >= threshold).sum())


@torch.no_grad()
def posterior_mean_variance_ratio(means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """[d] float64: Var_x E[z_d|x] / E_x Var(z_d|x) per latent dimension over the N sentences of a split: the
    unbiased (N - 1) variance of the posterior means over the mean posterior variance (docs/metrics.md, "Active
    units, relative rule")."""
    means, logvars = means.double(), logvars.double()
    if means.shape != logvars.shape or means.dim() != 2 or means.shape[0] < 2:
        raise ValueError(f"means and logvars must both be [N, d] with N >= 2, got {list(means.shape)} and "
                         f"{list(logvars.shape)}")
    return means.var(dim=0, unbiased=True) / logvars.exp().mean(dim=0)


@torch.no_grad()
def active_units_relative(means: torch.Tensor, logvars: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims whose ``posterior_mean_variance_ratio`` (Var_x E[z_d|x] / E_x Var(z_d|x)) is >= threshold.

    Unlike ``active_units`` it does not depend on the scale of z, so a near-deterministic encoder (MIM, sigma =
    0.0067) is not undercounted; the default 0.01 makes it the absolute rule when the posterior variances are 1.
    """
    return int((posterior_mean_variance_ratio(means, logvars) >= threshold).sum())


# ---------------------------------------------------------------------------------------------------------------------
# Likelihood estimates (use only the public model.encode and model.log_likelihood)
# ---------------------------------------------------------------------------------------------------------------------


def widened_logvar(logvar: torch.Tensor, proposal_width: float) -> torch.Tensor:
    """log(exp(logvar) + s^2): the log-variance of the widened proposal r(z|x) = N(mean, exp(logvar) + s^2), s >= 0."""
    if not 0 <= proposal_width < math.inf:
        raise ValueError(f"proposal_width={proposal_width!r}: must be a finite number >= 0 (0 is q(z|x) itself)")
    if proposal_width == 0:
        return logvar
    return torch.logaddexp(logvar, torch.full_like(logvar, 2 * math.log(proposal_width)))


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
    proposal_width: float = 0.0,
) -> torch.Tensor:
    """IW-NLL: importance-weighted estimate of -log p(x) in nats per sentence, [B] float64, from K = ``num_samples``
    draws of the proposal q(z|x), or of q widened to N(mean, diag(exp(logvar) + s^2)) with ``proposal_width`` s > 0
    (docs/metrics.md, "IW-NLL" and "IW-NLL, widened proposal"; choose s with ``choose_proposal_width`` on held-out
    sentences, never on the scored ones).

    The model is used as it is (call ``model.eval()`` first to disable dropout) and only through ``model.encode`` and
    ``model.log_likelihood``. Noise is drawn as one [K, B, d] tensor from ``generator``, so the result does not depend
    on the chunking, and the same generator state gives the same noise eps whatever the width. Each chunk of samples
    goes through the decoder as one batch of B * chunk rows: chunk_size by default max(1, max_rows // B).
    """
    mean, logvar = model.encode(input_ids, attention_mask)
    proposal_logvar = widened_logvar(logvar, proposal_width)
    batch = mean.shape[0]
    if chunk_size is None:
        chunk_size = max(1, max_rows // batch)
    eps = torch.randn((num_samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    mean64, proposal_logvar64 = mean.double(), widened_logvar(logvar.double(), proposal_width)

    log_w = []
    for start in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - start)
        # Rows ordered sentence-major ([b0 s0, b0 s1, ..., b1 s0, ...]) to match repeat_interleave of the inputs.
        z = gaussian.reparameterize(
            mean.unsqueeze(1), proposal_logvar.unsqueeze(1), eps[start : start + k].transpose(0, 1)
        )
        z = z.reshape(batch * k, -1)
        ids = input_ids.repeat_interleave(k, dim=0)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(k, dim=0)
        log_px_z = model.log_likelihood(ids, z, mask).double().view(batch, k)
        # Densities in float64 at the exact z the decoder saw.
        z64 = z.double().view(batch, k, -1)
        log_prior = log_standard_normal(z64)
        log_r = log_normal(z64, mean64.unsqueeze(1), proposal_logvar64.unsqueeze(1))
        log_w.append(log_px_z + log_prior - log_r)
    log_w = torch.cat(log_w, dim=1)  # [B, K]
    return -(torch.logsumexp(log_w, dim=1) - math.log(num_samples))


PROPOSAL_WIDTHS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@torch.no_grad()
def choose_proposal_width(
    model: torch.nn.Module,
    heldout_batches,
    widths=PROPOSAL_WIDTHS,
    num_samples: int = 100,
    *,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """(the width s with the lowest mean IW bound on held-out sentences, {s: that mean bound in nats per sentence}).

    ``heldout_batches`` ({"input_ids", "attention_mask"} dicts) must be sentences that will not be scored: the
    minimum of noisy estimates on the scored ones would bias their bound low (docs/metrics.md). All widths see the
    same noise eps (a generator seeded with seed + the batch's index), so their comparison is not blurred by
    independent noise. ``widths``: the grid of s; 0 (q itself) belongs in it, widening is not always better. Call
    ``model.eval()`` first.
    """
    widths = tuple(float(width) for width in widths)
    if not widths:
        raise ValueError("widths: give at least one proposal width")
    for width in widths:
        widened_logvar(torch.zeros(()), width)  # validates each width before any decoder pass
    device = getattr(model, "device", None)
    totals, count = dict.fromkeys(widths, 0.0), 0
    for index, batch in enumerate(heldout_batches):
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        if device is not None:
            ids, mask = ids.to(device), None if mask is None else mask.to(device)
        for width in widths:
            generator = torch.Generator(device=ids.device).manual_seed(seed + index)
            bound = importance_weighted_nll(model, ids, mask, num_samples, generator=generator, proposal_width=width)
            totals[width] += float(bound.sum())
        count += ids.shape[0]
    if count == 0:
        raise ValueError("heldout_batches is empty: choose the proposal width on at least one held-out sentence")
    mean_bound = {width: total / count for width, total in totals.items()}
    return min(widths, key=mean_bound.__getitem__), mean_bound


@torch.no_grad()
def elbo_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ELBO-NLL = -log p(x|z) + KL(q(z|x) || N(0, I)) with one z ~ q(z|x), nats per sentence, [B] float64: a
    single-sample estimate of the negative ELBO, an upper bound on -log p(x) in expectation."""
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

    The sentenceMIM paper's measure for MIM. It is NOT a bound on the marginal likelihood under the N(0, I) prior:
    never compare it with IW-NLL or ELBO-NLL.
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
# Sample quality (samples decoded from latent codes, e.g. from the prior or the aggregate posterior)
# ---------------------------------------------------------------------------------------------------------------------


def distinct_n(samples, n: int) -> float:
    """Distinct-n: the number of distinct n-grams over all samples / the total number of n-grams, in [0, 1].

    Each sample is a string (tokens separated by whitespace) or a sequence of tokens (words or ids); n-grams never
    cross samples, and a sample shorter than n has none. Li et al. (2016) divide by the number of tokens instead;
    the two agree for n = 1.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: must be an integer >= 1")
    distinct, total = set(), 0
    for sample in samples:
        tokens = sample.split() if isinstance(sample, str) else list(sample)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        distinct.update(grams)
        total += len(grams)
    if total == 0:
        raise ValueError(f"distinct-{n}: the samples hold no {n}-gram (empty, or all shorter than {n} tokens)")
    return len(distinct) / total


def generated_token_mask(generated_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[N, L] bool: the tokens a decoder emitted (``SentenceMIMModel.decode``'s output convention: the tokens after
    BOS up to and including the first EOS, then padding). A row with no EOS ran to the maximum length: all of it
    counts. Defined by the first EOS, not by the pad id, so it also holds when padding reuses the EOS id."""
    is_eos = (generated_ids == eos_token_id).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


def eos_share(generated_ids: torch.Tensor, eos_token_id: int) -> float:
    """The share of decoded rows ([N, L], ``SentenceMIMModel.decode``'s output) that end with EOS; the others never
    emitted it and ran to the maximum length."""
    if generated_ids.dim() != 2 or generated_ids.shape[0] == 0:
        raise ValueError(f"generated_ids must be [N, L] with N >= 1, got {list(generated_ids.shape)}")
    return float((generated_ids == eos_token_id).any(dim=1).double().mean())


def decoded_to_batch(generated_ids: torch.Tensor, bos_token_id: int, eos_token_id: int) -> dict[str, torch.Tensor]:
    """{"input_ids", "attention_mask"} of decoded rows as sentences to score: BOS + the emitted tokens (up to and
    including the first EOS), right-padded with the mask at 0. A row that never emitted EOS is scored as emitted,
    without an EOS appended."""
    bos = torch.full((generated_ids.shape[0], 1), bos_token_id, dtype=generated_ids.dtype,
                     device=generated_ids.device)
    emitted = generated_token_mask(generated_ids, eos_token_id)
    input_ids = torch.cat([bos, generated_ids], dim=1)
    attention_mask = torch.cat([torch.ones_like(bos, dtype=torch.long), emitted.long()], dim=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def language_model_perplexity(log_likelihood, batches) -> float:
    """Perplexity of sentences under a language model: exp(-sum log p(x) / sum ``num_targets``).

    ``log_likelihood(input_ids, attention_mask)`` -> [B] log p(x) in nats, summed over the predicted targets
    input_ids[:, 1:] where attention_mask is 1; ``batches``: {"input_ids", "attention_mask"} dicts, right-padded (e.g.
    ``decoded_to_batch`` of samples).
    """
    total_nll, total_targets = 0.0, 0
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        total_nll -= float(log_likelihood(ids, mask).double().sum())
        total_targets += int(num_targets(ids, mask).sum())
    return perplexity(total_nll, total_targets)


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction BLEU (sacreBLEU; inputs are space-joined tokens, hence tokenize='none')
# ---------------------------------------------------------------------------------------------------------------------


def _check_pairs(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sentence")


UNKNOWN_MARK = "\u2047"  # DOUBLE QUESTION MARK, what SentencePiece decodes an unknown piece to


def hide_unknown(hypotheses: list[str], references: list[str], unknown_token: str) -> list[str]:
    """Each hypothesis with every `unknown_token` ("<unk>") written as a mark that occurs nowhere in its reference.

    Reconstruction BLEU's rule: an unknown token in a hypothesis never matches, not even an unknown token of the
    reference (which stands for a word the model could not write, or is the text's own "<unk>"). Corpus BLEU clips
    n-gram counts per sentence, so a mark absent from the sentence's reference can match nothing."""
    _check_pairs(hypotheses, references)
    hidden = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        mark = UNKNOWN_MARK
        while mark in reference:
            mark += UNKNOWN_MARK
        hidden.append(hypothesis.replace(unknown_token, mark))
    return hidden


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacreBLEU corpus BLEU-4 (0-100) with tokenize='none': the strings are already space-joined tokens."""
    _check_pairs(hypotheses, references)
    return BLEU(tokenize="none", force=True).corpus_score(list(hypotheses), [list(references)]).score


def bleu_signature() -> str:
    """The sacreBLEU signature of ``corpus_bleu``, e.g. 'nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:...'."""
    bleu = BLEU(tokenize="none", force=True)
    bleu.corpus_score(["a"], [["a"]])  # sacreBLEU only knows the number of references after scoring once
    return str(bleu.get_signature())


def mean_sentence_bleu1(hypotheses: list[str], references: list[str]) -> float:
    """Mean over sentences of sentence BLEU-1 on a 0-1 scale (the sentenceMIM demo's reconstruction number).

    Per sentence: clipped unigram precision x brevity penalty (NLTK's sentence_bleu with weights=(1.0,)); an empty
    hypothesis scores 0.
    """
    _check_pairs(hypotheses, references)
    bleu1 = BLEU(max_ngram_order=1, tokenize="none", effective_order=True, force=True)
    scores = [bleu1.sentence_score(h, [r]).score / 100 for h, r in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores)
