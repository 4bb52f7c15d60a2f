"""Evaluate a sentence latent-variable model over a whole split: likelihoods, latent statistics, reconstruction.

    results = evaluate(model, batches, tokenizer)      # batches: {"input_ids", "attention_mask"} dicts, right-padded
    print(format_results(results))
    save_results(results, "eval_results_test.json")
    results = evaluate_folder("runs/ptb-mim", "../shared/data/ptb", split="test")   # the same from a saved folder

What is measured (docs/metrics.md; NLLs are nats per sentence averaged over the split, PPL = exp(sum NLL /
sum predicted targets), where the targets are the words + EOS):

- IW-NLL: importance-weighted -log p(x) with K samples, the only likelihood comparable across MIM, VAE and AE.
- ELBO-NLL: -log p(x|z) + KL with one z ~ q(z|x), an upper bound on -log p(x).
- MELBO-NLL: -log p(x|z) + log N with one z ~ q(z|x), the sentenceMIM paper's number. NOT a likelihood bound.
- the reconstruction term -log p(x|z) at z = posterior mean and at one posterior sample, and the closed-form KL.
- MI I_q(x; z) with He et al.'s estimator over the whole split (cap ~ log N) and per batch of 32 (cap ~ log 32),
  active units, and reconstruction BLEU (greedy decoding of the posterior mean).

Randomness: every sample comes from a `torch.Generator`, so a seed fixes every number. The K samples of IW-NLL come
from a generator seeded with `seed`, consumed batch after batch. The one posterior sample z of ELBO-NLL, MELBO-NLL,
the reconstruction term and MI comes from generators all seeded with `seed + 1`, so these all use the same z (per
sentence, ELBO-NLL - MELBO-NLL = KL - log N exactly), whether or not IW-NLL is computed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import gaussian, metrics
from .tokenization import decode_keep_unknown

AE_WARNING = (
    "    objective=ae: q(z|x)'s variance is never trained (an AE decodes the posterior mean), so IW-NLL, ELBO-NLL,\n"
    "    their PPLs and the KL below describe an arbitrary q, not the model: do not compare them"
)
IW_SEED_OFFSET = 0  # generator seed of the IW-NLL samples: seed + 0
SAMPLE_SEED_OFFSET = 1  # generator seed of the single posterior sample z: seed + 1
COLLAPSE_MI_NATS = 0.05  # below this whole-split MI the latent carries (almost) nothing about the sentence
ACTIVE_UNIT_THRESHOLD = 0.01


# ---------------------------------------------------------------------------------------------------------------------
# Per-batch pieces
# ---------------------------------------------------------------------------------------------------------------------


def _generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def default_decode_length(model, tokenizer=None) -> int:
    """Generated tokens allowed per reconstruction (BOS excluded): the model's maximum length - 1, as in the
    pipeline, also bounded by the tokenizer's model_max_length."""
    limit = model.config.max_position_embeddings
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limit = min(limit, tokenizer_limit)
    return max(1, limit - 1)


def reconstruct_batch(model, tokenizer, input_ids, z, max_decode_length: int) -> tuple[list[str], list[str]]:
    """(hypotheses, references): greedy decoding of z, and the input sentences, as text.

    Both sides go through `decode_keep_unknown`, so <unk> stays a word on both sides (PTB references contain it).
    """
    generated = model.decode(z, max_length=max_decode_length)
    hypotheses = [text.strip() for text in decode_keep_unknown(tokenizer, generated)]
    references = [text.strip() for text in decode_keep_unknown(tokenizer, input_ids)]
    return hypotheses, references


def _batches_with_progress(batches, progress: bool, desc: str):
    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(batches, total=total, desc=desc, disable=not progress, unit="batch")


