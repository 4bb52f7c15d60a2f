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
    latent = f"KL {m['kl']:.2f}, MI {m['mi_whole_split']:.2f}, " if likelihoods_meaningful(record) else ""
    return (f"{latent}AU {m['active_units']}/{record['latent_size']}, BLEU-4 {_cell(m['bleu4_corpus'], 1)}, "
            f"{record['wall_seconds']:.0f} s")


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


def format_results_table(records: list[dict]) -> str:
    """The comparison table as markdown; q-dependent numbers of an AE read "n/a (AE)" instead of a number."""
    if not records:
        return "(no model finished yet)"
    first = records[0]["metrics"]
    columns = [
        "model", "latent", "KL (nats)", f"MI whole-split (He et al., cap log N = {first['log_num_sentences']:.2f})",
        f"MI per batch of {first['mi_batch_size']} (cap {math.log(first['mi_batch_size']):.2f})",
        "active units", f"IW-NLL (K={first['iw_samples']})", "IW-PPL", "ELBO-NLL",
        "MELBO-NLL (paper's measure, not a likelihood)", "BLEU-4 (sacreBLEU)", "BLEU-1 (mean sentence)", "steps",
        "train time",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        m = record["metrics"]
        meaningful = likelihoods_meaningful(record)

        def q_dependent(value, digits=2, meaningful=meaningful):
            return _cell(value, digits) if meaningful else NOT_APPLICABLE

        cells = [
            record["label"], str(record["latent_size"]), q_dependent(m["kl"]), q_dependent(m["mi_whole_split"]),
            q_dependent(m["mi_batch"]), f"{m['active_units']}/{record['latent_size']}", q_dependent(m["iw_nll"]),
            q_dependent(m["iw_ppl"], 1), q_dependent(m["elbo_nll"]), q_dependent(m["melbo_nll"]),
            _cell(m["bleu4_corpus"], 1), _cell(m["bleu1_sentence_mean"], 3), str(record["train"].get("step", "-")),
            _duration(record["train"].get("train_seconds")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMN_NOTES = (
    "Columns: NLLs are nats per sentence; PPL = exp(sum NLL / sum predicted targets (words + EOS)). IW-NLL is the "
    "only likelihood comparable across objectives. ELBO-NLL = -log p(x|z) + KL with one z ~ q(z|x). MELBO-NLL = "
    "-log p(x|z) + log N is what the sentenceMIM paper reports for MIM: it is NOT a bound on -log p(x), never compare "
    "it with IW-NLL or ELBO. Active units: dimensions with Var_x E[z|x] >= 0.01. BLEU scores greedy decoding of the "
    "posterior mean: BLEU-4 corpus (0-100) and mean sentence BLEU-1 (0-1, the sentenceMIM demo's number). "
    f"{NOT_APPLICABLE}: an AE never trains the variance of q(z|x), so its KL, MI and every likelihood that samples "
    "q describe an arbitrary distribution, not the model. Train time: the training loop, validation included."
)


def _schedule_notes(settings: dict, schedules: dict) -> list[str]:
    """The KL schedules the VAE variants trained with (`schedules`: each variant's effective kl_* options)."""
    logistic, cyclical = schedules["vae-logistic"], schedules["vae-cyclical"]
    k, x0, steps = logistic["kl_logistic_k"], logistic["kl_logistic_x0"], settings["max_steps"]
    notes = [f"- vae-logistic: beta_t = 1 / (1 + exp(-{k:.4g} (t - {x0}))); the sentenceMIM demo: k 0.0025, x0 2500"]
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
    lines = ["# sMIM vs sVAE vs AE: posterior collapse measured side by side", "", f"Command: {command}", "",
             _setup_paragraph(results), "", format_results_table(records), "", COLUMN_NOTES, "",
             *_schedule_notes(results["settings"], results["schedules"])]
    signature = next((r["metrics"]["bleu_signature"] for r in records if r["metrics"].get("bleu_signature")), None)
    if signature:
        lines.append(f"- BLEU signature: `{signature}`")
    flagged = [r for r in records if likelihoods_meaningful(r) and r["metrics"]["collapsed"]]
    if flagged:
        lines += ["", "Flagged by the collapse rule (no active unit, or whole-split MI < 0.05 nats), with the numbers "
                  "behind it: " + "; ".join(_collapse_evidence(r["name"], r["metrics"]) for r in flagged) + "."]
    plots = ["kl_mi_during_training.png", "active_units_vs_latent.png", "bleu_vs_latent.png", "latent_<model>.png"]
    lines += ["", f"Plots in `plots/`: {', '.join(plots)}. Reconstructions and interpolations: `samples.md`."]
    return "\n".join(lines) + "\n"


def _collapse_evidence(name: str, scores: dict) -> str:
    """One flagged model: its active units and MI, and whether the MI contradicts the active-unit count."""
    evidence = f"{name} ({scores['active_units']} active units, MI {scores['mi_whole_split']:.2f} nats"
    cap = scores["log_num_sentences"]
    if scores["mi_whole_split"] >= 0.5 * cap:  # means vary less than the threshold, posterior variances far less
        evidence += f", near its cap log N = {cap:.2f}: not collapsed, the means spread below the AU threshold"
    return evidence + ")"


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
                ax.plot([r["latent_size"] for r in chosen], [r["metrics"][key] or 0.0 for r in chosen], "o-",
                        color=colours[variant], label=labels[variant])
            if key == "active_units":
                ax.plot(sizes, sizes, "k--", linewidth=0.8, label="all units active")
                ax.set_yscale("symlog", linthresh=1.0)  # 0 (collapse) and hundreds of units on one axis
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(size) for size in sizes])
            ax.set_xlabel("latent size")
            ax.set_title(title)
            ax.legend(fontsize="small")
        paths.append(save_figure(figure, path))

    against_latent([("active_units", "active units (Var_x E[z|x] >= 0.01)")], plots / "active_units_vs_latent.png")
    against_latent([("bleu4_corpus", "reconstruction BLEU-4, sacreBLEU corpus (0-100)"),
                    ("bleu1_sentence_mean", "reconstruction BLEU-1, mean sentence (0-1)")],
                   plots / "bleu_vs_latent.png")
    return paths
