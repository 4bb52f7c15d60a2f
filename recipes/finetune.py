"""Recipe: adapt a trained sentence model to a new domain's dataset, and compare it before and after on that domain.

One file, top to bottom: the same flags as `sentmim train` (sentmim.options, either spelling) plus the test split to
compare on. It fine-tunes the trained model (--init_from) on the new domain's training split with
`sentmim.assembly.train_from_options`, scores the model before and after fine-tuning on the new domain's test split,
and prints the two side by side: the unknown-token rate, IW-NLL (flagged when the vocabulary lacks more than 1% of
the words), ELBO, reconstruction BLEU, KL, MI and active units. `python recipes/finetune.py --help` lists every option.

Launch:

    # a model trained on PTB (word-level) adapted to a folder of the new domain's text (train.txt and test.txt, one
    # paragraph per line): paragraphs split into sentences, lowercased as PTB is, and the 5,000 most frequent words
    # PTB's vocabulary lacks added to it (benchmarks/finetune does this with WikiText-2)
    python recipes/finetune.py --init_from runs/ptb-mim --dataset_name my_domain/ --split_sentences --lowercase \
        --extend_vocabulary 5000 --min_frequency 2 --output_dir runs/ptb-mim-my-domain --max_steps 2000 \
        --learning_rate 3e-4 --test_split test

    # the same model on a Hugging Face Hub dataset, its test split scored on its first 2,000 sentences
    python recipes/finetune.py --init_from runs/ptb-mim --dataset_name stanfordnlp/imdb --split_sentences \
        --lowercase --extend_vocabulary 5000 --output_dir runs/ptb-mim-imdb --max_steps 5000 \
        --max_eval_sentences 2000

    # several GPUs: training runs on all of them, the two scorings on the first
    accelerate launch --multi_gpu --num_processes 4 recipes/finetune.py --init_from runs/ptb-mim \
        --dataset_name my_domain/ --split_sentences --lowercase --output_dir runs/ptb-mim-my-domain \
        --max_steps 2000 --per_device_train_batch_size 32

What fine-tuning keeps and changes (sentmim.assembly): the architecture and the tokenizer stay (a word-level
vocabulary grows with --extend_vocabulary N); the objective and dropout rates may change; the model's length limit
becomes this run's --max_length. Each model is scored under its own length rule (config.overlong), so the two
columns say how many sentences each one scored. The output folder holds the fine-tuned model, its checkpoints and
finetune_results.json (both scorings and the training results).
"""

import logging
import sys
from pathlib import Path

from accelerate import PartialState
from transformers import HfArgumentParser

from sentmim.assembly import train_from_options
from sentmim.console import library_progress_bars
from sentmim.evaluate_folder import evaluate_loaded, load_eval_batches, load_split_texts
from sentmim.files import write_json_atomic
from sentmim.options import (
    DataOptions,
    DatasetOptions,
    ModelOptions,
    TestEvaluationOptions,
    TokenizerOptions,
    TrainingOptions,
)
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import number
from sentmim.training import TrainingDiverged

OPTIONS = (DatasetOptions, DataOptions, TokenizerOptions, ModelOptions, TrainingOptions, TestEvaluationOptions)
ROWS = [  # (label, key, how to show it)
    ("sentences scored", "num_sentences", "{}"),
    ("  dropped / truncated as longer than the model's limit", None, None),
    ("unknown tokens, % of the scored tokens", "unknown_token_rate", "{:.2%}"),
    ("  of which written <unk> in the text itself", "unknown_token_rate_in_text", "{:.2%}"),
    ("IW-NLL, nats per sentence (K importance samples)", "iw_nll", None),
    ("IW-PPL", "iw_ppl", None),
    ("ELBO-NLL, nats per sentence (an upper bound)", "elbo_nll", None),
    ("BLEU-4 corpus (sacreBLEU, tok none; <unk> never matches)", "bleu4_corpus", None),
    ("BLEU-1 mean sentence (0-1)", "bleu1_sentence_mean", None),
    ("KL(q(z|x) || N(0, I)), nats", "kl", None),
    ("MI whole split, nats", "mi_whole_split", None),
    ("active units", "active_units", "{}"),
]