# ---------------------------------------------------------------------------------------------------------------------
# Whole-split evaluation
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _score_split(model, batches, tokenizer, iw_samples, bleu, num_sentences, seed, progress, max_decode_length):
    """Per-sentence numbers for every sentence of the split, in batch order, on the CPU; plus the BLEU texts."""
    device = model.device
    iw_generator = _generator(seed + IW_SEED_OFFSET, device)
    z_generator = _generator(seed + SAMPLE_SEED_OFFSET, device)
    columns = defaultdict(list)
    hypotheses, references = [], []
    for batch in _batches_with_progress(batches, progress, "evaluate"):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        mean, logvar = model.encode(ids, mask)
        z = gaussian.sample(mean, logvar, z_generator)
        kl = metrics.kl_divergence(mean.double(), logvar.double())
        recon_nll_sample_z = -model.log_likelihood(ids, z, mask).double()
        row = {
            "mean": mean,
            "logvar": logvar,
            "z": z,
            "num_targets": metrics.num_targets(ids, mask),
            "kl": kl,
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
        for key, value in row.items():
            columns[key].append(value.cpu())  # the split's latents stay on the CPU: 40k x 512 is small there
        if bleu:
            batch_hypotheses, batch_references = reconstruct_batch(model, tokenizer, ids, mean, max_decode_length)
            hypotheses += batch_hypotheses
            references += batch_references
    return {key: torch.cat(values) for key, values in columns.items()}, hypotheses, references


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
) -> dict:
    """Every metric of docs/metrics.md over a whole split, as a flat dict (keys name the definitions).

    Args:
        model: a SentenceMIMModel (evaluated in eval mode under no_grad; its training mode is restored after).
        batches: an iterable of {"input_ids", "attention_mask"} dicts, right-padded, BOS ... EOS (for example
            `sentmim.data.make_dataloader(..., shuffle=False)`). Iterated once when num_sentences is given, else
            materialised once to count the sentences first.
        tokenizer: needed for reconstruction BLEU; without it BLEU is skipped.
        iw_samples: K of IW-NLL (0 skips IW-NLL, the expensive part: K decoder passes per sentence).
        bleu: decode the posterior means greedily and score them against the inputs.
        mi_batch_size: b of the per-batch MI (He et al. use 32); batches are consecutive sentences in batch order.
        num_sentences: N of MELBO (log N is added to every sentence). Default: the number of sentences in batches.
        seed: seeds every sample (see the module docstring for which generator feeds what).
        max_decode_length: longest reconstruction in generated tokens; default from the model / tokenizer.
    """
    if iw_samples < 0:
        raise ValueError(f"iw_samples={iw_samples}: must be >= 0 (0 skips IW-NLL)")
    if num_sentences is None:
        batches = list(batches)
        num_sentences = sum(int(batch["input_ids"].shape[0]) for batch in batches)
    bleu = bool(bleu and tokenizer is not None)
    if max_decode_length is None:
        max_decode_length = default_decode_length(model, tokenizer)

    was_training = model.training
    model.eval()  # no dropout: the numbers are properties of the model, not of a dropout mask
    try:
        per_sentence, hypotheses, references = _score_split(
            model, batches, tokenizer, iw_samples, bleu, num_sentences, seed, progress, max_decode_length
        )
    finally:
        model.train(was_training)
    if "mean" not in per_sentence or per_sentence["mean"].shape[0] < 2:
        raise ValueError("evaluate needs at least 2 sentences (MI and active units are statistics of a split)")
    return _summarize(model, per_sentence, hypotheses, references, num_sentences, iw_samples, mi_batch_size, seed)


