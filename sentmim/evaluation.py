"""Evaluate a sentence latent-variable model over a whole split: likelihoods, latent statistics, reconstruction.

    results = evaluate(model, batches, tokenizer)      # batches: {"input_ids", "attention_mask"} dicts, right-padded
    print(sentmim.reporting.format_results(results))   # a table labelled by the definitions below
    sentmim.files.write_json_atomic("eval_results_test.json", results)

From a saved model folder and any dataset: `sentmim.evaluate_folder.evaluate_folder` (also `sentmim evaluate`).

What is measured, under which key, and why: docs/metrics.md (likelihood bounds and MELBO, the KL and its split, MI
with its standard error, active units by two rules, reconstruction BLEU, the unknown-token rate and the flag it
raises on the likelihoods).

Randomness: every sample comes from a `torch.Generator`, so a seed fixes every number. The K samples of IW-NLL come
from a generator seeded with `seed`, consumed batch after batch; those of the widened IW-NLL from one seeded with
`seed + 2`. The one posterior sample z of ELBO-NLL, MELBO-NLL, the reconstruction term and the first MI draw comes
from generators all seeded with `seed + 1`, so these all use the same z (per sentence, ELBO-NLL - MELBO-NLL = KL -
log N exactly), whether or not IW-NLL is computed; MI's further draws come from `seed + 3`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from . import gaussian, metrics
from .preprocessing import distinct_unknown_id
from .tokenization import decode_keep_unknown, unknown_words_warning

logger = logging.getLogger(__name__)

IW_SEED_OFFSET = 0  # generator seed of the IW-NLL samples: seed + 0
SAMPLE_SEED_OFFSET = 1  # generator seed of the single posterior sample z: seed + 1
IW_WIDE_SEED_OFFSET = 2  # the widened proposal's samples (and its width search): seed + 2
MI_SEED_OFFSET = 3  # MI's draws after the first: seed + 3
WIDTH_SEARCH_SAMPLES = 100  # at most this K per width when choosing the widened proposal's width
COLLAPSE_MI_NATS = 0.05  # below this whole-split MI the latent carries (almost) nothing about the sentence
ACTIVE_UNIT_THRESHOLD = 0.01


# ---------------------------------------------------------------------------------------------------------------------
# Per-batch pieces
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode (no dropout: the numbers are properties of the model, not of a dropout mask) within
    the block; its training mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def max_sentence_length(config, tokenizer=None) -> int:
    """The longest tokenized sentence, BOS and EOS included, that a model with this config takes: its
    max_position_embeddings, bounded by the tokenizer's model_max_length (a tokenizer without a limit reports a huge
    sentinel). Decoding generates at most this minus one tokens: BOS is given, never generated."""
    limit = config.max_position_embeddings
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limit = min(limit, tokenizer_limit)
    return limit


def default_decode_length(model, tokenizer=None) -> int:
    """Generated tokens allowed per reconstruction: the longest sentence the model takes, less its BOS (given, never
    generated), as in `SentenceMIMPipeline.decode`."""
    return max_sentence_length(model.config, tokenizer) - 1


def reconstruct_batch(model, tokenizer, input_ids, z, max_decode_length: int, ended=None,
                      **decode_options) -> tuple[list[str], list[str]]:
    """(hypotheses, references): greedy decoding of z, and the input sentences as the model was given them, as text
    for BLEU; an unknown token in a hypothesis never matches (docs/metrics.md, "The reference and unknown tokens").

    `ended`, a list, receives one bool per row: whether its reconstruction emitted EOS (else it ran to the maximum
    length). decode_options go to `model.decode` (e.g. no_repeat_ngram_size).
    """
    generated = model.decode(z, max_length=max_decode_length, **decode_options)
    if ended is not None:
        ended += (generated == model.config.eos_token_id).any(dim=1).tolist()
    hypotheses = [text.strip() for text in decode_keep_unknown(tokenizer, generated)]
    references = [text.strip() for text in decode_keep_unknown(tokenizer, input_ids)]
    if tokenizer.unk_token is not None:
        hypotheses = metrics.hide_unknown(hypotheses, references, tokenizer.unk_token)
    return hypotheses, references


def _batches_with_progress(batches, progress: bool, desc: str):
    """The batches, with a progress bar when asked for and stderr is a terminal (never bar lines in a log file)."""
    return tqdm(batches, desc=desc, disable=None if progress else True, unit="batch")  # total: len(batches) if any


# ---------------------------------------------------------------------------------------------------------------------
# Whole-split evaluation
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _score_split(model, batches, tokenizer, iw_samples, bleu, num_sentences, seed, progress, max_decode_length,
                 proposal_width):
    """Per-sentence numbers for every sentence of the split, in batch order, on the CPU; plus the BLEU texts."""
    device = model.device
    unknown_id = distinct_unknown_id(model.config)
    unknown_id = -1 if unknown_id is None else unknown_id  # no id is -1: nothing is counted
    iw_generator = torch.Generator(device=device).manual_seed(seed + IW_SEED_OFFSET)
    wide_generator = torch.Generator(device=device).manual_seed(seed + IW_WIDE_SEED_OFFSET)
    z_generator = torch.Generator(device=device).manual_seed(seed + SAMPLE_SEED_OFFSET)
    columns = defaultdict(list)
    hypotheses, references, ended = [], [], []
    for batch in _batches_with_progress(batches, progress, "evaluate"):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        mean, logvar = model.encode(ids, mask)
        z = gaussian.sample(mean, logvar, z_generator)
        code_energy, variance_part = metrics.kl_parts(mean.double(), logvar.double())
        kl = code_energy + variance_part
        recon_nll_sample_z = -model.log_likelihood(ids, z, mask).double()
        row = {
            "mean": mean,
            "logvar": logvar,
            "z": z,
            "num_targets": metrics.num_targets(ids, mask),
            "num_unknown": ((ids == unknown_id) & mask.bool()).sum(1),
            "kl": kl,
            "kl_code_energy": code_energy,
            "kl_variance_part": variance_part,
            "recon_nll_mean_z": -model.log_likelihood(ids, mean, mask).double(),
            "recon_nll_sample_z": recon_nll_sample_z,
            # metrics.elbo_nll / melbo_nll at this same z, without two more encoder and decoder passes
            "elbo_nll": recon_nll_sample_z + kl,
            "melbo_nll": recon_nll_sample_z + math.log(num_sentences),
        }
        if iw_samples > 0:
            row["iw_nll"] = metrics.importance_weighted_nll(
                model, ids, mask, num_samples=iw_samples, generator=iw_generator
            )
            if proposal_width == 0:  # q itself won on the held-out sentences: the same estimator as iw_nll
                row["iw_nll_wide"] = row["iw_nll"]
            elif proposal_width is not None:
                row["iw_nll_wide"] = metrics.importance_weighted_nll(
                    model, ids, mask, num_samples=iw_samples, generator=wide_generator, proposal_width=proposal_width
                )
        for key, value in row.items():
            columns[key].append(value.cpu())  # the split's latents stay on the CPU: 40k x 512 is small there
        if bleu:
            batch_hypotheses, batch_references = reconstruct_batch(model, tokenizer, ids, mean, max_decode_length,
                                                                   ended)
            hypotheses += batch_hypotheses
            references += batch_references
    columns = {key: torch.cat(values) for key, values in columns.items()}
    if ended:
        columns["reconstruction_ended"] = torch.tensor(ended)
    return columns, hypotheses, references


def evaluate(
    model,
    batches,
    tokenizer=None,
    iw_samples: int = 500,
    bleu: bool = True,
    mi_batch_size: int = 32,
    num_sentences: int | None = None,
    seed: int = 0,
    progress: bool = True,
    max_decode_length: int | None = None,
    unknown_in_text: int | None = None,
    mi_samples: int = 10,
    heldout_batches=None,
    heldout_name: str = "held-out sentences",
    proposal_width: float | None = None,
) -> dict:
    """Every metric of docs/metrics.md over a whole split, as a flat dict (keys name the definitions).

    Args:
        model: a SentenceMIMModel (evaluated in eval mode under no_grad; its training mode is restored after).
        batches: an iterable of {"input_ids", "attention_mask"} dicts, right-padded, BOS ... EOS (for example
            `sentmim.data.make_dataloader(..., shuffle=False)`). Iterated once when num_sentences is given, else
            materialised once to count the sentences first.
        tokenizer: needed for reconstruction BLEU; without it BLEU is skipped.
        iw_samples: K of IW-NLL (0 skips IW-NLL, the expensive part: K decoder passes per sentence).
        mi_batch_size: b of the per-batch MI (He et al. use 32); batches are consecutive sentences in batch order.
        num_sentences: N of MELBO (log N is added to every sentence). Default: the number of sentences in batches.
        seed: seeds every sample (see the module docstring for which generator feeds what).
        unknown_in_text: how many tokens of these sentences the text itself writes as the unknown token ("<unk>" in
            PTB and WikiText; `tokenize_dataset`'s num_unknown_in_text). Default: not known, and every unknown token
            counts as a word the vocabulary lacks.
        mi_samples: S draws of z per sentence for the whole-split MI and its standard error (>= 2).
        heldout_batches: sentences that are NOT scored, on which the widened proposal's width s is chosen (K =
            min(iw_samples, 100)); heldout_name says which they are. Without them (and without proposal_width, an s
            chosen earlier) the widened IW-NLL is skipped, as it is for an AE and when iw_samples is 0.
    """
    if iw_samples < 0:
        raise ValueError(f"iw_samples={iw_samples}: must be >= 0 (0 skips IW-NLL)")
    if mi_samples < 2:
        raise ValueError(f"mi_samples={mi_samples}: must be >= 2 (the MI's standard error needs two draws)")
    if num_sentences is None:
        batches = list(batches)
        num_sentences = sum(int(batch["input_ids"].shape[0]) for batch in batches)
    bleu = bool(bleu and tokenizer is not None)
    if max_decode_length is None:
        max_decode_length = default_decode_length(model, tokenizer)

    with eval_mode(model):
        width = choose_width(model, iw_samples, heldout_batches, heldout_name, proposal_width, seed)
        per_sentence, hypotheses, references = _score_split(
            model, batches, tokenizer, iw_samples, bleu, num_sentences, seed, progress, max_decode_length,
            width["iw_proposal_width"],
        )
    if "mean" not in per_sentence or per_sentence["mean"].shape[0] < 2:
        raise ValueError("evaluate needs at least 2 sentences (MI and active units are statistics of a split)")
    results = _summarize(model, per_sentence, hypotheses, references, num_sentences, iw_samples, mi_batch_size, seed,
                         mi_samples)
    return {**results, **_unknown_tokens(per_sentence, unknown_in_text), **width}


def _unknown_tokens(per_sentence, unknown_in_text: int | None) -> dict:
    """The unknown-token rates of the scored sentences (BOS and EOS not counted), and whether they flag the
    likelihoods; warns when they do."""
    num_tokens = int(per_sentence["num_targets"].sum()) - per_sentence["num_targets"].shape[0]  # less one EOS each
    num_unknown = int(per_sentence["num_unknown"].sum())
    warning = unknown_words_warning(num_unknown, unknown_in_text or 0, num_tokens, "the scored tokens")
    if warning:
        logger.warning("%s: their likelihoods leave out what spelling those words costs (flagged), reconstruction "
                       "BLEU never matches them; fine-tune with --extend-vocabulary, or train with --tokenizer bpe",
                       warning)
    return {
        "unknown_token_rate": num_unknown / num_tokens if num_tokens else 0.0,
        "unknown_token_rate_in_text": None if unknown_in_text is None else unknown_in_text / max(num_tokens, 1),
        "likelihoods_flagged": warning is not None,
    }


def choose_width(model, iw_samples, heldout_batches, heldout_name, proposal_width, seed) -> dict:
    """The widened proposal's width s and where it comes from (None when the widened IW-NLL is skipped)."""
    skipped = {"iw_proposal_width": None, "iw_proposal_width_chosen_on": None, "iw_proposal_width_bounds": None,
               "iw_proposal_width_samples": None}
    if iw_samples == 0 or model.config.objective == "ae":
        return skipped
    if proposal_width is not None:
        metrics.widened_logvar(torch.zeros(()), proposal_width)  # a bad width fails before any decoder pass
        return {**skipped, "iw_proposal_width": float(proposal_width), "iw_proposal_width_chosen_on": "given"}
    if heldout_batches is None:
        return skipped
    samples = min(iw_samples, WIDTH_SEARCH_SAMPLES)
    width, bounds = metrics.choose_proposal_width(model, heldout_batches, num_samples=samples,
                                                  seed=seed + IW_WIDE_SEED_OFFSET)
    return {"iw_proposal_width": width, "iw_proposal_width_chosen_on": heldout_name,
            "iw_proposal_width_bounds": {str(s): bound for s, bound in bounds.items()},
            "iw_proposal_width_samples": samples}


