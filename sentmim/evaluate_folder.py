"""Evaluate a saved model folder on a split of any dataset (what `sentmim evaluate` runs), and the two steps it is made
of, for recipes that score in their own way:

    results = evaluate_folder("runs/ptb-mim", "data/ptb", split="test")    # writes runs/ptb-mim/eval_results_test.json
    texts = load_split_texts("data/ptb", split="test[:500]")              # the split, cleaned as for training
    batches, stats = load_eval_batches(tokenizer, texts, 64, max_length=64, overlong="drop")

Sentences longer than the model's limit are treated the way its training treated them (config.overlong: dropped or
truncated), and the results say how many. The scores themselves are `sentmim.evaluation.evaluate`'s.
"""

from pathlib import Path

from .batching import make_dataloader
from .console import library_progress_bars
from .data import DataError, load_text_dataset
from .evaluation import evaluate
from .files import file_safe, write_json_atomic
from .pipeline import SentenceMIMPipeline
from .plots import write_evaluation_plots
from .preprocessing import clean_dataset, tokenize_dataset
from .sentences import split_dataset


def load_split_texts(dataset, dataset_config=None, split: str = "test", text_column=None, max_sentences=None,
                     split_sentences: bool = False):
    """The cleaned "text" column of one split (a `datasets.Dataset`), in file order.

    A plain split name loads all splits the way training does (a missing validation split is carved from train with
    the default fraction and seed), so "validation" and "train" mean the same sentences as during training. A slice
    such as "test[:100]" is passed to `load_text_dataset` as is, with no carving. split_sentences: each row is split
    into its sentences (sentmim.sentences), before max_sentences counts them.
    """
    if any(char in split for char in "[+"):
        splits = load_text_dataset(dataset, dataset_config, split=split, text_column=text_column,
                                   validation_fraction=0.0)
        texts = next(iter(splits.values()))
    else:
        splits = load_text_dataset(dataset, dataset_config, text_column=text_column)
        if split not in splits:
            raise DataError(f"no split {split!r} in {str(dataset)!r}; available splits: {', '.join(splits)}")
        texts = splits[split]
    if split_sentences:
        texts = split_dataset(texts, split)[0]
    texts = clean_dataset(texts)
    if max_sentences is not None:
        texts = texts.select(range(min(max_sentences, len(texts))))
    return texts


def load_eval_batches(tokenizer, texts, batch_size: int = 64, max_length: int = 128, overlong: str = "truncate"):
    """(loader, stats): padded batches over a split of texts in a fixed order (length-bucketed, not shuffled).

    Sentences longer than max_length are truncated (EOS kept) or dropped, as `overlong` says (pass the model's
    config.overlong: what its training did); stats (`tokenize_dataset`'s) say how many. `loader_order(loader)` gives
    the dataset index of every row.
    """
    tokenized, stats = tokenize_dataset(texts, tokenizer, max_length=max_length, overlong=overlong)
    loader = make_dataloader(tokenized, batch_size, pad_token_id=tokenizer.pad_token_id, shuffle=False)
    return loader, stats


def load_heldout_batches(tokenizer, dataset, dataset_config, split, text_column, num_sentences: int, max_length: int,
                         overlong: str = "truncate", split_sentences: bool = False):
    """(batches, name) of the first num_sentences of the split held out when `split` is scored (the widened IW
    proposal's width is chosen there): validation, or train when validation itself is scored (its remainder after any
    carving). Read as the scored split is (overlong, split_sentences); (None, None) when there are none."""
    if num_sentences == 0:
        return None, None
    heldout = "train" if split.split("[")[0] == "validation" else "validation"
    try:
        texts = load_split_texts(dataset, dataset_config, heldout, text_column, num_sentences, split_sentences)
    except DataError:
        return None, None
    if len(texts) == 0:
        return None, None
    loader, stats = load_eval_batches(tokenizer, texts, batch_size=64, max_length=max_length, overlong=overlong)
    if stats["num_sentences"] - stats["num_dropped"] == 0:
        return None, None
    return loader, f"the first {len(texts)} {heldout} sentences"


def loader_order(loader) -> list[int]:
    """Dataset indices of the rows of an unshuffled `make_dataloader` loader, in the order the batches come."""
    return [index for batch in loader.batch_sampler for index in batch]


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
    split_sentences: bool = False,
    width_sentences: int = 200,
) -> dict:
    """Evaluate a saved model (model + tokenizer in one folder) on a split of any dataset.

    Writes eval_results_{split}.json into model_dir and, when plots_dir is given, the evaluation plots there.
    progress=False also silences the bars of `datasets` and `transformers` while the folder and the data load.
    width_sentences: the widened IW proposal's width is chosen on the first N sentences of the held-out split
    (`load_heldout_batches`; 0, or no such split: the widened IW-NLL is skipped).
    """
    model_dir = Path(model_dir)
    with library_progress_bars(progress):
        pipe = SentenceMIMPipeline.from_pretrained(model_dir, device=device)  # says so when the tokenizer is missing
        texts = load_split_texts(dataset, dataset_config, split, text_column, max_sentences, split_sentences)
        loader, stats = load_eval_batches(pipe.tokenizer, texts, batch_size, pipe.max_length,
                                          pipe.model.config.overlong)
        heldout, heldout_name = load_heldout_batches(pipe.tokenizer, dataset, dataset_config, split, text_column,
                                                     width_sentences if iw_samples else 0, pipe.max_length,
                                                     pipe.model.config.overlong, split_sentences)
    results = evaluate_loaded(pipe, loader, stats, iw_samples=iw_samples, seed=seed, progress=progress,
                              heldout_batches=heldout, heldout_name=heldout_name)
    results.update(model_dir=str(model_dir), dataset=str(dataset), dataset_config=dataset_config, split=split,
                   split_sentences=split_sentences)
    write_json_atomic(model_dir / f"eval_results_{file_safe(split)}.json", results)
    if plots_dir is not None:
        write_evaluation_plots(pipe.model, loader, plots_dir)
    return results


def evaluate_loaded(pipe, loader, stats: dict, **evaluate_options) -> dict:
    """`evaluate` on batches from `load_eval_batches`, with what the length rule did and the text's own unknown
    tokens taken from its stats."""
    kept = stats["num_sentences"] - stats["num_dropped"]
    if kept < 2:
        raise ValueError(
            f"{kept} of {stats['num_sentences']} sentences are left to score: the others are longer than the "
            f"model's {pipe.max_length} tokens and dropped, as its training dropped them; split rows into "
            "sentences (--split-sentences) or score a model trained with a larger --max-length"
        )
    results = evaluate(pipe.model, loader, pipe.tokenizer, unknown_in_text=stats["num_unknown_in_text"],
                       **evaluate_options)
    results.update(max_length=pipe.max_length, overlong=pipe.model.config.overlong,
                   num_dropped=stats["num_dropped"], num_truncated=stats["num_truncated"])
    return results