def _summarize(model, per_sentence, hypotheses, references, melbo_n, iw_samples, mi_batch_size, seed) -> dict:
    """The split-level numbers: means of per-sentence NLLs, perplexities, MI, active units, BLEU."""
    count = per_sentence["mean"].shape[0]
    total_targets = int(per_sentence["num_targets"].sum())

    def nll_and_ppl(key: str) -> tuple[float, float]:
        values = per_sentence[key]
        return float(values.mean()), metrics.perplexity(float(values.sum()), total_targets)

    iw_nll, iw_ppl = nll_and_ppl("iw_nll") if iw_samples > 0 else (None, None)
    elbo_nll, elbo_ppl = nll_and_ppl("elbo_nll")
    melbo_nll, melbo_ppl = nll_and_ppl("melbo_nll")
    means, logvars, z = per_sentence["mean"], per_sentence["logvar"], per_sentence["z"]
    # Both MI estimates use the z of ELBO / MELBO, so the whole-split and per-batch numbers differ only in the set.
    mi_whole_split = metrics.mutual_information(means, logvars, z=z, batch_size=None)
    mi_batch = metrics.mutual_information(means, logvars, z=z, batch_size=mi_batch_size)
    active = metrics.active_units(means, threshold=ACTIVE_UNIT_THRESHOLD)

    results = {
        "objective": model.config.objective,
        "architecture": model.config.architecture,
        "latent_size": model.config.latent_size,
        "num_sentences": count,
        "num_targets": total_targets,
        "seed": seed,
        "iw_samples": iw_samples,
        "iw_nll": iw_nll,
        "iw_ppl": iw_ppl,
        "elbo_nll": elbo_nll,
        "elbo_ppl": elbo_ppl,
        "melbo_nll": melbo_nll,
        "melbo_ppl": melbo_ppl,
        "melbo_num_sentences": melbo_n,
        "recon_nll_mean_z": float(per_sentence["recon_nll_mean_z"].mean()),
        "recon_nll_sample_z": float(per_sentence["recon_nll_sample_z"].mean()),
        "kl": float(per_sentence["kl"].mean()),
        "mi_whole_split": mi_whole_split,
        "log_num_sentences": math.log(count),
        "mi_batch": mi_batch,
        "mi_batch_size": mi_batch_size,
        "active_units": active,
        "active_units_threshold": ACTIVE_UNIT_THRESHOLD,
        "bleu4_corpus": None,
        "bleu_signature": None,
        "bleu1_sentence_mean": None,
        "collapsed": active == 0 or mi_whole_split < COLLAPSE_MI_NATS,
        # An AE decodes z = posterior mean, so its posterior variance (and with it q's density) is never trained:
        # IW-NLL, ELBO-NLL and KL then describe an arbitrary q, not the model.
        "likelihoods_meaningful": model.config.objective != "ae",
    }
    if hypotheses:
        results["bleu4_corpus"] = metrics.corpus_bleu(hypotheses, references)
        results["bleu_signature"] = metrics.bleu_signature()
        results["bleu1_sentence_mean"] = metrics.mean_sentence_bleu1(hypotheses, references)
    return results


@torch.no_grad()
def encode_split(model, batches, progress: bool = False, likelihood: bool = True) -> dict[str, torch.Tensor]:
    """Posterior mean and logvar, log p(x|z = posterior mean) and the number of predicted targets of every sentence,
    in batch order, on the CPU (what the evaluation plots need; deterministic, no sampling). likelihood=False skips
    the decoder pass (and the "log_likelihood_mean_z" column)."""
    was_training = model.training
    model.eval()
    columns = defaultdict(list)
    try:
        for batch in _batches_with_progress(batches, progress, "encode"):
            ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
            mean, logvar = model.encode(ids, mask)
            columns["mean"].append(mean.cpu())
            columns["logvar"].append(logvar.cpu())
            if likelihood:
                columns["log_likelihood_mean_z"].append(model.log_likelihood(ids, mean, mask).double().cpu())
            columns["num_targets"].append(metrics.num_targets(ids, mask).cpu())
    finally:
        model.train(was_training)
    return {key: torch.cat(values) for key, values in columns.items()}


@torch.no_grad()
def reconstruct_split(
    model, batches, tokenizer, mode: str = "mean", seed: int = 0, max_decode_length: int | None = None,
    progress: bool = True,
) -> tuple[list[str], list[str]]:
    """(hypotheses, references) for every sentence, in batch order: greedy decoding of z = posterior mean
    (mode "mean") or of one z ~ q(z|x) (mode "sample", drawn from a generator seeded with seed + 1)."""
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode={mode!r}: must be 'mean' or 'sample'")
    if max_decode_length is None:
        max_decode_length = default_decode_length(model, tokenizer)
    generator = _generator(seed + SAMPLE_SEED_OFFSET, model.device)
    was_training = model.training
    model.eval()
    hypotheses, references = [], []
    try:
        for batch in _batches_with_progress(batches, progress, "reconstruct"):
            ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
            mean, logvar = model.encode(ids, mask)
            z = mean if mode == "mean" else gaussian.sample(mean, logvar, generator)
            batch_hypotheses, batch_references = reconstruct_batch(model, tokenizer, ids, z, max_decode_length)
            hypotheses += batch_hypotheses
            references += batch_references
    finally:
        model.train(was_training)
    return hypotheses, references


