"""Text reports of evaluation results: every number labelled by its definition (which estimator, which cap, which
BLEU), and a warning where the numbers say the latent space has collapsed.

    print(format_results(evaluate(model, batches, tokenizer)))
"""

import math

from .evaluation import COLLAPSE_MI_NATS

AE_WARNING = (
    "    objective=ae: q(z|x)'s variance is never trained (an AE decodes the posterior mean), so IW-NLL, ELBO-NLL,\n"
    "    their PPLs and the KL below describe an arbitrary q, not the model: do not compare them"
)

UNKNOWN_FLAG = (
    "    FLAGGED: more than 1% of the scored tokens are words the vocabulary lacks (see unknown tokens above): these\n"
    "    likelihoods leave out what spelling those words costs; do not compare them with another vocabulary's"
)


def data_lines(r: dict) -> list[str]:
    """What the scored split holds beyond its sentences: unknown tokens, and sentences the length rule changed."""
    lines = []
    if r.get("unknown_token_rate") is not None:
        in_text = r.get("unknown_token_rate_in_text")
        own = "" if in_text is None else f"; {in_text:.2%} are <unk> in the text itself"
        rate = r["unknown_token_rate"]
        lines.append(f"  unknown tokens: {rate:.2%} of the scored tokens (BOS, EOS not counted){own}")
    for key, done in (("num_dropped", "dropped"), ("num_truncated", "truncated")):
        if r.get(key):
            lines.append(f"  {r[key]} sentences longer than {r.get('max_length')} tokens were {done}, as in training")
    return lines


def number(value, digits: int = 3, missing: str = "skipped") -> str:
    """A table cell: a float with `digits` decimals, an int as it is, None (not measured) as `missing`."""
    if value is None:
        return missing
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_results(results: dict) -> str:
    """A readable table; every metric is labelled by its definition (which estimator, which cap, which BLEU)."""
    r = results
    cap_batch = math.log(r["mi_batch_size"])
    iw_label = f"IW-NLL (K={r['iw_samples']}, proposal q(z|x); an upper bound on -log p(x))"
    width = r.get("iw_proposal_width")
    wide_label = ("IW-NLL, widened proposal: skipped (no held-out sentences to choose its width on)" if width is None
                  else f"IW-NLL, widened proposal (K={r['iw_samples']}, q widened by s={width:g} chosen on "
                  f"{r['iw_proposal_width_chosen_on']}; also an upper bound)")
    show_wide = r["iw_samples"] > 0 and r.get("likelihoods_meaningful", True)

    def line(label: str, value, unit: str = "") -> str:
        cell = value if isinstance(value, str) else number(value)
        return f"  {label:<76} {cell:>10}{unit}"

    lines = [
        (
            f"sentmim evaluation: objective={r['objective']}  architecture={r['architecture']}  "
            f"latent_size={r['latent_size']}  seed={r['seed']}"
        ),
        f"  {r['num_sentences']} sentences, {r['num_targets']} predicted targets (words + EOS)",
        *data_lines(r),
        "Likelihood (NLL in nats per sentence; PPL = exp(sum NLL / sum predicted targets))",
        line(iw_label, r["iw_nll"]),
        line("IW-PPL", r["iw_ppl"]),
        *([line(wide_label, r["iw_nll_wide"]), line("IW-PPL, widened proposal", r["iw_ppl_wide"])]
          if width is not None else [f"  {wide_label}"] if show_wide else []),
        line("ELBO-NLL (1 sample; an upper bound on -log p(x))", r["elbo_nll"]),
        line("ELBO-PPL", r["elbo_ppl"]),
        line(f"MELBO-NLL (sentenceMIM paper's measure, -log p(x|z) + log N, N={r['melbo_num_sentences']})",
             r["melbo_nll"]),
        line("MELBO-PPL", r["melbo_ppl"]),
        "    MELBO is NOT a likelihood bound; not comparable with IW-NLL or ELBO",
        line("Reconstruction -log p(x|z), z = posterior mean", r["recon_nll_mean_z"]),
        line("Reconstruction -log p(x|z), one z ~ q(z|x)", r["recon_nll_sample_z"]),
        *([AE_WARNING] if not r.get("likelihoods_meaningful", True) else []),
        *([UNKNOWN_FLAG] if r.get("likelihoods_flagged") else []),
        "Latent space",
        line("KL(q(z|x) || N(0, I)) (closed form, mean per sentence)", r["kl"]),
        line("  of which code energy 1/2 sum mean^2 (where the codes sit)", r.get("kl_code_energy")),
        line("  of which variance part 1/2 sum (var - log var - 1) (widths only, no information)",
             r.get("kl_variance_part")),
        line(f"MI whole-split (He et al., {r.get('mi_samples', 1)} z per sentence, +- SE; cap log N = "
             f"{r['log_num_sentences']:.3f})", estimate(r["mi_whole_split"], r.get("mi_whole_split_se"))),
        line(f"MI per batch of {r['mi_batch_size']} (1 z per sentence; cap log {r['mi_batch_size']} = "
             f"{cap_batch:.3f})", r["mi_batch"]),
        line(f"Active units, absolute rule (Var_x E[z_d|x] >= {r['active_units_threshold']})", r["active_units"],
             f" / {r['latent_size']}"),
        line(f"Active units, relative rule (Var_x E[z_d|x] / E_x Var(z_d|x) >= "
             f"{r['active_units_relative_threshold']})", r["active_units_relative"], f" / {r['latent_size']}"),
        "Reconstruction (greedy decoding of the posterior mean)",
    ]
    if r.get("bleu4_corpus") is None:
        lines.append("  BLEU skipped (no tokenizer, or bleu=False)")
    else:
        lines += [
            line("BLEU-4 corpus (sacreBLEU, 0-100)", r["bleu4_corpus"]),
            f"    signature {r['bleu_signature']}",
            line("BLEU-1 mean sentence (0-1; sentenceMIM demo)", r["bleu1_sentence_mean"]),
            line("Share of reconstructions that end with EOS (the rest run to the length limit)",
                 r.get("reconstruction_eos_share")),
        ]
    warning = collapse_warning(r)
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def collapse_warning(results: dict) -> str | None:
    """Why the results count as posterior collapse (None when they do not), and whether the MI agrees. The active-unit
    part of the rule is `collapse_rule`'s: the relative one, the absolute one for an AE."""
    r = results
    if not r["collapsed"]:
        return None
    reasons = []
    if r.get("collapse_rule") == "active units (relative)":
        if r["active_units_relative"] == 0:
            reasons.append("no active unit by the relative rule (every Var_x E[z_d|x] / E_x Var(z_d|x) < "
                           f"{r['active_units_relative_threshold']})")
    elif r["active_units"] == 0:
        reasons.append(f"no active unit (every Var_x E[z_d|x] < {r['active_units_threshold']})")
    if r["mi_whole_split"] < COLLAPSE_MI_NATS:
        reasons.append(f"whole-split MI {r['mi_whole_split']:.3f} nats < {COLLAPSE_MI_NATS}")
        return f"WARNING: posterior collapse: {' and '.join(reasons)}: z carries (almost) nothing about x"
    return (
        f"WARNING: possible posterior collapse: {reasons[0]}; but the whole-split MI is "
        f"{estimate(r['mi_whole_split'], r.get('mi_whole_split_se'))} nats, so z may still tell sentences apart: "
        "the two measures disagree, check both before calling it collapse"
    )


def estimate(value, standard_error) -> str:
    """"value +- SE" (just the value when there is no SE)."""
    if standard_error is None:
        return number(value)
    return f"{number(value)} +- {number(standard_error)}"
