"""Metrics that cannot flatter: reconstruction BLEU is BLEU against the original text (an unknown token in a
hypothesis never matches), every evaluation reports its unknown-token rate and warns and flags its likelihoods when
the vocabulary lacks more than 1% of the scored words, and `sentmim evaluate --output` writes the benchmark's keys."""

import json
import logging
import math

import pytest
import sacrebleu
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel, metrics
from sentmim.evaluation import evaluate, reconstruct_batch
from sentmim.reporting import format_results
from sentmim.tokenization import train_tokenizer, unknown_words_warning
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

KNOWN = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "a cat and a dog ran ."]
SCORED = [
    "The Zebra sat on the mat .",  # "zebra" is missing from the vocabulary
    "a dog ran in the <unk> park .",  # the text's own <unk>
    "the quokka and the yak sang .",
    "a cat ran .",
]


class CopyingModel(SentenceMIMModel):
    """A perfect reconstructor: decodes every sentence of the batch it last encoded back to its exact token ids."""

    def encode(self, input_ids, attention_mask=None):
        self.last_input_ids = input_ids
        return super().encode(input_ids, attention_mask)

    def decode(self, z, max_length=None, **options):
        return self.last_input_ids[:, 1:]  # everything after BOS: the sentence, EOS, padding


def copying_model(tokenizer):
    torch.manual_seed(0)
    config = SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, latent_size=4)
    return CopyingModel(config).eval()


def batches(tokenizer, texts, size=2):
    return [dict(tokenizer(texts[start : start + size], padding=True, return_tensors="pt"))
            for start in range(0, len(texts), size)]


@pytest.fixture
def tokenizer():
    return train_tokenizer(KNOWN, kind="word", lowercase=True)


def test_an_unknown_token_in_a_hypothesis_never_matches(tokenizer):
    """A model that writes <unk> wherever the input had an unknown word used to score BLEU 100 against the
    unknown-mapped input. Against the text it scores what writing those words wrong deserves."""
    model = copying_model(tokenizer)
    encoded = tokenizer(SCORED, padding=True, return_tensors="pt")
    model.encode(encoded["input_ids"], encoded["attention_mask"])
    hypotheses, references = reconstruct_batch(model, tokenizer, encoded["input_ids"], None, 20)
    bleu = metrics.corpus_bleu(hypotheses, references)
    original = [text.lower() for text in SCORED]  # the text as the (lowercasing) tokenizer reads it
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [original], tokenize="none").score, abs=1e-9)
    assert bleu < 60
    assert hypotheses[0] == "the \u2047 sat on the mat ." and hypotheses[3] == "a cat ran ."


def test_evaluate_scores_bleu_against_the_original_text_word_level_and_bpe(tokenizer):
    for kind_tokenizer in (tokenizer, train_tokenizer(KNOWN * 10, kind="bpe", vocab_size=300)):
        model = copying_model(kind_tokenizer)
        results = evaluate(model, batches(kind_tokenizer, SCORED), kind_tokenizer, iw_samples=0, progress=False)
        encoded = kind_tokenizer(SCORED)["input_ids"]
        hypotheses = metrics.hide_unknown([kind_tokenizer.decode(ids[1:-1]) for ids in encoded], SCORED, "<unk>")
        original = [text.lower() for text in SCORED] if kind_tokenizer is tokenizer else SCORED
        expected = sacrebleu.corpus_bleu(hypotheses, [original], tokenize="none").score
        assert results["bleu4_corpus"] == pytest.approx(expected, abs=1e-9)
    assert results["bleu4_corpus"] < 100  # byte-level BPE: no unknown word, but the text's own <unk> never matches


def test_unknown_token_rate_and_flag(tokenizer, caplog):
    vocabulary = tokenizer.get_vocab()
    words = [word for text in SCORED for word in text.lower().split()]
    unknown = sum(word not in vocabulary or word == "<unk>" for word in words)
    model = copying_model(tokenizer)
    with caplog.at_level(logging.WARNING, logger="sentmim"):
        results = evaluate(model, batches(tokenizer, SCORED), tokenizer, iw_samples=0, progress=False,
                           unknown_in_text=1)
    assert results["unknown_token_rate"] == pytest.approx(unknown / len(words))
    assert results["unknown_token_rate_in_text"] == pytest.approx(1 / len(words))
    assert results["likelihoods_flagged"] is True
    warning = next(r.getMessage() for r in caplog.records if "words the vocabulary lacks" in r.getMessage())
    assert f"{(unknown - 1) / len(words):.1%} of the scored tokens" in warning and "--extend-vocabulary" in warning
    report = format_results(results)
    assert f"unknown tokens: {unknown / len(words):.2%} of the scored tokens" in report
    assert f"{1 / len(words):.2%} are <unk> in the text itself" in report and "FLAGGED" in report


