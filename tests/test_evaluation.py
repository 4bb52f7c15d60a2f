"""sentmim.evaluation: every number of `evaluate` is recomputed here independently, from the metrics functions (with
generators seeded the documented way), from sacreBLEU, or by hand."""

import math

import pytest
import sacrebleu
import torch

from sentmim import SentenceMIMModel, metrics
from sentmim.evaluation import evaluate
from sentmim.reporting import collapse_warning, format_results
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
    results = evaluate(trained, batches, tokenizer, iw_samples=0, mi_batch_size=3, seed=SEED, progress=False,
                       mi_samples=4)

    z_gen = generator(SEED + 1)
    means, logvars, zs = [], [], []
    with torch.no_grad():
        for b in batches:
            mean, logvar = trained.encode(b["input_ids"], b["attention_mask"])
            zs.append(mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=z_gen))
            means.append(mean)
            logvars.append(logvar)
    means, logvars, zs = torch.cat(means), torch.cat(logvars), torch.cat(zs)
    # S = 4 draws per sentence: the z of ELBO / MELBO, then 3 from a generator seeded with seed + 3 (float64)
    more = generator(SEED + 3)
    means64, logvars64 = means.double(), logvars.double()
    draws = [zs] + [means64 + torch.exp(0.5 * logvars64) * torch.randn(means.shape, generator=more,
                                                                        dtype=torch.float64) for _ in range(3)]
    expected = sum(metrics.mutual_information(means, logvars, z=draw) for draw in draws) / 4
    assert results["mi_whole_split"] == pytest.approx(expected, abs=1e-9)
    assert results["mi_samples"] == 4
    assert results["mi_whole_split_se"] == pytest.approx(
        metrics.mutual_information_with_se(means, logvars, z=torch.stack([d.double() for d in draws])).standard_error,
        rel=1e-9)
    assert 0 < results["mi_whole_split_se"] < 1
    assert results["mi_batch"] == pytest.approx(
        metrics.mutual_information(means, logvars, z=zs, batch_size=3), abs=1e-9
    )
    assert results["mi_batch"] != pytest.approx(results["mi_whole_split"])  # batches of 3 are not the split of 8
    assert results["log_num_sentences"] == pytest.approx(math.log(8))
    expected_active = int((means.double().numpy().var(axis=0, ddof=1) >= 0.01).sum())
    assert results["active_units"] == expected_active == 8
    ratio = means.double().numpy().var(axis=0, ddof=1) / logvars.double().exp().numpy().mean(axis=0)
    assert results["active_units_relative"] == int((ratio >= 0.01).sum())
    assert results["active_units_relative_threshold"] == 0.01
    assert results["kl_code_energy"] == pytest.approx(0.5 * means.double().pow(2).sum(1).mean().item(), rel=1e-9)
    assert results["kl_code_energy"] + results["kl_variance_part"] == pytest.approx(results["kl"], rel=1e-9)
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


def test_mim_at_its_logvar_floor_is_not_flagged_although_no_unit_is_active_by_the_absolute_rule(trained, tokenizer):
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
    # the relative rule: Var_x E[z|x] ~ 1e-4 against E_x Var(z|x) = e^-10 ~ 4.5e-5
    assert results["active_units_relative"] == latent
    assert results["collapse_rule"] == "active units (relative)" and results["collapsed"] is False
    assert "collapse" not in format_results(results)
    trained.config.objective = "ae"  # an AE's variance is untrained: its flag keeps the absolute rule
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=0, progress=False)
    assert results["collapse_rule"] == "active units (absolute)" and results["collapsed"] is True
    assert "possible posterior collapse: no active unit (every Var_x E[z_d|x] < 0.01)" in format_results(results)


def test_the_collapse_warning_says_which_rule_and_whether_the_mi_agrees():
    base = {"collapsed": True, "collapse_rule": "active units (relative)", "active_units": 0,
            "active_units_threshold": 0.01, "active_units_relative": 0, "active_units_relative_threshold": 0.01,
            "mi_whole_split": 1.234, "mi_whole_split_se": 0.056}
    warning = collapse_warning(base)
    assert warning.startswith("WARNING: possible posterior collapse: no active unit by the relative rule")
    assert "1.234 +- 0.056 nats" in warning and "the two measures disagree" in warning
    warning = collapse_warning({**base, "mi_whole_split": 0.01})
    assert warning.startswith("WARNING: posterior collapse: no active unit by the relative rule")
    assert "whole-split MI 0.010 nats < 0.05" in warning and "z carries (almost) nothing about x" in warning
    assert collapse_warning({**base, "collapsed": False}) is None