def _summarize(model, per_sentence, hypotheses, references, melbo_n, iw_samples, mi_batch_size, seed,
               mi_samples) -> dict:
    """The split-level numbers: means of per-sentence NLLs, perplexities, MI, active units, BLEU."""
    count = per_sentence["mean"].shape[0]
    total_targets = int(per_sentence["num_targets"].sum())

    def nll_and_ppl(key: str) -> dict:
        """{"..._nll": mean per sentence, "..._ppl": its perplexity}; both None when that NLL was not computed."""
        values = per_sentence.get(key)
        nll = None if values is None else float(values.mean())
        ppl = None if values is None else metrics.perplexity(float(values.sum()), total_targets)
        return {key: nll, key.replace("nll", "ppl"): ppl}

    means, logvars, z = per_sentence["mean"], per_sentence["logvar"], per_sentence["z"]
    # The first MI draw and the per-batch MI use the z of ELBO / MELBO, so the whole-split and per-batch numbers
    # differ only in the set (and the S - 1 further draws).
    more = torch.Generator().manual_seed(seed + MI_SEED_OFFSET)
    draws = torch.stack([z.double()] + [gaussian.sample(means.double(), logvars.double(), more)
                                        for _ in range(mi_samples - 1)])
    mi_whole_split = metrics.mutual_information_with_se(means, logvars, z=draws, batch_size=None)
    mi_batch = metrics.mutual_information(means, logvars, z=z, batch_size=mi_batch_size)
    active = metrics.active_units(means, threshold=ACTIVE_UNIT_THRESHOLD)
    active_relative = metrics.active_units_relative(means, logvars, threshold=ACTIVE_UNIT_THRESHOLD)
    # An AE's posterior variance is untrained, so the relative rule's denominator means nothing there.
    collapse_units = active if model.config.objective == "ae" else active_relative
    ended = per_sentence.get("reconstruction_ended")

    return {
        "objective": model.config.objective,
        "architecture": model.config.architecture,
        "latent_size": model.config.latent_size,
        "num_sentences": count,
        "num_targets": total_targets,
        "seed": seed,
        "iw_samples": iw_samples,
        **nll_and_ppl("iw_nll"),  # and iw_ppl: both None when iw_samples is 0
        **nll_and_ppl("elbo_nll"),
        **nll_and_ppl("melbo_nll"),
        "melbo_num_sentences": melbo_n,
        "recon_nll_mean_z": float(per_sentence["recon_nll_mean_z"].mean()),
        "recon_nll_sample_z": float(per_sentence["recon_nll_sample_z"].mean()),
        **nll_and_ppl("iw_nll_wide"),
        "kl": float(per_sentence["kl"].mean()),
        "kl_code_energy": float(per_sentence["kl_code_energy"].mean()),
        "kl_variance_part": float(per_sentence["kl_variance_part"].mean()),
        "mi_whole_split": mi_whole_split.value,
        "mi_whole_split_se": mi_whole_split.standard_error,
        "mi_samples": mi_samples,
        "log_num_sentences": math.log(count),
        "mi_batch": mi_batch,
        "mi_batch_size": mi_batch_size,
        "active_units": active,
        "active_units_threshold": ACTIVE_UNIT_THRESHOLD,
        "active_units_relative": active_relative,
        "active_units_relative_threshold": ACTIVE_UNIT_THRESHOLD,
        "bleu4_corpus": metrics.corpus_bleu(hypotheses, references) if hypotheses else None,
        "bleu_signature": metrics.bleu_signature() if hypotheses else None,
        "bleu1_sentence_mean": metrics.mean_sentence_bleu1(hypotheses, references) if hypotheses else None,
        "reconstruction_eos_share": None if ended is None else float(ended.double().mean()),
        # The relative rule (absolute for an AE): MIM's near-delta posteriors have means that vary by less than
        # the absolute 0.01 and still tell sentences apart.
        "collapse_rule": "active units (absolute)" if model.config.objective == "ae" else "active units (relative)",
        "collapsed": collapse_units == 0 or mi_whole_split.value < COLLAPSE_MI_NATS,
        # An AE decodes z = posterior mean, so its posterior variance (and with it q's density) is never trained:
        # IW-NLL, ELBO-NLL and KL then describe an arbitrary q, not the model.
        "likelihoods_meaningful": model.config.objective != "ae",
    }


