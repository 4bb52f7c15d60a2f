"""The reference language model that scores decoded samples (sentmim.language_model) and the sample-quality numbers
built on it (sentmim.sample_quality), against direct computations."""

import math

import pytest
import torch

from sentmim import SentenceMIMModel, metrics
from sentmim.language_model import GRULanguageModel, LanguageModelConfig, perplexity_on, train_language_model
from sentmim.sample_quality import decoded_quality, sample_quality

BOS, EOS, PAD = 2, 3, 0


def tiny_lm(seed: int = 0) -> GRULanguageModel:
    torch.manual_seed(seed)
    return GRULanguageModel(LanguageModelConfig(vocab_size=12, pad_token_id=PAD, embedding_size=6,
                                                hidden_size=8)).eval()


def test_log_likelihood_is_the_sum_of_next_token_log_probabilities_by_a_direct_loop():
    lm = tiny_lm()
    input_ids = torch.tensor([[BOS, 5, 6, EOS, PAD], [BOS, 7, 7, 8, EOS]])
    mask = (input_ids != PAD).long()
    with torch.no_grad():
        got = lm.log_likelihood(input_ids, mask)
        for row in range(2):
            total, hidden = 0.0, None
            length = int(mask[row].sum())
            for t in range(length - 1):  # one token at a time, carrying the GRU state by hand
                out, hidden = lm.gru(lm.embed_tokens(input_ids[row, t].view(1, 1)), hidden)
                log_p = lm.lm_head(out[0, -1]).double().log_softmax(-1)
                total += float(log_p[input_ids[row, t + 1]])
            assert got[row].item() == pytest.approx(total, rel=1e-5)


def test_save_and_load_round_trip(tmp_path):
    lm = tiny_lm()
    lm.save(tmp_path, extra={"test_ppl": 12.5})
    loaded = GRULanguageModel.load(tmp_path)
    ids = torch.tensor([[BOS, 5, 6, EOS]])
    assert torch.equal(loaded.log_likelihood(ids, torch.ones_like(ids)), lm.log_likelihood(ids, torch.ones_like(ids)))
    with pytest.raises(ValueError, match="no language_model.safetensors"):
        GRULanguageModel.load(tmp_path / "elsewhere")


def test_training_keeps_the_best_validation_perplexity(builtin_splits):
    tokenizer, splits = builtin_splits
    lm, record = train_language_model(splits["train"], splits["validation"], len(tokenizer), tokenizer.pad_token_id,
                                      embedding_size=16, hidden_size=32, max_steps=30, batch_size=16,
                                      learning_rate=1e-2, eval_steps=10)
    from sentmim.batching import make_dataloader

    validation = make_dataloader(splits["validation"], 128, tokenizer.pad_token_id, shuffle=False)
    assert record["steps"] == 30 and record["best_step"] in (10, 20, 30)
    assert perplexity_on(lm, validation) == pytest.approx(record["validation_ppl"], rel=1e-6)
    assert record["validation_ppl"] < len(tokenizer)  # learnt something: better than uniform over the vocabulary


def test_decoded_quality_by_hand():
    generated = torch.tensor([
        [5, 6, EOS, PAD],
        [5, 5, 5, 5],  # never emitted EOS
        [7, EOS, PAD, PAD],
    ])
    quality = decoded_quality(generated, EOS, BOS)
    # emitted words: [5 6] [5 5 5 5] [7]: 3 distinct of 7; bigrams (5 6) (5 5) (5 5) (5 5): 2 distinct of 4
    assert quality["distinct_1"] == pytest.approx(3 / 7) and quality["distinct_2"] == pytest.approx(2 / 4)
    assert quality["eos_share"] == pytest.approx(2 / 3) and quality["mean_length"] == pytest.approx(7 / 3)
    assert quality["num_samples"] == 3 and quality["lm_ppl"] is None
    lm = tiny_lm()
    scored = decoded_quality(generated, EOS, BOS, language_model=lm)
    # BOS + emitted tokens up to and including EOS: 3 + 4 + 2 targets
    rows = [[BOS, 5, 6, EOS], [BOS, 5, 5, 5, 5], [BOS, 7, EOS]]
    with torch.no_grad():
        total = sum(float(lm.log_likelihood(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)))
                    for r in rows)
    assert scored["lm_ppl"] == pytest.approx(math.exp(-total / 9), rel=1e-5)
    assert decoded_quality(torch.tensor([[EOS, PAD]]), EOS, BOS)["distinct_1"] is None  # no word at all


def test_sample_quality_scores_what_the_model_decodes_from_the_codes_given(tiny_config):
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config()).train()
    z = torch.randn(5, model.config.latent_size, generator=torch.Generator().manual_seed(1)) * 3
    quality, generated = sample_quality(model, z, max_length=7, no_repeat_ngram_size=2)
    assert model.training  # restored
    assert torch.equal(generated, model.eval().decode(z, max_length=7, no_repeat_ngram_size=2))
    assert quality == decoded_quality(generated, model.config.eos_token_id, model.config.bos_token_id)
    assert quality["eos_share"] == metrics.eos_share(generated, model.config.eos_token_id)