def test_format_results_labels_every_metric_by_its_definition(trained, tokenizer):
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=4, progress=False)
    text = format_results(results)
    for label in ("IW-NLL (K=4, proposal q(z|x); an upper bound on -log p(x))", "IW-PPL",
                  "ELBO-NLL (1 sample; an upper bound", "MELBO-NLL",
                  "MI whole-split (He et al., 10 z per sentence, +- SE; cap log N = 2.079)",
                  "MI per batch of 32 (1 z per sentence; cap log 32 = 3.466)",
                  "of which code energy 1/2 sum mean^2", "of which variance part",
                  "Active units, absolute rule (Var_x E[z_d|x] >= 0.01)",
                  "Active units, relative rule (Var_x E[z_d|x] / E_x Var(z_d|x) >= 0.01)",
                  "BLEU-4 corpus (sacreBLEU", "tok:none", "BLEU-1 mean sentence (0-1; sentenceMIM demo)",
                  "Share of reconstructions that end with EOS"):
        assert label in text, label
    assert f"{results['mi_whole_split']:.3f} +- {results['mi_whole_split_se']:.3f}" in text
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
    with pytest.raises(ValueError, match="iw_samples=-1: must be >= 0"):
        evaluate(model, [{"input_ids": input_ids, "attention_mask": attention_mask}], iw_samples=-1, progress=False)


def test_encode_split_without_likelihood_skips_only_the_decoder_column(trained, tokenizer):
    from sentmim.evaluation import encode_split

    full = encode_split(trained, make_batches(tokenizer))
    encoder_only = encode_split(trained, make_batches(tokenizer), likelihood=False)
    assert set(full) - set(encoder_only) == {"log_likelihood_mean_z"}
    assert all(torch.equal(encoder_only[key], full[key]) for key in encoder_only)


def test_the_widened_iw_nll_takes_its_width_from_the_heldout_sentences_only(trained, tokenizer):
    trained.config.objective = "mim"  # (an AE's q is untrained: its widened bound is skipped)
    scored = make_batches(tokenizer)
    heldout_sentences = ["the dog sat on the mat .", "a bird ran in the park .", "prices fell ."]
    encoded = tokenizer(heldout_sentences, padding=True, return_tensors="pt")
    heldout = [{"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}]
    results = evaluate(trained, scored, tokenizer, iw_samples=6, bleu=False, seed=SEED, progress=False,
                       heldout_batches=heldout, heldout_name="three held-out sentences")

    width, bounds = metrics.choose_proposal_width(trained, heldout, num_samples=6, seed=SEED + 2)
    on_scored = metrics.choose_proposal_width(trained, scored, num_samples=6, seed=SEED + 2)[1]
    assert results["iw_proposal_width_bounds"] == {str(s): b for s, b in bounds.items()} != on_scored
    assert results["iw_proposal_width"] == width and results["iw_proposal_width_samples"] == 6
    assert results["iw_proposal_width_chosen_on"] == "three held-out sentences"
    wide_generator = generator(SEED + 2)
    with torch.no_grad():
        expected = torch.cat([
            metrics.importance_weighted_nll(trained, b["input_ids"], b["attention_mask"], num_samples=6,
                                            generator=wide_generator, proposal_width=width)
            for b in scored])
    if width == 0:  # q itself won: the widened bound is the plain one
        assert results["iw_nll_wide"] == results["iw_nll"]
    else:
        assert results["iw_nll_wide"] == pytest.approx(expected.mean().item(), rel=1e-9)
    targets = sum(len(s.split()) + 1 for s in SENTENCES)
    assert results["iw_ppl_wide"] == pytest.approx(math.exp(results["iw_nll_wide"] * 8 / targets), rel=1e-9)

    given = evaluate(trained, scored, tokenizer, iw_samples=6, bleu=False, seed=SEED, progress=False,
                     proposal_width=0.3)
    assert given["iw_proposal_width"] == 0.3 and given["iw_proposal_width_chosen_on"] == "given"
    assert evaluate(trained, scored, tokenizer, iw_samples=6, bleu=False, progress=False)["iw_nll_wide"] is None
    trained.config.objective = "ae"
    skipped = evaluate(trained, scored, tokenizer, iw_samples=6, bleu=False, progress=False, heldout_batches=heldout)
    width_keys = ("iw_proposal_width", "iw_proposal_width_chosen_on", "iw_proposal_width_bounds",
                  "iw_proposal_width_samples")
    assert {key: skipped[key] for key in width_keys} == dict.fromkeys(width_keys)  # the same keys, all None


def test_the_share_of_reconstructions_ending_with_eos_is_that_of_the_greedy_decodings(trained, tokenizer):
    # 5 generated tokens at most: the longer sentences run out before their EOS
    results = evaluate(trained, make_batches(tokenizer), tokenizer, iw_samples=0, progress=False, max_decode_length=5)
    with torch.no_grad():
        encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        mean, _ = trained.encode(encoded["input_ids"], encoded["attention_mask"])
        generated = trained.decode(mean, max_length=5)
    ended = [tokenizer.eos_token_id in row for row in generated.tolist()]
    assert 0 < sum(ended) < len(ended)
    assert results["reconstruction_eos_share"] == pytest.approx(sum(ended) / len(ended))
