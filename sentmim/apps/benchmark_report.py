"""The benchmark's report (see sentmim.apps.benchmark): results.md (one labelled table), samples.md
(reconstructions and interpolations per model) and the plots, all from the records `run_benchmark` collects."""

import math
from pathlib import Path

from sentmim.files import read_jsonl, write_json_atomic, write_text_atomic
from sentmim.plots import metric_curve, new_figure, save_figure
from sentmim.reporting import number

NOT_APPLICABLE = "n/a (AE)"


def summary_line(record: dict) -> str:
    m = record["metrics"]
    latent = (f"KL {m['kl']:.2f}, MI {_estimate(m, 'mi_whole_split')}, AU (relative) "
              f"{m.get('active_units_relative')}/{record['latent_size']}, " if likelihoods_meaningful(record) else "")
    return (f"{latent}AU {m['active_units']}/{record['latent_size']}, BLEU-4 {_cell(m['bleu4_corpus'], 1)}, "
            f"{record['wall_seconds']:.0f} s")


def _estimate(m: dict, key: str, digits: int = 2) -> str:
    """"value +- SE" of an estimate that has one (results from before the SE existed: the value alone)."""
    se = m.get(f"{key}_se")
    return _cell(m[key], digits) + ("" if se is None else f" ± {se:.{digits}f}")


# ---------------------------------------------------------------------------------------------------------------------
# Report: results.json, results.md, samples.md
# ---------------------------------------------------------------------------------------------------------------------


def likelihoods_meaningful(record: dict) -> bool:
    """An AE decodes the posterior mean, so its q(z|x) variance is never trained: every number that samples or
    scores q (IW-NLL, ELBO, MELBO, KL, MI) describes an arbitrary distribution, not the model."""
    return record["variant"] != "ae" and record["metrics"].get("likelihoods_meaningful", True)


def _cell(value, digits: int) -> str:
    return number(value, digits, missing="-")


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _wide_bound(m: dict) -> str:
    """The widened-proposal IW-NLL with its width, or "-" where it was not computed."""
    if m.get("iw_nll_wide") is None:
        return "-"
    return f"{m['iw_nll_wide']:.2f} (s={m['iw_proposal_width']:g})"


def format_results_table(records: list[dict]) -> str:
    """The comparison table (latent space, likelihoods, reconstruction) as markdown; q-dependent numbers of an AE
    read "n/a (AE)" instead of a number."""
    if not records:
        return "(no model finished yet)"
    first = records[0]["metrics"]
    samples = first.get("mi_samples")
    columns = [
        "model", "latent", "KL (nats)", "KL: code energy", "KL: variance part",
        f"MI whole-split ± SE (He et al., {samples} z per sentence, cap log N = {first['log_num_sentences']:.2f})",
        f"MI per batch of {first['mi_batch_size']} (cap {math.log(first['mi_batch_size']):.2f})",
        "AU (absolute, Var >= 0.01)", "AU (relative, Var / E[var] >= 0.01)",
        f"IW-NLL (K={first['iw_samples']}, proposal q)", f"IW-NLL (K={first['iw_samples']}, widened proposal, s)",
        "ELBO-NLL", "MELBO-NLL (paper's measure, not a likelihood)", "BLEU-4 (sacreBLEU)", "BLEU-1 (mean sentence)",
        "steps", "train time",
    ]
    rows = []
    for record in records:
        m = record["metrics"]
        meaningful = likelihoods_meaningful(record)

        def q_dependent(value, digits=2, meaningful=meaningful):
            return (value if isinstance(value, str) else _cell(value, digits)) if meaningful else NOT_APPLICABLE

        relative = m.get("active_units_relative")
        rows.append([
            record["label"], str(record["latent_size"]), q_dependent(m["kl"]), q_dependent(m.get("kl_code_energy")),
            q_dependent(m.get("kl_variance_part")), q_dependent(_estimate(m, "mi_whole_split")),
            q_dependent(m["mi_batch"]), f"{m['active_units']}/{record['latent_size']}",
            q_dependent("-" if relative is None else f"{relative}/{record['latent_size']}"),
            q_dependent(m["iw_nll"]), q_dependent(_wide_bound(m)), q_dependent(m["elbo_nll"]),
            q_dependent(m["melbo_nll"]), _cell(m["bleu4_corpus"], 1), _cell(m["bleu1_sentence_mean"], 3),
            str(record["train"].get("step", "-")), _duration(record["train"].get("train_seconds")),
        ])
    return _markdown_table(columns, rows)


