"""sentmim.evaluation: every number of `evaluate` is recomputed here independently, from the metrics functions (with
generators seeded the documented way), from sacreBLEU, or by hand."""

import math

import pytest
import sacrebleu
import torch

from sentmim import SentenceMIMModel, metrics
from sentmim.evaluation import evaluate
from sentmim.reporting import format_results
from sentmim.tokenization import train_tokenizer

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran in the park .",
    "the bird sang .",
    "prices rose sharply in tokyo .",
    "the company said it expects a loss .",
    "we saw a <unk> in the park .",
    "a cat and a dog .",
    "it rained .",
]
SEED = 7


@pytest.fixture
def tokenizer():
    return train_tokenizer(SENTENCES, kind="word")


def make_batches(tokenizer, sizes=(3, 3, 2)):
    """Right-padded batches, each only as wide as its longest sentence."""
    batches, start = [], 0
    for size in sizes:
        encoded = tokenizer(SENTENCES[start : start + size], padding=True, return_tensors="pt")
        batches.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
        start += size
    return batches


@pytest.fixture
def trained(tiny_config, tokenizer):
    """A tiny AE trained a little: input-dependent posteriors and partly right reconstructions (BLEU-4 ~ 36)."""
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(tokenizer), objective="ae", embedding_size=16, hidden_size=32, latent_size=8
    )
    model = SentenceMIMModel(config)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        model(encoded["input_ids"], encoded["attention_mask"]).loss.backward()
        optimizer.step()
    return model.eval()


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_nlls_and_perplexities_equal_the_metrics_functions_with_the_same_seeds(trained, tokenizer):
    batches = make_batches(tokenizer)
    results = evaluate(trained, batches, tokenizer, iw_samples=6, seed=SEED, progress=False)

    # The documented streams: IW-NLL from seed, the single posterior sample from seed + 1 (shared by all users).
    iw_gen, elbo_gen, melbo_gen, z_gen = generator(SEED), generator(SEED + 1), generator(SEED + 1), generator(SEED + 1)
    iw, elbo, melbo, recon_mean, recon_sample, kl, targets = [], [], [], [], [], [], []
    with torch.no_grad():
        for b in batches:
            ids, mask = b["input_ids"], b["attention_mask"]
            iw.append(metrics.importance_weighted_nll(trained, ids, mask, num_samples=6, generator=iw_gen))
            elbo.append(metrics.elbo_nll(trained, ids, mask, generator=elbo_gen))
            melbo.append(metrics.melbo_nll(trained, ids, mask, num_sentences=len(SENTENCES), generator=melbo_gen))
            mean, logvar = trained.encode(ids, mask)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=z_gen)
            recon_mean.append(-trained.log_likelihood(ids, mean, mask).double())
            recon_sample.append(-trained.log_likelihood(ids, z, mask).double())
            kl.append(0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1).double())
            targets += [int(m.sum()) - 1 for m in mask]  # words + EOS: every token but BOS
    iw, elbo, melbo = torch.cat(iw), torch.cat(elbo), torch.cat(melbo)

    assert results["num_sentences"] == len(SENTENCES)
    assert results["num_targets"] == sum(targets) == sum(len(s.split()) + 1 for s in SENTENCES)
    for key, values in [("iw_nll", iw), ("elbo_nll", elbo), ("melbo_nll", melbo), ("kl", torch.cat(kl)),
                        ("recon_nll_mean_z", torch.cat(recon_mean)), ("recon_nll_sample_z", torch.cat(recon_sample))]:
        assert results[key] == pytest.approx(values.mean().item(), rel=1e-6), key
    for key, values in [("iw_ppl", iw), ("elbo_ppl", elbo), ("melbo_ppl", melbo)]:
        assert results[key] == pytest.approx(math.exp(values.sum().item() / sum(targets)), rel=1e-6), key
    # One z for ELBO and MELBO: per sentence they differ by KL - log N.
    assert results["elbo_nll"] - results["melbo_nll"] == pytest.approx(results["kl"] - math.log(8), abs=1e-4)


def test_mi_and_active_units_match_the_metrics_on_the_concatenated_split(trained, tokenizer):
    batches = make_batches(tokenizer)
    results = evaluate(trained, batches, tokenizer, iw_samples=0, mi_batch_size=3, seed=SEED, progress=False)

    z_gen = generator(SEED + 1)
    means, logvars, zs = [], [], []
    with torch.no_grad():
        for b in batches:
            mean, logvar = trained.encode(b["input_ids"], b["attention_mask"])
            zs.append(mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=z_gen))
            means.append(mean)
            logvars.append(logvar)
    means, logvars, zs = torch.cat(means), torch.cat(logvars), torch.cat(zs)
    assert results["mi_whole_split"] == pytest.approx(metrics.mutual_information(means, logvars, z=zs), abs=1e-9)
    assert results["mi_batch"] == pytest.approx(
        metrics.mutual_information(means, logvars, z=zs, batch_size=3), abs=1e-9
    )
    assert results["mi_batch"] != pytest.approx(results["mi_whole_split"])  # batches of 3 are not the split of 8
    assert results["log_num_sentences"] == pytest.approx(math.log(8))
    expected_active = int((means.double().numpy().var(axis=0, ddof=1) >= 0.01).sum())
    assert results["active_units"] == expected_active == 8
    assert results["collapsed"] is False and results["mi_whole_split"] > 0.05


