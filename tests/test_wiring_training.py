"""How the training loop hands values to the model and the optimizer, checked through `train()` and its log.

- the VAE's beta_t: logged and applied at every step, equal to the schedule's closed form;
- free bits: the training loss shows the floor, the validation loss does not;
- validation numbers (log.jsonl) equal the metrics computed directly on the same loader;
- gradient clipping: the run equals a hand-written loop that clips by the global norm (and differs from one that
  does not).
"""

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel, metrics
from sentmim.batching import make_dataloader
from sentmim.options import TrainingOptions
from sentmim.training import train

LATENT = 8


@pytest.fixture(scope="module")
def data(builtin_splits):
    return builtin_splits


def make_model(tokenizer, **overrides) -> SentenceMIMModel:
    settings = dict(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, latent_size=LATENT, objective="vae",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    return SentenceMIMModel(SentenceMIMConfig(**settings))


def arguments(output_dir, **overrides) -> TrainingOptions:
    settings = dict(batch_size=16, max_steps=8, eval_steps=8, logging_steps=1, disable_tqdm=True, learning_rate=1e-2)
    settings.update(overrides)
    return TrainingOptions(output_dir=str(output_dir), **settings)


def read_log(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]


def train_records(output_dir) -> list[dict]:
    return [record for record in read_log(output_dir) if "train_loss" in record]


# -- beta_t -----------------------------------------------------------------------------------------------------------

# schedule settings -> beta at 0-based optimizer step t, written out from each schedule's definition
SCHEDULES = {
    "constant": (dict(kl_schedule="constant", kl_weight=0.3), lambda t: 0.3),
    "linear": (dict(kl_schedule="linear", kl_anneal_steps=6), lambda t: min(1.0, t / 6)),
    "cyclical": (dict(kl_schedule="cyclical", kl_cycle_steps=4, kl_cycle_ratio=0.75, kl_weight=0.8),
                 lambda t: 0.8 * min(1.0, (t % 4) / 4 / 0.75)),
    "logistic": (dict(kl_schedule="logistic", kl_logistic_k=0.9, kl_logistic_x0=3),
                 lambda t: 1 / (1 + math.exp(-0.9 * (t - 3)))),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_beta_logged_and_applied_at_each_step_is_the_schedules_value(schedule, data, tmp_path):
    tokenizer, splits = data
    settings, beta_at = SCHEDULES[schedule]
    train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, **settings))
    records = train_records(tmp_path)
    assert [record["step"] for record in records] == list(range(1, 9))
    betas = set()
    for record in records:
        beta = beta_at(record["step"] - 1)  # the record of step s is the update made at 0-based step s - 1
        betas.add(round(beta, 6))
        assert record["kl_weight"] == pytest.approx(beta, abs=1e-12), record
        # one step per record: the logged loss is that step's batch mean of recon + beta * KL
        applied = record["train_loss"] - record["train_recon_nll"]
        assert applied == pytest.approx(beta * record["train_kl"], abs=2e-4), record
    assert len(betas) >= 2 or schedule == "constant"
    # beta = 1 would differ from the schedule by more than the tolerance: the KL term is large enough to tell
    assert any(abs(1 - beta_at(r["step"] - 1)) * r["train_kl"] > 1e-2 for r in records)


# -- free bits --------------------------------------------------------------------------------------------------------


def test_free_bits_floor_the_training_loss_and_not_the_validation_loss(data, tmp_path):
    """With a floor of 2 nats per dimension above every dimension's batch-average KL, the training loss is
    recon + beta * latent * 2 exactly; validation (beta = 1, no floor) is recon + KL."""
    tokenizer, splits = data
    floor = 2.0
    options = arguments(tmp_path, max_steps=6, eval_steps=3, learning_rate=1e-3, free_bits=floor, kl_schedule="linear",
                        kl_anneal_steps=4)
    train(make_model(tokenizer), tokenizer, splits, options)
    records = train_records(tmp_path)
    assert len(records) == 6
    for record in records:
        # the sum over dimensions of batch-average KLs is below the floor, so every dimension sits on the floor
        assert record["train_kl"] < floor
        beta = min(1.0, (record["step"] - 1) / 4)
        assert record["train_loss"] - record["train_recon_nll"] == pytest.approx(beta * LATENT * floor, abs=2e-4)
    validation = [record for record in read_log(tmp_path) if "val_loss" in record]
    assert [record["step"] for record in validation] == [3, 6]
    for record in validation:
        assert record["val_loss"] == pytest.approx(record["val_recon_nll"] + record["val_kl"], abs=2e-4)
        assert record["val_loss"] < record["val_recon_nll"] + LATENT * floor - 1.0