def format_samples_table(records: list[dict]) -> str:
    """Decoding quality side by side: how often reconstructions end with EOS (and with generate()'s remedy), and
    the quality of greedy decodings of codes from the standard prior and from the aggregate posterior."""
    if not records:
        return "(no model finished yet)"
    first = records[0]["metrics"]
    remedy = first.get("reconstruction_remedy", "-")
    columns = ["model", "latent", "recon. ending with EOS", f"recon. ending with EOS ({remedy})",
               f"BLEU-4 ({remedy})"]
    for prior in ("N(0, I)", "aggregate posterior"):
        columns += [f"{prior}: distinct-1", "distinct-2", "ending with EOS", "LM PPL"]
    rows = []
    for record in records:
        m = record["metrics"]
        cells = [record["label"], str(record["latent_size"]), _cell(m.get("reconstruction_eos_share"), 2),
                 _cell(m.get("reconstruction_eos_share_remedy"), 2), _cell(m.get("bleu4_corpus_remedy"), 1)]
        for prior in ("standard", "aggregate"):
            cells += [_cell(m.get(f"samples_{prior}_{name}"), digits)
                      for name, digits in (("distinct_1", 3), ("distinct_2", 3), ("eos_share", 2), ("lm_ppl", 1))]
        rows.append(cells)
    return _markdown_table(columns, rows)


COLUMN_NOTES = (
    "Columns: NLLs are nats per sentence; PPL = exp(sum NLL / sum predicted targets (words + EOS)). IW-NLL is the "
    "only likelihood comparable across objectives; both IW columns are valid stochastic upper bounds on -log p(x): "
    "the first with q(z|x) as the proposal, the second with q widened to N(mean, var + s^2), s chosen on validation "
    "sentences (never the scored ones); a near-delta q (MIM at its logvar floor) makes the first loose. "
    "ELBO-NLL = -log p(x|z) + KL with one z ~ q(z|x). MELBO-NLL = -log p(x|z) + log N is what the sentenceMIM paper "
    "reports for MIM: it is NOT a bound on -log p(x), never compare it with IW-NLL or ELBO. KL = code energy "
    "(1/2 sum mean^2) + variance part (1/2 sum (var - log var - 1), set by the widths alone: ~4.5 nats per "
    "dimension at MIM's floor, whatever the sentence). MI ± its Monte Carlo standard error over the z draws. Active "
    "units: absolute rule Var_x E[z|x] >= 0.01 (He et al.; calibrated for sigma ~ 1, undercounts MIM), relative rule "
    "Var_x E[z|x] / E_x Var(z|x) >= 0.01 (scale-free). BLEU scores greedy decoding of the posterior mean: BLEU-4 "
    "corpus (0-100) and mean sentence BLEU-1 (0-1, the sentenceMIM demo's number). "
    f"{NOT_APPLICABLE}: an AE never trains the variance of q(z|x), so its KL, MI and every likelihood that samples "
    "q describe an arbitrary distribution, not the model. Train time: the training loop, validation included."
)

SAMPLE_NOTES = (
    "Decoding: 'recon. ending with EOS' is the share of greedy reconstructions of the test sentences that emit EOS "
    "(the rest run to the length limit, usually in a loop); the next two columns decode the same posterior means "
    "with generate()'s no_repeat_ngram_size remedy. Samples: {count} codes from each prior, decoded greedily: the "
    "standard prior N(0, I), and the aggregate posterior (a Gaussian fitted to the training split's codes after "
    "training, aggregate_posterior.safetensors). distinct-n = distinct n-grams / all n-grams over the samples; "
    "LM PPL = their perplexity under the reference language model ({lm}). Lower PPL is more fluent, but repetitive "
    "samples score low too: read it with distinct-n and the EOS share."
)


def _schedule_notes(settings: dict, schedules: dict) -> list[str]:
    """The KL schedules the VAE variants trained with (`schedules`: each variant's effective kl_* options)."""
    logistic, cyclical = schedules["vae-logistic"], schedules["vae-cyclical"]
    k, x0, steps = logistic["kl_logistic_k"], logistic["kl_logistic_x0"], settings["max_steps"]
    notes = ["- sMIM: the paper's objective, -log p(x|z) - 1/2 [log q(z|x) + log N(z; 0, I)], from the first step"]
    if "mim-warmup" in schedules:
        warmup = schedules["mim-warmup"].get("mim_warmup_steps", 0)
        notes.append(f"- sMIM + warm-up: the two prior terms weighted by w_t = min(1, t / {warmup}), rising linearly "
                     f"over the first {warmup} steps; the paper's objective after that")
    notes.append(f"- vae-logistic: beta_t = 1 / (1 + exp(-{k:.4g} (t - {x0}))); the sentenceMIM demo: k 0.0025, "
                 "x0 2500")
    if steps is not None and x0 >= steps:
        notes.append(f"  - NOTE: x0 = {x0} lies beyond the {steps}-step budget: beta stays below 0.5 for the whole "
                     "run, so this VAE is barely regularised")
    notes.append(f"- vae-cyclical: beta rises linearly over the first {settings['kl_cycle_ratio']:.0%} of each "
                 f"{cyclical['kl_cycle_steps']}-step cycle, then holds at 1; free bits {settings['free_bits']} nats "
                 "per latent dimension (batch average)")
    return notes


