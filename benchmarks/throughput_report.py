"""The targets of issue #6 and the markdown report of `benchmarks/throughput.py` results."""

TRAINING_SPEEDUP = 2.0  # fast / naive training tokens/s at batch 20
FLOP_FRACTION = 0.6  # fast training useful FLOP/s / matmul rate at batch 128
DECODE_SPEEDUP = 5.0  # model.decode / prefix recomputation, sentences/s


def _training(results, architecture, batch_size, variant):
    for row in results["training"]:
        if (row["architecture"], row["batch_size"], row["variant"]) == (architecture, batch_size, variant):
            return row
    return None


def check_targets(results: dict) -> dict:
    """name -> {value, target, met} for every target this run measured."""
    targets = {}

    def add(name, value, target):
        targets[name] = {"value": value, "target": target, "met": value >= target}

    for architecture in results["models"]:
        fast, slow = _training(results, architecture, 20, "fast"), _training(results, architecture, 20, "naive")
        if fast and slow:
            add(f"training_speedup_batch20_{architecture}", fast["tokens_per_s"] / slow["tokens_per_s"],
                TRAINING_SPEEDUP)
        fast = _training(results, architecture, 128, "fast")
        if fast:
            add(f"training_flop_fraction_batch128_{architecture}", fast["flop_fraction"], FLOP_FRACTION)
    for row in results["decode"]:
        add(f"decode_speedup_{row['architecture']}", row["speedup"], DECODE_SPEEDUP)
    return targets


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def _training_rows(results: dict) -> list[list]:
    rows = []
    for row in results["training"]:
        naive = _training(results, row["architecture"], row["batch_size"], "naive")
        rows.append([
            row["architecture"], row["batch_size"], row["variant"], row["tokens_per_s"],
            row["tokens_per_s"] / naive["tokens_per_s"], f"{row['padding_fraction']:.1%}",
            row["useful_gflop_per_s"], f"{row['flop_fraction']:.0%}", _of_best(row), row["steps"],
        ])
    return rows


def _of_best(row: dict) -> str:
    return f"{row['flop_fraction_of_best']:.0%}" if "flop_fraction_of_best" in row else "-"


def _padding_bounds(results: dict) -> list[str]:
    """What removing padding alone can give: the naive run processes 1 / (1 - padding) positions per real target."""
    bounds = {}
    for row in results["training"]:
        if row["variant"] == "naive":
            bounds[row["batch_size"]] = 1 / (1 - row["padding_fraction"])
    if not bounds:
        return []
    text = ", ".join(f"{bound:.2f}x at batch {batch}" for batch, bound in sorted(bounds.items()))
    return [(f"With the same kernels, dropping the padding of random batches speeds a step up by about {text} "
             "(the naive run's positions per real target) at best; costs that do not shrink with the padding, above "
             "all the Adam update of every parameter, make the achieved ratio lower."), ""]


def _padded_or_packed(results: dict) -> list[str]:
    rows = []
    for row in results["training"]:
        packed = _training(results, row["architecture"], row["batch_size"], "fast_packed")
        if row["variant"] == "fast" and packed:
            rows.append([row["architecture"], row["batch_size"], f"{row['padding_fraction']:.1%}",
                         packed["tokens_per_s"], row["tokens_per_s"], row["tokens_per_s"] / packed["tokens_per_s"]])
    if not rows:
        return []
    header = ["model", "batch", "padding", "tokens/s packed", "tokens/s padded run (fast)", "padded / packed"]
    return [
        "## Length-bucketed batches: one padded run or packed", "",
        (f"The GRUs skip a batch's padding (packed layout) only when more than {results['padded_run_max_padding']:.0%}"
         " of it is padding (sentmim/modeling.py, PADDED_RUN_MAX_PADDING); bucketed batches hold less, so they run "
         "as one padded run. Same run, same batches: fast_packed forces the packed layout."), "",
        *_table(header, rows), "",
    ]


def _rates(results: dict) -> str:
    rate = results["machine"]["matmul_gflop_per_s"]
    best = f"; the fastest single product {rate['best']:.0f}" if "best" in rate else ""
    return f"{rate['min']:.0f}-{rate['max']:.0f} GFLOP/s under the load each section saw{best}"


