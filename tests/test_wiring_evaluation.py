"""`evaluate` and `evaluate_folder` pass their defaults and options through: the reconstruction length limit from the
tokenizer, the smallest split, the default number of importance samples, what a saved result records."""

import json

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel, SentenceMIMPipeline
from sentmim.batching import collate_batch
from sentmim.evaluate_folder import evaluate_folder
from sentmim.evaluation import evaluate
from sentmim.tokenization import train_tokenizer

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "it rained .",
             "the dog sat .", "a cat ran in the rain ."]


def long_writing_model(tokenizer) -> SentenceMIMModel:
    """An untrained model with wide weights and a low EOS bias: it writes sentences longer than the limits tested."""
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, latent_size=4, max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        unk_token_id=tokenizer.unk_token_id,
    ))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.6)
        model.lm_head.bias[tokenizer.eos_token_id] -= 3.0
    return model.eval()


def batches_of(tokenizer, sentences):
    ids = tokenizer(sentences)["input_ids"]
    return [collate_batch([{"input_ids": row} for row in ids[start : start + 3]], tokenizer.pad_token_id)
            for start in range(0, len(ids), 3)]


def test_reconstructions_stop_at_the_tokenizers_limit_by_default(tmp_path):
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=6)
    model = long_writing_model(tokenizer)
    batches = batches_of(tokenizer, SENTENCES)
    default = evaluate(model, batches, tokenizer, iw_samples=0, progress=False)
    limited = evaluate(model, batches, tokenizer, iw_samples=0, progress=False, max_decode_length=5)
    unlimited = evaluate(model, batches, tokenizer, iw_samples=0, progress=False, max_decode_length=15)
    assert default == limited
    assert unlimited["bleu1_sentence_mean"] != limited["bleu1_sentence_mean"]


def test_two_sentences_are_enough_and_one_is_not():
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=16)
    model = long_writing_model(tokenizer)
    two = evaluate(model, batches_of(tokenizer, SENTENCES[:2]), tokenizer, iw_samples=2, progress=False)
    assert two["num_sentences"] == 2
    with pytest.raises(ValueError, match="at least 2 sentences"):
        evaluate(model, batches_of(tokenizer, SENTENCES[:1]), tokenizer, iw_samples=2, progress=False)


def test_evaluate_folder_defaults_and_what_it_records(tmp_path):
    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=16)
    SentenceMIMPipeline(long_writing_model(tokenizer), tokenizer).save_pretrained(tmp_path / "model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.txt").write_text("\n".join(SENTENCES) + "\n")
    results = evaluate_folder(tmp_path / "model", str(tmp_path / "data"), max_sentences=3, progress=False)
    assert results["iw_samples"] == 500 and results["num_sentences"] == 3 and results["seed"] == 0
    assert (results["split"], results["max_length"], results["num_truncated"]) == ("test", 16, 0)
    assert results["model_dir"] == str(tmp_path / "model") and results["dataset"] == str(tmp_path / "data")
    assert json.loads((tmp_path / "model" / "eval_results_test.json").read_text()) == results


def test_progress_false_draws_no_bar_even_on_a_terminal(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tokenizer = train_tokenizer(SENTENCES, kind="word", model_max_length=16)
    model = long_writing_model(tokenizer)
    for progress, expect_bar in ((False, False), (True, True)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        evaluate(model, batches_of(tokenizer, SENTENCES), tokenizer, iw_samples=2, progress=progress)
        assert ("evaluate" in terminal.getvalue()) is expect_bar
    assert "2/2" in terminal.getvalue()  # the bar knows how many batches there are