def _model_description(model: dict) -> str:
    if model.get("backbone"):  # its own config holds the sizes
        training = (f"LoRA r {model['lora_r']}" if model.get("lora_r") else
                    "frozen" if model.get("freeze_backbone") else "fine-tuned in full")
        return (f"the pretrained backbone `{model['backbone']}` ({training}), pooling "
                f"{model.get('backbone_pooling') or 'its default'}, {model.get('num_memory_slots') or 4} memory slots")
    return (f"{model['architecture'].upper()}, embedding {model['embedding_size']}, hidden {model['hidden_size']}, "
            f"{model['num_layers']} layer(s), {'tied' if model['tie_word_embeddings'] else 'untied'} embeddings")


def _setup_paragraph(results: dict) -> str:
    s, model, records, machine = results["settings"], results["model"], results["models"], results["machine"]
    budget = f"{s['max_steps']} steps" if s["max_steps"] else f"up to {s['epochs']:g} epochs"
    scored = records[0]["metrics"]["num_sentences"] if records else "?"
    vocabularies = {record.get("vocabulary_hash") for record in records}
    shared = "one shared vocabulary" if len(vocabularies) <= 1 else "WARNING: the vocabularies differ"
    wall = f"total wall time {_duration(results['wall_seconds'])}" if "wall_seconds" in results else "in progress"
    return (
        f"Data: `{s['dataset']}`; models scored on the first {scored} `{s['test_split']}` sentences. Every model: "
        f"{_model_description(model)}, batch {s['batch_size']}, Adam lr "
        f"{s['learning_rate']:g} ({s['lr_scheduler']}), {budget}, seed {s['seed']}; {shared}. Machine: "
        f"{machine['cpu']} ({machine['cpu_count']} cores), torch {machine['torch']}, "
        f"{machine['torch_threads']} thread(s), {machine['gpu'] or 'no GPU'}; {wall}."
    )


def format_report(results: dict) -> str:
    """results.md: how the numbers were made, the table, what its columns mean."""
    records = results["models"]
    command = f"`{results.get('command') or 'run_benchmark(...)'}`"
    if results.get("preset"):
        command += f" (preset `{results['preset']}`)"
    lm = results.get("reference_lm")
    lm_text = ("GRU, trained on the training split with the same tokenizer and budget, test PPL "
               f"{lm['test_ppl']:.1f}" if lm else "not trained")
    count = records[0]["metrics"].get("samples_count", "?") if records else "?"
    lines = ["# sMIM vs sVAE vs AE: posterior collapse measured side by side", "", f"Command: {command}", "",
             _setup_paragraph(results), "", format_results_table(records), "", COLUMN_NOTES, "",
             *_schedule_notes(results["settings"], results["schedules"])]
    signature = next((r["metrics"]["bleu_signature"] for r in records if r["metrics"].get("bleu_signature")), None)
    if signature:
        lines.append(f"- BLEU signature: `{signature}`")
    flagged = [r for r in records if likelihoods_meaningful(r) and r["metrics"]["collapsed"]]
    if flagged:
        lines += ["", "Flagged by the collapse rule (no active unit by the relative rule, or whole-split MI < 0.05 "
                  "nats), with the numbers behind it: " + "; ".join(_collapse_evidence(r["name"], r["metrics"])
                                                                    for r in flagged) + "."]
    lines += ["", "## Decoding and samples", "", format_samples_table(records), "",
              SAMPLE_NOTES.format(count=count, lm=lm_text)]
    claims = _claims(records)
    if claims:
        lines += ["", *claims]
    plots = ["kl_mi_during_training.png", "active_units_vs_latent.png", "bleu_vs_latent.png", "latent_<model>.png"]
    lines += ["", (f"Plots in `plots/`: {', '.join(plots)}. Reconstructions, interpolations and samples: "
                   "`samples.md`.")]
    return "\n".join(lines) + "\n"