def parse_args(argv=None) -> tuple:
    """(dataset, data, tokenizer, model, training, test) options; a value out of range raises a one-line error."""
    return HfArgumentParser(OPTIONS, description=__doc__.split("\n")[0]).parse_args_into_dataclasses(argv)


def main(argv=None) -> dict:
    dataset, data, tokenizer, model, training, test = parse_args(argv)
    if not model.init_from:
        raise ValueError("--init_from: give the trained model folder to fine-tune")
    if not test.test_split:
        raise ValueError("--test_split: give the new domain's split to compare on")
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    with library_progress_bars(not training.disable_tqdm):
        # 1. Fine-tune. Every process runs this; the best model and its tokenizer end up in output_dir.
        _, _, train_results = train_from_options(dataset, data, tokenizer, model, training)
        if not PartialState().is_main_process:  # the scoring is done once
            return {"train": train_results}
        # 2. The trained model on the new domain's test split, before fine-tuning (its folder is left as it was),
        #    and the fine-tuned model on the same split.
        before = score(model.init_from, dataset, training, test)
        after = score(training.output_dir, dataset, training, test)
    results = {"before": before, "after": after, "train": train_results}
    print(comparison_table(results, model.init_from, training.output_dir, dataset.dataset, test))
    print(f"wrote {write_json_atomic(Path(training.output_dir) / 'finetune_results.json', results)}")
    return results


def score(model_dir, dataset: DatasetOptions, training: TrainingOptions, test: TestEvaluationOptions) -> dict:
    """Every metric of the model in `model_dir` on the test split, sentences as its training took them."""
    pipe = SentenceMIMPipeline.from_pretrained(model_dir)
    texts = load_split_texts(dataset.dataset, dataset.dataset_config, test.test_split, dataset.text_column,
                             test.max_eval_sentences, dataset.split_sentences)
    batches, stats = load_eval_batches(pipe.tokenizer, texts, training.eval_batch_size, pipe.max_length,
                                       pipe.model.config.overlong)
    scores = evaluate_loaded(pipe, batches, stats, iw_samples=test.iw_samples, seed=training.seed,
                             progress=not training.disable_tqdm)
    scores.update(model_dir=str(model_dir), dataset=str(dataset.dataset), split=test.test_split)
    return scores


def comparison_table(results: dict, before_dir, after_dir, dataset, test: TestEvaluationOptions) -> str:
    """Before and after, one row per metric; flagged likelihoods carry a star."""
    before, after = results["before"], results["after"]
    lines = [f"{test.test_split} split of {dataset}: before ({before_dir}) and after fine-tuning ({after_dir})",
             f"  {'':<62}{'before':>12}{'after':>12}"]
    for label, key, form in ROWS:
        label = label.replace("K importance", f"K={test.iw_samples} importance")
        lines.append(f"  {label:<62}" + "".join(f"{cell(r, key, form):>12}" for r in (before, after)))
    if before["likelihoods_flagged"] or after["likelihoods_flagged"]:
        lines.append("  * flagged: more than 1% of the scored tokens are words the vocabulary lacks; the likelihood "
                     "leaves out what spelling them costs, so it flatters that model")
    return "\n".join(lines)


def cell(scores: dict, key: str | None, form: str | None) -> str:
    if key is None:
        return f"{scores['num_dropped']} / {scores['num_truncated']}"
    value = scores[key]
    text = number(value) if form is None or value is None else form.format(value)
    flagged = key in ("iw_nll", "iw_ppl", "elbo_nll") and scores["likelihoods_flagged"]
    return text + (" *" if flagged else "")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError, TrainingDiverged) as error:  # bad data, arguments, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
