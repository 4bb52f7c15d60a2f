"""Fine-tuning on a new domain (issue #12): the vocabulary wall, --split-sentences, --extend-vocabulary, and metrics
that cannot flatter, measured on WikiText-2's test split.

    nice .venv/bin/python benchmarks/finetune.py                   # the committed run (12 min on 2 busy cores)
    nice .venv/bin/python benchmarks/finetune.py --base ptb --base-steps 3000 --steps 1000   # the issue's PTB base
    .venv/bin/python benchmarks/finetune.py --quick --base ptb --base-data P --wikitext W --work-dir D --output D/out

1. The base model: a demo-sized sMIM model (GRU 128, embedding 64, latent 16, word-level tokenizer, --max-length 32,
   as `sentmim demo` trains it) on the built-in corpus (--base builtin), or on PTB (--base ptb). Its tokenizer
   lowercases, so new text is read lowercased.
2. The new domain: WikiText-2's valid file as training data, its test file as test data (linked into a folder under
   --work-dir as train.txt and test.txt, never copied into the repository); rows are paragraphs of ~100 words.
   Every run below gets --steps steps at --max-length 64 (batch 32, Adam 2e-3, one seed, one thread):
   - "fine-tuned, paragraphs": --init-from the base, rows as they are: the run of the issue, where most rows were
     longer than --max-length and dropped;
   - "fine-tuned": the same with --split-sentences;
   - "fine-tuned + extended": and --extend-vocabulary --extend --min-frequency 2;
   - "scratch BPE": a new model of the base's sizes, the default tokenizer (byte-level BPE, 10k), --split-sentences;
   - "scratch word": the same with a word-level vocabulary of 10k (the issue's degenerate from-scratch run).
3. Every model (and the base, not fine-tuned) is scored on the first --eval-sentences sentences of WikiText-2 test
   (paragraphs split into sentences, lowercased) under its own length rule: unknown-token rate (and the share written
   <unk> in WikiText itself), IW-NLL (K = --iw-samples; flagged when more than 1% of the tokens are words the
   vocabulary lacks), reconstruction BLEU-4 against the text (an <unk> never matches) and, for contrast, the BLEU-4
   of the old rule that scored <unk> for <unk> as a match. The base is also scored on its own domain's test split.

Each training run's one-line data summary (kept / split / truncated / dropped) and the saved model's length limit
are recorded, with the reconstructions of a few test sentences. Writes results.json and results.md into --output
(default benchmarks/finetune/).
"""

import argparse
import contextlib
import io
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_results

from sentmim import metrics
from sentmim.assembly import train_from_options
from sentmim.console import library_progress_bars
from sentmim.evaluate_folder import evaluate_loaded, load_eval_batches, load_split_texts, loader_order
from sentmim.evaluation import reconstruct_split
from sentmim.options import DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from sentmim.pipeline import SentenceMIMPipeline

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
MODEL = dict(objective="mim", architecture="gru", embedding_size=64, hidden_size=128, latent_size=16)
BASE_MAX_LENGTH, MAX_LENGTH = 32, 64
BASES = {"builtin": ("builtin", "the built-in corpus"), "ptb": (str(SHARED / "ptb"), "PTB")}
SHOWN = 3  # test sentences whose reconstructions are shown


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base", choices=sorted(BASES), default="builtin", help="the base model's training data")
    parser.add_argument("--base-data", help="its folder (default: 'builtin', or ../shared/data/ptb for --base ptb)")
    parser.add_argument("--wikitext", default=str(SHARED / "wikitext-2"), help="folder with valid.txt and test.txt")
    parser.add_argument("--work-dir", default="runs/finetune-benchmark", help="where the models are trained")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "finetune"), help="folder for the results")
    parser.add_argument("--base-steps", type=int, default=1500, help="steps of the base model")
    parser.add_argument("--steps", type=int, default=1000, help="steps of every model trained on WikiText-2")
    parser.add_argument("--extend", type=int, default=5000, help="--extend-vocabulary of the extended model")
    parser.add_argument("--eval-sentences", type=int, default=500, help="test sentences scored")
    parser.add_argument("--iw-samples", type=int, default=10, help="importance samples K of IW-NLL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core box)")
    parser.add_argument("--quick", action="store_true", help="tiny model and budgets: checks the script (seconds)")
    args = parser.parse_args(argv)
    args.model = dict(MODEL)
    if args.quick:
        args.model.update(embedding_size=8, hidden_size=8, latent_size=4)
        args.base_steps, args.steps, args.eval_sentences, args.iw_samples = 4, 4, 12, 2
    args.base_data = args.base_data or BASES[args.base][0]
    return args