# ---------------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------------


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "skipped"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_results(results: dict) -> str:
    """A readable table; every metric is labelled by its definition (which estimator, which cap, which BLEU)."""
    r = results
    cap_batch = math.log(r["mi_batch_size"])
    iw_label = f"IW-NLL (K={r['iw_samples']} importance samples; estimates -log p(x))"

    def line(label: str, value, unit: str = "") -> str:
        return f"  {label:<76} {_number(value):>10}{unit}"

    lines = [
        (
            f"sentmim evaluation: objective={r['objective']}  architecture={r['architecture']}  "
            f"latent_size={r['latent_size']}  seed={r['seed']}"
        ),
        f"  {r['num_sentences']} sentences, {r['num_targets']} predicted targets (words + EOS)",
        "Likelihood (NLL in nats per sentence; PPL = exp(sum NLL / sum predicted targets))",
        line(iw_label, r["iw_nll"]),
        line("IW-PPL", r["iw_ppl"]),
        line("ELBO-NLL (1 sample; an upper bound on -log p(x))", r["elbo_nll"]),
        line("ELBO-PPL", r["elbo_ppl"]),
        line(f"MELBO-NLL (sentenceMIM paper's measure, -log p(x|z) + log N, N={r['melbo_num_sentences']})",
             r["melbo_nll"]),
        line("MELBO-PPL", r["melbo_ppl"]),
        "    MELBO is NOT a likelihood bound; not comparable with IW-NLL or ELBO",
        line("Reconstruction -log p(x|z), z = posterior mean", r["recon_nll_mean_z"]),
        line("Reconstruction -log p(x|z), one z ~ q(z|x)", r["recon_nll_sample_z"]),
        *([AE_WARNING] if not r.get("likelihoods_meaningful", True) else []),
        "Latent space",
        line("KL(q(z|x) || N(0, I)) (closed form, mean per sentence)", r["kl"]),
        line(f"MI whole-split (He et al. estimator, cap log N = {r['log_num_sentences']:.3f})", r["mi_whole_split"]),
        line(f"MI per batch of {r['mi_batch_size']} (cap log {r['mi_batch_size']} = {cap_batch:.3f})", r["mi_batch"]),
        line(f"Active units (dims with Var_x E[z|x] >= {r['active_units_threshold']})", r["active_units"],
             f" / {r['latent_size']}"),
        "Reconstruction (greedy decoding of the posterior mean)",
    ]
    if r.get("bleu4_corpus") is None:
        lines.append("  BLEU skipped (no tokenizer, or bleu=False)")
    else:
        lines += [
            line("BLEU-4 corpus (sacreBLEU, 0-100)", r["bleu4_corpus"]),
            f"    signature {r['bleu_signature']}",
            line("BLEU-1 mean sentence (0-1; sentenceMIM demo)", r["bleu1_sentence_mean"]),
        ]
    if r["collapsed"]:
        reasons = []
        if r["active_units"] == 0:
            reasons.append(f"no active unit (every Var_x E[z_d|x] < {r['active_units_threshold']})")
        if r["mi_whole_split"] < COLLAPSE_MI_NATS:
            reasons.append(f"whole-split MI {r['mi_whole_split']:.3f} nats < {COLLAPSE_MI_NATS}")
        if r["mi_whole_split"] < COLLAPSE_MI_NATS:
            lines.append(f"WARNING: posterior collapse: {' and '.join(reasons)}: z carries (almost) nothing about x")
        else:  # tiny posterior variances (MIM at its logvar floor) make even close means distinguishable
            lines.append(
                f"WARNING: possible posterior collapse: {reasons[0]}; but the whole-split MI is "
                f"{r['mi_whole_split']:.3f} nats, so z still tells sentences apart (the means vary little, the "
                "posterior variances even less): check the MI before calling it collapse"
            )
    return "\n".join(lines)