def test_the_texts_own_unknown_tokens_do_not_flag_the_likelihoods(tokenizer, caplog):
    """PTB and WikiText write their rare words as <unk>: a model of that text is scored on them as words."""
    texts = ["a <unk> sat on the mat .", "the <unk> ran .", "a cat sat ."]
    model = copying_model(tokenizer)
    with caplog.at_level(logging.WARNING, logger="sentmim"):
        own = evaluate(model, batches(tokenizer, texts), tokenizer, iw_samples=0, progress=False, unknown_in_text=2)
        told_nothing = evaluate(model, batches(tokenizer, texts), tokenizer, iw_samples=0, progress=False)
    assert own["unknown_token_rate"] == pytest.approx(2 / 15) == told_nothing["unknown_token_rate"]
    assert own["likelihoods_flagged"] is False and "FLAGGED" not in format_results(own)
    assert told_nothing["likelihoods_flagged"] is True  # unknown origin: counted against the vocabulary
    assert len([r for r in caplog.records if "words the vocabulary lacks" in r.getMessage()]) == 1


# -- `sentmim evaluate` -----------------------------------------------------------------------------------------------


@pytest.fixture
def saved_model(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8,
                                               latent_size=4, max_position_embeddings=16))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.txt").write_text("\n".join(SCORED + KNOWN) + "\n")
    return tmp_path / "model", tmp_path / "data"


def test_evaluate_output_holds_every_metric_under_the_benchmarks_keys(saved_model, tmp_path, capsys):
    from sentmim.apps.benchmark import evaluate_model
    from sentmim.apps.benchmark_settings import benchmark_settings
    from sentmim.evaluate_folder import load_split_texts

    model_dir, data_dir = saved_model
    output = tmp_path / "scores.json"
    status, out, err = run_cli(capsys, "evaluate", model_dir, "--dataset", data_dir, "--iw-samples", "3",
                               "--batch-size", "4", "--output", output)
    assert status == 0, err
    written = json.loads(output.read_text())
    settings = benchmark_settings("smoke", iw_samples=3, eval_batch_size=4, seed=0, num_examples=0)
    data = ({}, None, load_split_texts(data_dir))  # a test split only: neither has held-out sentences to widen on
    benchmark = evaluate_model(settings, model_dir, data, tmp_path / "p.png", False)["metrics"]
    evaluated = {key: value for key, value in benchmark.items()  # decoding remedies and samples: the benchmark's own
                 if not key.startswith("samples_") and "remedy" not in key}
    assert {key: written.get(key, "missing") for key in evaluated} == evaluated
    assert written["iw_nll_wide"] is None and benchmark["iw_nll_wide"] is None
    for key in ("unknown_token_rate", "unknown_token_rate_in_text", "likelihoods_flagged", "iw_nll", "bleu4_corpus"):
        assert written[key] is not None and key in benchmark
    assert "unknown tokens:" in out and math.isfinite(written["iw_nll"])


def test_the_unknown_words_warning_starts_above_one_percent():
    """1% of words the vocabulary lacks is tolerated; more is warned of. The text's own <unk> never counts, and
    without knowing them (None) nothing is claimed."""
    assert unknown_words_warning(10, 0, 1000, "the scored tokens") is None  # 1.0%
    assert unknown_words_warning(11, 0, 1000, "the scored tokens").startswith("1.1% of the scored tokens are words")
    assert unknown_words_warning(20, 10, 1000, "the scored tokens") is None  # 10 of the 20 are the text's own
    assert "(another 1.0% are <unk> in the text itself)" in unknown_words_warning(21, 10, 1000, "x")
    assert unknown_words_warning(50, None, 1000, "the scored tokens") is None