def test_bleu_equals_sacrebleu_on_independently_decoded_strings(trained, tokenizer):
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=0, progress=False)

    with torch.no_grad():
        encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        mean, _ = trained.encode(encoded["input_ids"], encoded["attention_mask"])
        generated = trained.decode(mean, max_length=31)
    hypotheses = []
    for row in generated.tolist():
        row = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
        hypotheses.append(" ".join(tokenizer.convert_ids_to_tokens([i for i in row if i != tokenizer.pad_token_id])))
    references = SENTENCES  # the word tokenizer knows every word, and "<unk>" must stay a word

    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score
    assert 5 < expected < 95, "the fixture should reconstruct some sentences, not none or all"
    assert results["bleu4_corpus"] == pytest.approx(expected, abs=1e-9)
    bleu1 = sacrebleu.BLEU(max_ngram_order=1, tokenize="none", effective_order=True)
    expected1 = sum(bleu1.sentence_score(h, [r]).score for h, r in zip(hypotheses, references, strict=True)) / 800
    assert results["bleu1_sentence_mean"] == pytest.approx(expected1, abs=1e-9)
    assert "tok:none" in results["bleu_signature"] and "nrefs:1" in results["bleu_signature"]


def test_collapsed_when_the_posterior_ignores_the_input(trained, tokenizer):
    with torch.no_grad():
        trained.encoder.to_posterior.weight.zero_()  # q(z|x) = q(z): the same posterior for every sentence
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=0, progress=False)
    assert results["active_units"] == 0
    assert results["collapsed"] is True
    assert "posterior collapse: no active unit" in format_results(results)


def test_no_active_unit_but_high_mi_is_flagged_as_only_possible_collapse(trained, tokenizer):
    latent = trained.config.latent_size
    trained.config.objective = "mim"
    with torch.no_grad():  # means 100x closer together (variance << 0.01), sigma at the floor: still separable
        layer = trained.encoder.to_posterior
        layer.weight[:latent] *= 0.01
        layer.bias[:latent] *= 0.01
        layer.weight[latent:] = 0.0
        layer.bias[latent:] = -20.0  # clamped to logvar_min = -10
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=0, progress=False)
    assert results["active_units"] == 0 and results["mi_whole_split"] > 1.0  # cap log 8 = 2.08
    text = format_results(results)
    assert "possible posterior collapse" in text and "z still tells sentences apart" in text
    assert "z carries (almost) nothing" not in text


def test_format_results_labels_every_metric_by_its_definition(trained, tokenizer):
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=4, progress=False)
    text = format_results(results)
    for label in ("IW-NLL (K=4 importance samples", "IW-PPL", "ELBO-NLL (1 sample; an upper bound", "MELBO-NLL",
                  "MI whole-split (He et al. estimator, cap log N = 2.079)", "MI per batch of 32 (cap log 32 = 3.466)",
                  "BLEU-4 corpus (sacreBLEU", "tok:none", "BLEU-1 mean sentence (0-1; sentenceMIM demo)"):
        assert label in text, label
    assert "not a likelihood" in text.lower()
    assert "posterior collapse" not in text
    assert f"{results['iw_nll']:.3f}" in text


def test_ae_likelihoods_are_flagged_and_others_are_not(trained, tokenizer):
    batches = make_batches(tokenizer)
    results = evaluate(trained, batches, tokenizer, iw_samples=2, progress=False)  # `trained` is an AE
    assert results["likelihoods_meaningful"] is False
    assert "objective=ae: q(z|x)'s variance is never trained" in format_results(results)
    trained.config.objective = "vae"  # same weights, declared a VAE: its q is then the model's own
    results = evaluate(trained, batches, tokenizer, iw_samples=2, progress=False)
    assert results["likelihoods_meaningful"] is True
    assert "objective=ae" not in format_results(results)


def test_same_seed_same_results_and_another_seed_other_samples(trained, tokenizer):
    batches = make_batches(tokenizer)
    first = evaluate(trained, batches, tokenizer, iw_samples=5, seed=3, progress=False)
    second = evaluate(trained, batches, tokenizer, iw_samples=5, seed=3, progress=False)
    other = evaluate(trained, batches, tokenizer, iw_samples=5, seed=4, progress=False)
    assert first == second
    assert other["iw_nll"] != first["iw_nll"] and other["elbo_nll"] != first["elbo_nll"]
    assert other["recon_nll_mean_z"] == first["recon_nll_mean_z"]  # no sampling there


def test_a_one_pass_iterable_with_num_sentences_gives_the_same_numbers(trained, tokenizer):
    batches = make_batches(tokenizer)
    listed = evaluate(trained, batches, tokenizer, iw_samples=3, progress=False)
    streamed = evaluate(trained, iter(batches), tokenizer, iw_samples=3, num_sentences=8, progress=False)
    assert streamed == listed


def test_iw_zero_and_no_tokenizer_skip_those_metrics_and_training_mode_is_restored(tiny_config, batch):
    input_ids, attention_mask = batch
    model = SentenceMIMModel(tiny_config(dropout=0.1)).train()
    results = evaluate(model, [{"input_ids": input_ids, "attention_mask": attention_mask}], iw_samples=0,
                       progress=False)
    assert model.training
    assert results["iw_nll"] is None and results["iw_ppl"] is None and results["iw_samples"] == 0
    assert results["bleu4_corpus"] is None and results["bleu1_sentence_mean"] is None
    assert results["num_targets"] == 6 + 3 + 2
    assert "skipped" in format_results(results)
    with pytest.raises(ValueError, match="at least 2 sentences"):
        evaluate(model, [{"input_ids": input_ids[:1], "attention_mask": attention_mask[:1]}], progress=False)


def test_encode_split_without_likelihood_skips_only_the_decoder_column(trained, tokenizer):
    from sentmim.evaluation import encode_split

    full = encode_split(trained, make_batches(tokenizer))
    encoder_only = encode_split(trained, make_batches(tokenizer), likelihood=False)
    assert set(full) - set(encoder_only) == {"log_likelihood_mean_z"}
    assert all(torch.equal(encoder_only[key], full[key]) for key in encoder_only)