def _collapse_evidence(name: str, scores: dict) -> str:
    """One flagged model: its active units and MI, and whether the MI contradicts the active-unit count."""
    relative = scores.get("active_units_relative")
    units = f"{scores['active_units']} active units" + ("" if relative is None else f" ({relative} relative)")
    evidence = f"{name} ({units}, MI {_estimate(scores, 'mi_whole_split')} nats"
    cap = scores["log_num_sentences"]
    if scores["mi_whole_split"] >= 0.5 * cap:  # means vary less than the threshold, posterior variances far less
        evidence += f", near its cap log N = {cap:.2f}: not collapsed, the means spread below the AU threshold"
    return evidence + ")"


def _best_bound(m: dict):
    """The tighter of a model's two valid IW bounds (None when neither was computed)."""
    bounds = [m[key] for key in ("iw_nll", "iw_nll_wide") if m.get(key) is not None]
    return min(bounds) if bounds else None


def _claims(records: list[dict]) -> list[str]:
    """Per latent size: sMIM's BLEU-4 (the better variant) against the AE's; whether sVAE beta = 1 collapsed; and the
    moonshot, per sMIM variant: how far its best valid bound is from the best non-collapsed VAE's, beside its BLEU-4
    against the AE's (met by one model with both: bound within +10% and BLEU-4 >= 0.9x the AE's)."""
    lines = ["## What the numbers say, per latent size", ""]
    for size in dict.fromkeys(r["latent_size"] for r in records):
        group = {r["variant"]: r for r in records if r["latent_size"] == size}
        mims = [group[v] for v in ("mim", "mim-warmup") if v in group]
        ae_bleu = group["ae"]["metrics"]["bleu4_corpus"] if "ae" in group else None

        def bleu_ratio(record, ae_bleu=ae_bleu):
            return record["metrics"]["bleu4_corpus"] / ae_bleu if ae_bleu else float("nan")

        parts = []
        if mims and ae_bleu is not None:
            best = max(mims, key=lambda r: r["metrics"]["bleu4_corpus"] or 0)
            ratio = bleu_ratio(best)
            parts.append(f"best sMIM ({best['label']}) BLEU-4 {best['metrics']['bleu4_corpus']:.2f} = {ratio:.3f}x "
                         f"the AE's {ae_bleu:.2f} ({'meets' if ratio >= 0.9 else 'misses'} >= 0.9x)")
        if "vae" in group:
            m = group["vae"]["metrics"]
            parts.append(f"sVAE beta = 1 {'collapsed' if m['collapsed'] else 'did not collapse'} (KL {m['kl']:.2f}, "
                         f"MI {_estimate(m, 'mi_whole_split')}, AU relative {m.get('active_units_relative')})")
        vaes = [r for v, r in group.items() if v.startswith("vae") and not r["metrics"]["collapsed"]
                and _best_bound(r["metrics"]) is not None]
        if vaes:
            vae = min(vaes, key=lambda r: _best_bound(r["metrics"]))
            reference = _best_bound(vae["metrics"])
            for mim in (r for r in mims if _best_bound(r["metrics"]) is not None):
                gap, ratio = _best_bound(mim["metrics"]) / reference - 1, bleu_ratio(mim)
                met = gap <= 0.10 and ratio >= 0.9
                parts.append(f"moonshot, {mim['label']}: best valid bound {_best_bound(mim['metrics']):.1f} nats, "
                             f"{gap:+.0%} from the best non-collapsed VAE's {reference:.1f} ({vae['label']}), "
                             f"BLEU-4 {ratio:.2f}x the AE's ({'met' if met else 'not met'})")
        if parts:
            lines.append(f"- latent {size}: " + "; ".join(parts) + ".")
    return lines if len(lines) > 2 else []


def format_samples(records: list[dict]) -> str:
    """Reconstructions of the same test sentences by every model, then one interpolation per model."""
    lines = ["# Reconstructions and interpolations", "", SAMPLES_NOTE]
    for latent_size in dict.fromkeys(r["latent_size"] for r in records):
        group = [r for r in records if r["latent_size"] == latent_size]
        lines += ["", f"## Latent size {latent_size}", "", "### Reconstructions"]
        for index, example in enumerate(group[0]["samples"]["reconstructions"]):
            lines += ["", f"- input: `{example['input']}`"]
            lines += [f"  - {r['label']}: `{r['samples']['reconstructions'][index]['output']}`" for r in group]
        path = group[0]["samples"]["interpolation"]
        lines += ["", "### Interpolations", "", f"From `{path['from']}` to `{path['to']}`."]
        for record in group:
            lines += ["", f"{record['label']}:", ""]
            lines += [f"{step}. `{text}`" for step, text in enumerate(record["samples"]["interpolation"]["sentences"])]
        lines += ["", "### Samples (greedy decoding of codes from each prior)"]
        for record in group:
            for prior, texts in record["samples"].get("samples", {}).items():
                name = "N(0, I)" if prior == "standard" else "aggregate posterior"
                lines += ["", f"{record['label']}, {name}:", ""] + [f"- `{text}`" for text in texts]
    return "\n".join(lines) + "\n"