@torch.no_grad()
def encode_split(model, batches, likelihood: bool = True) -> dict[str, torch.Tensor]:
    """Posterior mean and logvar, log p(x|z = posterior mean) and the number of predicted targets of every sentence,
    in batch order, on the CPU (what the evaluation plots need; deterministic, no sampling). likelihood=False skips
    the decoder pass (and the "log_likelihood_mean_z" column)."""
    columns = defaultdict(list)
    with eval_mode(model):
        for batch in batches:
            ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
            mean, logvar = model.encode(ids, mask)
            columns["mean"].append(mean.cpu())
            columns["logvar"].append(logvar.cpu())
            if likelihood:
                columns["log_likelihood_mean_z"].append(model.log_likelihood(ids, mean, mask).double().cpu())
            columns["num_targets"].append(metrics.num_targets(ids, mask).cpu())
    return {key: torch.cat(values) for key, values in columns.items()}


@torch.no_grad()
def reconstruct_split(
    model, batches, tokenizer, mode: str = "mean", seed: int = 0, max_decode_length: int | None = None,
    progress: bool = True, ended=None, **decode_options,
) -> tuple[list[str], list[str]]:
    """(hypotheses, references) for every sentence, in batch order: greedy decoding of z = posterior mean
    (mode "mean") or of one z ~ q(z|x) (mode "sample", drawn from a generator seeded with seed + 1). `ended` and
    decode_options: as in `reconstruct_batch`."""
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode={mode!r}: must be 'mean' or 'sample'")
    if max_decode_length is None:
        max_decode_length = default_decode_length(model, tokenizer)
    generator = torch.Generator(device=model.device).manual_seed(seed + SAMPLE_SEED_OFFSET)
    hypotheses, references = [], []
    with eval_mode(model):
        for batch in _batches_with_progress(batches, progress, "reconstruct"):
            ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
            mean, logvar = model.encode(ids, mask)
            z = mean if mode == "mean" else gaussian.sample(mean, logvar, generator)
            batch_hypotheses, batch_references = reconstruct_batch(model, tokenizer, ids, z, max_decode_length, ended,
                                                                   **decode_options)
            hypotheses += batch_hypotheses
            references += batch_references
    return hypotheses, references