def wikitext_folder(args) -> Path:
    """A folder whose train.txt is WikiText-2's valid file and whose test.txt is its test file (links, not copies)."""
    folder = Path(args.work_dir) / "wikitext-2-valid-as-train"
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in (("train.txt", "valid.txt"), ("test.txt", "test.txt")):
        link = folder / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(Path(args.wikitext, source).resolve())
    return folder


def train(args, name: str, dataset: str, steps: int, max_length: int, split_sentences: bool,
          **options) -> dict:
    """Train (or fine-tune) one model into work-dir/name; returns its folder, the seconds training took and the
    lines it printed about the data (the preparation summary, the vocabulary extension)."""
    output = Path(args.work_dir) / name
    vocabulary = ("tokenizer", "extend_vocabulary", "min_frequency")
    tokenizer = {key: options.pop(key) for key in vocabulary if key in options}
    began = time.time()
    printed, warnings = io.StringIO(), WarningsKept()
    logging.getLogger("sentmim").addHandler(warnings)
    with contextlib.redirect_stdout(printed):
        train_from_options(
            DatasetOptions(dataset=dataset, split_sentences=split_sentences),
            DataOptions(max_length=max_length, lowercase=True),
            TokenizerOptions(**tokenizer),
            ModelOptions(**({} if options.get("init_from") else args.model), **options),
            TrainingOptions(output_dir=str(output), overwrite=True, max_steps=steps, eval_steps=max(steps // 3, 1),
                            batch_size=32, learning_rate=2e-3, seed=args.seed, disable_tqdm=True),
        )
    logging.getLogger("sentmim").removeHandler(warnings)
    lines = [line for line in printed.getvalue().splitlines() if line.startswith(("data ", "vocabulary "))]
    return {"folder": output, "train_seconds": round(time.time() - began), "printed": lines,
            "warnings": warnings.messages}


class WarningsKept(logging.Handler):
    """The warnings a run logs (the share of text lost, the unknown words), kept for the report."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def score(args, model_dir: Path, dataset: str, split_sentences: bool, shown: int = SHOWN) -> dict:
    """Every metric on the test split's first --eval-sentences sentences, BLEU-4 under the old rule, and the
    reconstructions of the first `shown` test sentences."""
    pipe = SentenceMIMPipeline.from_pretrained(model_dir)
    # Every tokenizer here lowercases (trained with --lowercase), so the text is read as the models were trained.
    texts = load_split_texts(dataset, split="test", max_sentences=args.eval_sentences, split_sentences=split_sentences)
    batches, stats = load_eval_batches(pipe.tokenizer, texts, 64, pipe.max_length, pipe.model.config.overlong)
    scores = evaluate_loaded(pipe, batches, stats, iw_samples=args.iw_samples, seed=args.seed, progress=False)
    hypotheses, references = reconstruct_split(pipe.model, batches, pipe.tokenizer, progress=False)
    matching_unknown = [text.replace(metrics.UNKNOWN_MARK, pipe.tokenizer.unk_token) for text in hypotheses]
    scores["bleu4_corpus_unknown_matches"] = metrics.corpus_bleu(matching_unknown, references)
    scores["vocabulary_size"] = len(pipe.tokenizer)
    scores["saved_max_position_embeddings"] = pipe.model.config.max_position_embeddings
    by_index = dict(zip(loader_order(batches), hypotheses, strict=True))  # a dropped sentence has no row
    body = [index for index, text in enumerate(texts["text"]) if not text.startswith("=")][:shown]  # not headings
    scores["reconstructions"] = [{"text": texts[index]["text"], "reconstruction": by_index.get(index)}
                                 for index in body]
    return scores


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with library_progress_bars(False):  # the bars of datasets and transformers: seven runs of them otherwise
        return run(args, argv)


def run(args, argv) -> dict:
    began = time.time()
    wikitext = str(wikitext_folder(args))
    base = train(args, "base", args.base_data, args.base_steps, BASE_MAX_LENGTH, False, tokenizer="word")
    own_domain = BASES[args.base][1]
    rows = [{"model": f"base (own domain: {own_domain} test)", "steps": args.base_steps, **base,
             **score(args, base["folder"], args.base_data, False)},
            {"model": "base, not fine-tuned", "steps": args.base_steps, **base,
             **score(args, base["folder"], wikitext, True)}]
    runs = {
        "fine-tuned, paragraphs": (False, dict(init_from=str(base["folder"]))),
        "fine-tuned": (True, dict(init_from=str(base["folder"]))),
        "fine-tuned + extended": (True, dict(init_from=str(base["folder"]), extend_vocabulary=args.extend,
                                             min_frequency=2)),
        "scratch BPE": (True, dict(tokenizer="bpe")),
        "scratch word": (True, dict(tokenizer="word")),
    }
    for name, (split_sentences, options) in runs.items():
        folder_name = name.replace(" + ", "-").replace(", ", "-").replace(" ", "-")
        run = train(args, folder_name, wikitext, args.steps, MAX_LENGTH, split_sentences, **options)
        rows.append({"model": name, "steps": args.steps, **run, **score(args, run["folder"], wikitext, True)})
    command = ".venv/bin/python benchmarks/finetune.py " + shlex.join(argv or sys.argv[1:])
    settings = {key: value for key, value in vars(args).items() if key != "model"}
    results = {"command": command.strip(), "machine": machine_info(torch.get_num_threads()), "model": args.model,
               "base_max_length": BASE_MAX_LENGTH, "max_length": MAX_LENGTH, "settings": settings,
               "total_seconds": round(time.time() - began), "rows": rows}
    results = json.loads(json.dumps(results, default=str))
    write_results(args.output, results, markdown(results))
    return results


def markdown(results: dict) -> str:
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        (f"`{results['command']}`: {machine['cpu_model']}, {machine['threads']} thread(s), load average at start "
         f"{machine['load_average_at_start'][0]:.1f}; {results['total_seconds'] / 60:.0f} min in all."),
        "",
        (f"Scored: the first {settings['eval_sentences']} sentences of WikiText-2 test (paragraphs split into "
         "sentences, lowercased; the base's own test split for the first row), each model under its own length rule "
         f"(the limit it saved), IW-NLL with K = {settings['iw_samples']} in nats per sentence. A star marks a "
         "flagged likelihood (more than 1% of the tokens are words the vocabulary lacks)."),
        "",
        ("| model | steps | vocabulary | saved limit | sentences scored (dropped) | unknown tokens "
         "| of which <unk> in the text | IW-NLL | ELBO-NLL | BLEU-4 | BLEU-4, <unk> matching <unk> (old rule) "
         "| BLEU-1 | MI | active units |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        star = " *" if row["likelihoods_flagged"] else ""
        lines.append(
            f"| {row['model']} | {row['steps']} | {row['vocabulary_size']:,} | {row['saved_max_position_embeddings']} "
            f"| {row['num_sentences']} ({row['num_dropped']}) | {row['unknown_token_rate']:.2%} | "
            f"{row['unknown_token_rate_in_text']:.2%} | "
            f"{row['iw_nll']:.1f}{star} | {row['elbo_nll']:.1f}{star} | {row['bleu4_corpus']:.2f} | "
            f"{row['bleu4_corpus_unknown_matches']:.2f} | {row['bleu1_sentence_mean']:.3f} | "
            f"{row['mi_whole_split']:.2f} | {row['active_units']} |")
    lines += ["", "What each training run printed about its data, and the warnings it logged:", ""]
    trained = [("base", results["rows"][0])] + [(row["model"], row) for row in results["rows"][2:]]
    for name, row in trained:
        lines += [f"- {name}:"] + [f"  `{line}`" for line in row["printed"]] + [
            f"  warning: `{line}`" for line in row["warnings"]]
    lines += ["", ("Reconstructions (greedy, z = posterior mean; \u2047 is an unknown token) of the first test "
                   "sentences that are no heading:"), ""]
    scored = results["rows"][1:]
    for index, shown in enumerate(scored[0]["reconstructions"]):
        lines += [f"{index + 1}. text: `{shown['text']}`"]
        for row in scored:
            text = row["reconstructions"][index]["reconstruction"]
            lines.append(f"   - {row['model']}: " + (f"`{text}`" if text is not None else
                                                       "(dropped: longer than the model's limit)"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