# -- validation numbers -----------------------------------------------------------------------------------------------


def direct_validation_metrics(model, loader, seed: int) -> dict:
    """The validation record recomputed with the model's public forward and sentmim.metrics, per sentence."""
    model.eval()
    nll, kl, ll_targets, means, logvars, samples = [], [], 0, [], [], []
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)  # validation draws its z from the global generator seeded with the run's seed
        for batch in loader:
            out = model(**batch)
            mean, logvar = model.encode(batch["input_ids"], batch["attention_mask"])
            nll.append(-out.log_likelihood.double())
            kl.append(metrics.kl_divergence(mean.double(), logvar.double()))
            ll_targets += int(metrics.num_targets(batch["input_ids"], batch["attention_mask"]).sum())
            means.append(mean)
            logvars.append(logvar)
            samples.append(out.z)
    model.train()
    nll, kl = torch.cat(nll), torch.cat(kl)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    return {
        "val_loss": float((nll + kl).mean()),
        "val_recon_nll": float(nll.mean()),
        "val_kl": float(kl.mean()),
        "val_recon_ppl": math.exp(float(nll.sum()) / ll_targets),
        "val_mi_whole_split": metrics.mutual_information(mean, logvar, z=torch.cat(samples)),
        "val_active_units": metrics.active_units(mean),
    }


