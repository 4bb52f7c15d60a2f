"""Training options beyond the defaults: the learning-rate schedule against its closed form (warmup, cosine), the
rate the loop really applies, AdamW, and bf16 mixed precision on a CPU."""

import json
import math

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel
from sentmim.training import LearningRateSchedule, TrainingArguments, build_optimizer, train


@pytest.fixture(scope="module")
def data(builtin_splits):
    return builtin_splits


def make_model(tokenizer) -> SentenceMIMModel:
    torch.manual_seed(0)
    return SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, latent_size=8, objective="mim",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))


def expected_multiplier(step: int, warmup: int, total: int, kind: str) -> float:
    """The schedule written out: linear warmup over `warmup` steps, then constant or half a cosine to 0 at total."""
    value = (step + 1) / warmup if warmup and step < warmup else 1.0
    if kind == "cosine":
        progress = min(1.0, max(0, step - warmup) / (total - warmup))
        value *= (1 + math.cos(math.pi * progress)) / 2
    return value


@pytest.mark.parametrize("kind", ["constant", "cosine"])
@pytest.mark.parametrize("warmup", [0, 4])
def test_schedule_matches_its_closed_form(kind, warmup, tmp_path):
    schedule = LearningRateSchedule(TrainingArguments(str(tmp_path), lr_scheduler=kind, warmup_steps=warmup), 20)
    for step in range(25):
        assert schedule.multiplier(step) == pytest.approx(expected_multiplier(step, warmup, 20, kind), abs=1e-12)


def test_the_loop_applies_the_schedule(data, tmp_path):
    tokenizer, splits = data
    args = TrainingArguments(str(tmp_path), batch_size=8, max_steps=12, eval_steps=100, logging_steps=1,
                             lr_scheduler="cosine", warmup_steps=3, learning_rate=0.01, progress=False)
    train(make_model(tokenizer), tokenizer, splits, args)
    logged = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
              if "lr" in r}
    # the record of step s shows the rate of the update that made it, computed for step index s - 1
    assert logged == {s: pytest.approx(0.01 * expected_multiplier(s - 1, 3, 12, "cosine"), abs=1e-12)
                      for s in range(1, 13)}


def test_adamw_gets_the_weight_decay(data, tmp_path):
    tokenizer, _ = data
    optimizer = build_optimizer(make_model(tokenizer), TrainingArguments(str(tmp_path), optimizer="adamw",
                                                                         weight_decay=0.1), fused=False)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.1


def test_bf16_mixed_precision_trains_on_a_cpu(data, tmp_path):
    tokenizer, splits = data
    model = make_model(tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    args = TrainingArguments(str(tmp_path), batch_size=8, max_steps=4, eval_steps=2, logging_steps=1,
                             mixed_precision="bf16", progress=False)
    train(model, tokenizer, splits, args)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in records if "train_loss" in r)
    saved = SentenceMIMModel.from_pretrained(tmp_path)
    assert all(p.dtype == torch.float32 for p in saved.parameters())  # master weights stay float32
    assert any(not torch.equal(before[name], tensor) for name, tensor in saved.state_dict().items())