def save_results(results: dict, path: str | os.PathLike) -> Path:
    """Write results as JSON atomically (a temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------------------------
# From a saved folder and any dataset
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """`datasets` (load, map, filter) and `transformers` (loading weights) draw their own progress bars:
    progress=False must silence those too. The global switches are restored on exit."""
    import datasets
    from transformers.utils import logging as transformers_logging

    switches = [
        (datasets.are_progress_bars_disabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
        (lambda: not transformers_logging.is_progress_bar_enabled(), transformers_logging.disable_progress_bar,
         transformers_logging.enable_progress_bar),
    ]
    restore = [enable for is_disabled, _, enable in switches if not is_disabled()]
    if not enabled:
        for _, disable, _ in switches:
            disable()
    try:
        yield
    finally:
        for enable in restore:
            enable()


def load_split_texts(dataset, dataset_config=None, split: str = "test", text_column=None, max_sentences=None):
    """The cleaned "text" column of one split (a `datasets.Dataset`), in file order.

    A plain split name loads all splits the way training does (a missing validation split is carved from train with
    the default fraction and seed), so "validation" and "train" mean the same sentences as during training. A slice
    such as "test[:100]" is passed to `load_text_dataset` as is, with no carving.
    """
    from .data import DataError, load_text_dataset
    from .preprocessing import clean_dataset

    if any(char in split for char in "[+"):
        splits = load_text_dataset(dataset, dataset_config, split=split, text_column=text_column,
                                   validation_fraction=0.0)
        texts = next(iter(splits.values()))
    else:
        splits = load_text_dataset(dataset, dataset_config, text_column=text_column)
        if split not in splits:
            raise DataError(f"no split {split!r} in {str(dataset)!r}; available splits: {', '.join(splits)}")
        texts = splits[split]
    texts = clean_dataset(texts)
    if max_sentences is not None:
        texts = texts.select(range(min(max_sentences, len(texts))))
    return texts


def load_eval_batches(tokenizer, texts, batch_size: int = 64, max_length: int = 128):
    """(loader, stats): padded batches over a split of texts in a fixed order (length-bucketed, not shuffled).

    Sentences longer than max_length are truncated (EOS kept), never dropped, so every sentence counts;
    stats["num_truncated"] says how many. The loader's `batch_sampler` gives the dataset index of every row.
    """
    from .batching import make_dataloader
    from .preprocessing import tokenize_dataset

    tokenized, stats = tokenize_dataset(texts, tokenizer, max_length=max_length, overlong="truncate")
    loader = make_dataloader(tokenized, batch_size, pad_token_id=tokenizer.pad_token_id, shuffle=False)
    return loader, stats


def loader_order(loader) -> list[int]:
    """Dataset indices of the rows of an unshuffled `make_dataloader` loader, in the order the batches come."""
    return [index for batch in loader.batch_sampler for index in batch]


def file_safe(split: str) -> str:
    """A split spec as a file-name part: "test[:100]" -> "test_100"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"


def evaluate_folder(
    model_dir,
    dataset,
    dataset_config=None,
    split: str = "test",
    text_column=None,
    batch_size: int = 64,
    iw_samples: int = 500,
    max_sentences: int | None = None,
    seed: int = 0,
    plots_dir=None,
    progress: bool = True,
    device=None,
) -> dict:
    """Evaluate a saved model (model + tokenizer in one folder) on a split of any dataset.

    Writes eval_results_{split}.json into model_dir and, when plots_dir is given, the evaluation plots there.
    """
    from .pipeline import SentenceMIMPipeline

    model_dir = Path(model_dir)
    with library_progress_bars(progress):
        pipe = SentenceMIMPipeline.from_pretrained(model_dir, device=device)  # says so when the tokenizer is missing
        texts = load_split_texts(dataset, dataset_config, split, text_column, max_sentences)
        loader, stats = load_eval_batches(pipe.tokenizer, texts, batch_size, max_length=pipe.max_length)
    results = evaluate(pipe.model, loader, pipe.tokenizer, iw_samples=iw_samples, seed=seed, progress=progress)
    results.update(
        model_dir=str(model_dir), dataset=str(dataset), dataset_config=dataset_config, split=split,
        max_length=pipe.max_length, num_truncated=stats["num_truncated"],
    )
    save_results(results, model_dir / f"eval_results_{file_safe(split)}.json")
    if plots_dir is not None:
        from .plots import write_evaluation_plots

        write_evaluation_plots(pipe.model, loader, plots_dir)
    return results