def test_logged_validation_equals_the_metrics_on_the_same_loader(data, tmp_path):
    tokenizer, splits = data
    model = make_model(tokenizer)
    args = arguments(tmp_path, max_steps=6, eval_steps=6, eval_batch_size=16, seed=3)
    train(model, tokenizer, splits, args)
    logged = [record for record in read_log(tmp_path) if "val_loss" in record]
    assert len(logged) == 1 and logged[0]["step"] == 6
    loader = make_dataloader(splits["validation"], 16, tokenizer.pad_token_id, shuffle=False)
    expected = direct_validation_metrics(model, loader, seed=3)
    assert expected["val_kl"] > 0.05, "a KL this small would hide a mean-for-sum mistake"
    assert set(expected) <= set(logged[0])
    for key, value in expected.items():
        assert logged[0][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


# -- gradient clipping ------------------------------------------------------------------------------------------------


def record_training_batches(model) -> list[dict]:
    """Spy on the batches train() feeds the model (it calls the instance's forward)."""
    seen, forward = [], model.forward

    def recording_forward(*args, **kwargs):
        if model.training:
            seen.append({name: kwargs[name].clone() for name in ("input_ids", "attention_mask")})
        return forward(*args, **kwargs)

    model.forward = recording_forward
    return seen


def hand_written_run(model, batches, learning_rate: float, max_grad_norm: float | None):
    """Adam on the same batches, the gradient scaled to at most max_grad_norm in global L2 norm (float64 norm)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for batch in batches:
        model(**batch, return_logits=False).loss.backward()
        if max_grad_norm is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = math.sqrt(sum(float(grad.double().pow(2).sum()) for grad in grads))
            scale = min(1.0, max_grad_norm / (norm + 1e-6))
            for grad in grads:
                grad.mul_(scale)
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_gradient_clipping_matches_a_hand_written_clip(data, tmp_path):
    """An AE without dropout is deterministic, so train() must equal the hand-written loop on the same batches."""
    tokenizer, splits = data
    model = make_model(tokenizer, objective="ae")
    initial = copy.deepcopy(model)
    seen = record_training_batches(model)
    no_validation = {"train": splits["train"]}
    train(model, tokenizer, no_validation, arguments(tmp_path, max_steps=5, max_grad_norm=0.05, learning_rate=3e-3))
    assert len(seen) == 5
    clipped = hand_written_run(copy.deepcopy(initial), seen, 3e-3, max_grad_norm=0.05)
    unclipped = hand_written_run(copy.deepcopy(initial), seen, 3e-3, max_grad_norm=None)
    trained, without_clipping = dict(model.named_parameters()), dict(unclipped.named_parameters())
    gap = max(float((p - without_clipping[n]).detach().abs().max()) for n, p in clipped.named_parameters())
    assert gap > 1e-4, "clipping must change this run for the test to mean anything"
    for name, parameter in clipped.named_parameters():
        torch.testing.assert_close(trained[name], parameter, rtol=0, atol=2e-6, msg=name)


# -- what a log line averages, and when early stopping counts ---------------------------------------------------------


def record_step_losses(model) -> list[float]:
    losses, forward = [], model.forward

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        if model.training:
            losses.append(float(out.loss.detach()))
        return out

    model.forward = recording_forward
    return losses


def test_a_log_line_averages_the_steps_since_the_last_one(data, tmp_path):
    """logging_steps=3 over 13 batches per epoch: each record is the mean of its own steps' losses, and says which
    epoch it was logged in."""
    tokenizer, splits = data
    model = make_model(tokenizer)
    losses = record_step_losses(model)
    train(model, tokenizer, {"train": splits["train"]}, arguments(tmp_path, max_steps=15, logging_steps=3))
    records = train_records(tmp_path)
    assert [record["step"] for record in records] == [3, 6, 9, 12, 15]
    for record in records:
        steps = losses[record["step"] - 3 : record["step"]]
        assert record["train_loss"] == pytest.approx(sum(steps) / 3, rel=1e-6)
        assert record["epoch"] == (record["step"] - 1) // 13  # 200 sentences / 16 per batch = 13 batches


def test_early_stopping_counts_only_evaluations_since_the_last_improvement(data, tmp_path, monkeypatch):
    """Validation losses 10, 11, 9, 12, 8, 13, 14: never two stalls in a row until the end, so patience 2 stops the
    run only at the 7th evaluation (step 14)."""
    from sentmim import training

    losses = iter([10.0, 11.0, 9.0, 12.0, 8.0, 13.0, 14.0, 15.0, 16.0, 17.0])
    monkeypatch.setattr(training, "validation_metrics", lambda *args, **kwargs: {"val_loss": next(losses)})
    tokenizer, splits = data
    result = train(make_model(tokenizer), tokenizer, splits,
                   arguments(tmp_path, max_steps=20, eval_steps=2, early_stopping_patience=2, logging_steps=20))
    assert result == {"step": 14, "best_val_loss": 8.0, "stopped_early": True}


# -- the argument checks, the optimizer, the schedule's defaults ------------------------------------------------------

INVALID = {"batch_size": 0, "eval_batch_size": 0, "max_steps": 0, "epochs": 0.0, "learning_rate": 0.0,
           "optimizer": "sgd", "lr_scheduler": "linear", "gradient_accumulation_steps": 0, "mixed_precision": "fp8",
           "eval_steps": 0, "logging_steps": 0, "save_total_limit": 0, "report_to": "wandb"}


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_training_argument_is_named_and_the_smallest_valid_one_accepted(name, tmp_path):
    with pytest.raises(ValueError, match=f"^{name}={INVALID[name]!r} is invalid"):
        TrainingOptions(output_dir=str(tmp_path), **{name: INVALID[name]})
    smallest = {"batch_size": 1, "eval_batch_size": 1, "max_steps": 1, "gradient_accumulation_steps": 1,
                "eval_steps": 1, "logging_steps": 1, "save_total_limit": 1}
    if name in smallest:
        assert getattr(TrainingOptions(output_dir=str(tmp_path), **{name: smallest[name]}), name) == 1


def test_fused_adam_is_used_where_supported(data, tmp_path):
    from sentmim.training import build_optimizer, fused_adam_supported

    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    assert fused_adam_supported(torch.device("cpu")) is (version >= (2, 4))
    assert fused_adam_supported(torch.device("cuda")) is True
    assert fused_adam_supported(torch.device("meta")) is False
    tokenizer, _ = data
    model = make_model(tokenizer)
    assert build_optimizer(model, arguments(tmp_path), fused=True).defaults["fused"] is True
    assert not build_optimizer(model, arguments(tmp_path), fused=False).defaults.get("fused")


def test_vae_loss_default_beta_is_one():
    from sentmim.gaussian import kl_per_dimension
    from sentmim.objectives import vae_loss

    log_likelihood, mean, logvar = torch.tensor([-3.0, -5.0]), torch.randn(2, 4), torch.randn(2, 4)
    expected = -log_likelihood + kl_per_dimension(mean, logvar).sum(-1)
    torch.testing.assert_close(vae_loss(log_likelihood, mean, logvar), expected)


@pytest.mark.parametrize(("name", "value"), [("learning_rate", 0.02), ("max_grad_norm", 1.0), ("seed", 5),
                                             ("weight_decay", 0.1)])
def test_train_refuses_to_resume_with_an_option_that_changes_the_run(name, value, data, tmp_path):
    """Checked by train() itself, whichever option changed and wherever it comes in the saved arguments."""
    tokenizer, splits = data
    train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, max_steps=2, eval_steps=2))
    with pytest.raises(ValueError, match=f"option {name} was .* when this run started"):
        train(make_model(tokenizer), tokenizer, splits,
              arguments(tmp_path, max_steps=4, eval_steps=2, resume=True, **{name: value}))


def test_a_longer_run_may_resume_but_not_with_other_evaluations_when_they_steer_it(data, tmp_path):
    """Plateau schedule: extending max_steps is allowed (not cosine), changing eval_steps is not, even together."""
    tokenizer, splits = data
    settings = dict(lr_scheduler="plateau", eval_steps=2)
    train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, max_steps=2, **settings))
    with pytest.raises(ValueError, match="option eval_steps was 2 when this run started"):
        train(make_model(tokenizer), tokenizer, splits,
              arguments(tmp_path, max_steps=4, resume=True, **(settings | {"eval_steps": 1})))
    result = train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, max_steps=4, resume=True, **settings))
    assert result["step"] == 4


def test_an_epoch_budget_counts_optimizer_steps_with_accumulation(builtin_splits, tmp_path):
    """Without max_steps the run lasts `epochs` passes: ceil(batches / accumulation) optimizer steps each."""
    tokenizer, splits = builtin_splits
    model = SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, latent_size=4, objective="ae",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    options = TrainingOptions(str(tmp_path), batch_size=32, epochs=1.5, gradient_accumulation_steps=3,
                              eval_steps=1000, disable_tqdm=True)
    started = time.time()
    result = train(model, tokenizer, splits, options)
    batches = math.ceil(len(splits["train"]) / 32)  # 200 sentences: 7 batches, 3 optimizer steps an epoch
    assert result["step"] == math.ceil(1.5 * math.ceil(batches / 3))
    seconds = json.loads((tmp_path / "train_results.json").read_text())["train_seconds"]
    assert 0 <= seconds <= time.time() - started + 0.1


def test_the_aggregate_posterior_is_fitted_to_the_published_best_model_on_the_whole_training_split(data, tmp_path):
    from sentmim.aggregate_posterior import AggregatePosterior, fit_aggregate_posterior
    from sentmim.model_folder import load_model

    tokenizer, splits = data
    model = make_model(tokenizer, objective="mim")
    options = TrainingOptions(output_dir=str(tmp_path), batch_size=16, max_steps=9, eval_steps=3, logging_steps=3,
                              learning_rate=1.0, disable_tqdm=True)  # too high: the best model is an early one
    train(model, tokenizer, {"train": splits["train"], "validation": splits["validation"]}, options)
    stored = AggregatePosterior.load(tmp_path, LATENT)
    assert stored.num_sentences == len(splits["train"])
    loader = make_dataloader(splits["train"], 64, tokenizer.pad_token_id, shuffle=False)
    expected = fit_aggregate_posterior(load_model(tmp_path), loader)
    assert torch.allclose(stored.mean, expected.mean, rtol=1e-5, atol=1e-7)
    assert torch.allclose(stored.covariance, expected.covariance, rtol=1e-5, atol=1e-7)
    last = fit_aggregate_posterior(model, loader)  # the weights in memory after the last step
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    best_step = min((r for r in records if "val_loss" in r), key=lambda r: r["val_loss"])["step"]
    assert best_step < 9  # the published model is an earlier one: the fit must not be the last weights'
    assert not torch.allclose(stored.mean, last.mean, rtol=1e-5, atol=1e-7)