SAMPLES_NOTE = (
    "Greedy decoding of the posterior mean. Interpolations decode evenly spaced points on the straight line between "
    "the posterior means of two test sentences, endpoints included."
)


def write_report(output_dir: Path, results: dict) -> None:
    write_json_atomic(output_dir / "results.json", results)
    write_text_atomic(output_dir / "results.md", format_report(results))
    write_text_atomic(output_dir / "samples.md", format_samples(results["models"]))


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------


def validation_curve(log_path: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` at the validation events of a run's log.jsonl (a last line cut by an interruption is
    dropped, as in the training-curve plots)."""
    return metric_curve(read_jsonl(log_path) if log_path.is_file() else [], key)


def write_plots(output_dir: Path, results: dict) -> list[Path]:
    """KL and MI during training per latent size, active units and BLEU against latent size."""
    records = results["models"]
    if not records:
        return []
    sizes = sorted({r["latent_size"] for r in records})
    variants = list(dict.fromkeys(r["variant"] for r in records))
    colours = {variant: f"C{index}" for index, variant in enumerate(variants)}
    labels = {r["variant"]: r["label"] for r in records}
    plots = output_dir / "plots"
    paths = []

    # 1. KL and whole-split MI at each validation, one column per latent size (AE left out: its q is untrained).
    figure, axes = new_figure(2, len(sizes), size=(4.2 * len(sizes), 6.4), sharex=True)
    for column, size in enumerate(sizes):
        for record in (r for r in records if r["latent_size"] == size and likelihoods_meaningful(r)):
            log_path = output_dir / record["model_dir"] / "log.jsonl"
            for row, key in enumerate(("val_kl", "val_mi_whole_split")):
                steps, values = validation_curve(log_path, key)
                axes[row, column].plot(steps, values, "o-", markersize=3, color=colours[record["variant"]],
                                       label=record["label"])
        axes[0, column].set_title(f"latent {size}: KL(q(z|x) || N(0, I))")
        if max((value for line in axes[0, column].get_lines() for value in line.get_ydata()), default=0) > 10:
            axes[0, column].set_yscale("symlog", linthresh=1.0)  # a collapsed ~0 and MIM's ~100 nats both show
        axes[1, column].set_title(f"latent {size}: MI, validation split")
        axes[1, column].set_xlabel("training step")
    axes[0, 0].set_ylabel("nats per sentence")
    axes[1, 0].set_ylabel("nats (He et al., whole split)")
    if axes[0, 0].get_lines():
        axes[0, 0].legend(fontsize="small")
    paths.append(save_figure(figure, plots / "kl_mi_during_training.png"))

    # 2. Active units and 3. BLEU against latent size, one line per model variant.
    def against_latent(panels, path):
        figure, axes = new_figure(1, len(panels), size=(5.2 * len(panels), 4.2))
        for ax, (key, title) in zip(axes[0], panels, strict=True):
            for variant in variants:
                chosen = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["latent_size"])
                ax.plot([r["latent_size"] for r in chosen], [r["metrics"].get(key) or 0.0 for r in chosen], "o-",
                        color=colours[variant], label=labels[variant])
            if key.startswith("active_units"):
                ax.plot(sizes, sizes, "k--", linewidth=0.8, label="all units active")
                ax.set_yscale("symlog", linthresh=1.0)  # 0 (collapse) and hundreds of units on one axis
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(size) for size in sizes])
            ax.set_xlabel("latent size")
            ax.set_title(title)
            ax.legend(fontsize="small")
        paths.append(save_figure(figure, path))

    against_latent([("active_units", "active units, absolute (Var_x E[z|x] >= 0.01)"),
                    ("active_units_relative", "active units, relative (Var_x E[z|x] / E_x Var(z|x) >= 0.01)")],
                   plots / "active_units_vs_latent.png")
    against_latent([("bleu4_corpus", "reconstruction BLEU-4, sacreBLEU corpus (0-100)"),
                    ("bleu1_sentence_mean", "reconstruction BLEU-1, mean sentence (0-1)")],
                   plots / "bleu_vs_latent.png")
    return paths