def to_markdown(results: dict) -> str:
    machine, data = results["machine"], results["data"]
    lines = [
        "# Throughput: training, decoding and evaluation (issue #6)", "",
        f"Command: `{results['command']}` ({results['wall_seconds']:.0f} s)", "",
        (f"Machine: {machine['cpu_model']}, {machine['cores']} cores, torch {machine['torch']}, "
         f"{machine['threads']} thread(s), Python {machine['python']}; float32 matmul ({_rates(results)}: "
         f"{machine['matmul_gflop_per_s']['size']}^2 products timed in each round of a section for a tenth of its "
         "time, taking their turn with the variants); load average at start "
         f"{', '.join(f'{x:.1f}' for x in machine['load_average_at_start'])} (the machine is shared)."),
        "",
        (f"Data: {data['source']}, {data['train_sentences']:,} train sentences of at most {data['max_length']} "
         f"tokens (mean {data['mean_tokens']:.1f} with BOS and EOS), word vocabulary {data['vocab_size']:,}."),
        "",
    ]
    for architecture, model in results["models"].items():
        lines.append(
            f"- {architecture}: embedding {model['embedding_size']}, hidden {model['hidden_size']}, latent "
            f"{model['latent_size']}, {model['num_layers']} layer(s), {model['parameters'] / 1e6:.1f}M parameters, "
            f"{model['train_flops_per_target_25'] / 1e6:.0f} MFLOP per target to train on a 23-word sentence."
        )
    lines += ["", ("Tokens are predicted targets (words + EOS). Useful FLOPs count real tokens only "
                   "(benchmarks/flops.py); the fraction is of the matmul rate measured around that section."), ""]
    if results["training"]:
        header = ["model", "batch", "variant", "tokens/s", "vs naive", "padding", "useful GFLOP/s", "of matmul",
                  "of fastest matmul", "steps"]
        lines += ["## Training (forward + backward + Adam step)", "", *_table(header, _training_rows(results)), "",
                  ("naive: random batches, full projection, ignore_index; fast: the library (bucketed batches, "
                   "projection of real targets) with Adam as sentmim.training builds it (fused: torch has a CPU "
                   "kernel); naive with torch's default Adam. fast_unfused_adam: fast with that default Adam too. "
                   "fast_packed: fast with the GRUs skipping the padding (below)."), "", *_padding_bounds(results)]
    if results["compile"]:
        header = ["model", "batch", "eager tokens/s", "compiled tokens/s", "speedup", "compile s"]
        rows = [[r["architecture"], r["batch_size"], r["eager_tokens_per_s"], r["compiled_tokens_per_s"],
                 r["speedup"], r["compile_seconds"]] for r in results["compile"]]
        lines += ["## torch.compile of the fast training step", "", *_table(header, rows), ""]
    if results["decode"]:
        header = ["model", "decode sent/s", "prefix recompute sent/s", "speedup", "mean tokens", "same output",
                  "useful GFLOP/s", "of matmul"]
        rows = [[r["architecture"], r["fast_sentences_per_s"], r["naive_sentences_per_s"], r["speedup"],
                 r["mean_generated_tokens"], r["identical_outputs"], r["fast_useful_gflop_per_s"],
                 f"{r['fast_flop_fraction']:.0%}"] for r in results["decode"]]
        first = results["decode"][0]
        lines += [(f"## Greedy decoding (max length {first['max_length']}, batches of {first['batch_size']}; "
                   f"{first['sentences']} sentences, {first['naive_sentences']} for the baseline)"), "",
                  *_table(header, rows), ""]
    if results["iw_nll"]:
        header = ["model", "K", "sentences", "sentences/s", "useful GFLOP/s", "of matmul"]
        rows = [[r["architecture"], r["num_samples"], r["sentences"], r["sentences_per_s"], r["useful_gflop_per_s"],
                 f"{r['flop_fraction']:.0%}"] for r in results["iw_nll"]]
        lines += ["## IW-NLL (metrics.importance_weighted_nll, validation sentences, batches of 64)", "",
                  *_table(header, rows), ""]
    rows = [[name, f"{mib:,.0f}"] for name, mib in results["memory_mib"].items()]
    lines += ["## Peak resident memory (ru_maxrss) per section", "", *_table(["section", "MiB"], rows), ""]
    rows = [[name, t["value"], t["target"], t["met"]] for name, t in results["targets"].items()]
    if rows:
        lines += ["## Targets", "", *_table(["target", "value", "goal", "met"], rows), ""]
    lines += _padded_or_packed(results)
    return "\n".join(lines)
