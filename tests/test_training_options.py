"""Training options beyond the defaults: the learning-rate schedule against its closed form (warmup, cosine,
plateau), the rate the loop really applies, AdamW, and bf16 mixed precision on a CPU."""

import json
import math
import multiprocessing

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel
from sentmim.options import TrainingOptions
from sentmim.training import build_optimizer, build_scheduler, train


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
    """The schedule written out (transformers' definitions): linear warmup from 0 over `warmup` steps, then constant
    or half a cosine down to 0 at `total`."""
    if step < warmup:
        return step / warmup
    if kind == "cosine":
        progress = (step - warmup) / (total - warmup)
        return (1 + math.cos(math.pi * progress)) / 2
    return 1.0


@pytest.mark.parametrize("kind", ["constant", "cosine"])
@pytest.mark.parametrize("warmup", [0, 4])
def test_schedule_matches_its_closed_form(kind, warmup, tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = build_scheduler(optimizer, TrainingOptions(str(tmp_path), lr_scheduler=kind, warmup_steps=warmup), 20)
    for step in range(21):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * expected_multiplier(step, warmup, 20, kind),
                                                                abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_plateau_schedule_drops_after_patience_evaluations_without_improvement(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    options = TrainingOptions(str(tmp_path), lr_scheduler="plateau", plateau_factor=0.25, plateau_patience=2)
    scheduler = build_scheduler(optimizer, options, 100)
    rates = []
    for validation_loss in (5.0, 4.0, 4.0, 4.5, 3.9, 3.9, 3.9, 3.0, 3.0, 3.0):
        scheduler.step(validation_loss)
        rates.append(optimizer.param_groups[0]["lr"])
    # written out: a drop at the 2nd evaluation in a row without a new best (ties are no improvement), count reset
    assert rates == [1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.0625, 0.0625, 0.0625, 0.015625]


def test_the_loop_applies_the_schedule(data, tmp_path):
    tokenizer, splits = data
    args = TrainingOptions(str(tmp_path), batch_size=8, max_steps=12, eval_steps=100, logging_steps=1,
                           lr_scheduler="cosine", warmup_steps=3, learning_rate=0.01, disable_tqdm=True)
    train(make_model(tokenizer), tokenizer, splits, args)
    logged = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
              if "lr" in r}
    # the record of step s shows the rate of the update that made it, computed for step index s - 1
    assert logged == {s: pytest.approx(0.01 * expected_multiplier(s - 1, 3, 12, "cosine"), abs=1e-12)
                      for s in range(1, 13)}


def test_adamw_gets_the_weight_decay(data, tmp_path):
    tokenizer, _ = data
    optimizer = build_optimizer(make_model(tokenizer), TrainingOptions(str(tmp_path), optimizer="adamw",
                                                                       weight_decay=0.1), fused=False)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.1


def first_step_loss_and_linear_output_dtypes(data, output_dir, mixed_precision: str):
    """Train 2 steps; return the logged loss of step 1, the dtypes that the Linear layers computed in while
    training, and the model."""
    tokenizer, splits = data
    model = make_model(tokenizer)
    dtypes = set()

    def record(module, inputs, output):
        if module.training:
            dtypes.add(output.dtype)

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record)
    args = TrainingOptions(str(output_dir), batch_size=8, max_steps=2, eval_steps=2, logging_steps=1,
                           mixed_precision=mixed_precision, disable_tqdm=True)
    train(model, tokenizer, splits, args)
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return next(r["train_loss"] for r in records if r.get("step") == 1), dtypes, model


def in_a_fresh_process(output_dir, mixed_precision: str, results) -> None:
    """accelerate keeps one precision per process: each precision trains in its own interpreter."""
    from tests.conftest import builtin_splits_data

    torch.set_num_threads(1)
    loss, dtypes, _ = first_step_loss_and_linear_output_dtypes(builtin_splits_data(), output_dir, mixed_precision)
    results.put((loss, sorted(str(dtype) for dtype in dtypes)))


def train_in_fresh_process(output_dir, mixed_precision: str):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=in_a_fresh_process, args=(output_dir, mixed_precision, results))
    process.start()
    loss, dtypes = results.get(timeout=300)
    process.join()
    return loss, {getattr(torch, name.removeprefix("torch.")) for name in dtypes}


def test_bf16_mixed_precision_trains_on_a_cpu(data, tmp_path):
    tokenizer, _ = data
    before = {name: tensor.clone() for name, tensor in make_model(tokenizer).state_dict().items()}
    bf16_loss, bf16_dtypes = train_in_fresh_process(tmp_path / "bf16", "bf16")
    fp32_loss, fp32_dtypes = train_in_fresh_process(tmp_path / "fp32", "no")
    # autocast runs the matrix products in bfloat16: only mixed precision can produce these outputs
    assert fp32_dtypes == {torch.float32} and torch.bfloat16 in bf16_dtypes
    # same weights, batch and noise: the losses differ by bf16 rounding, far beyond float32 round-off, yet agree
    assert math.isfinite(bf16_loss) and abs(bf16_loss - fp32_loss) > 1e-4 * abs(fp32_loss)
    assert bf16_loss == pytest.approx(fp32_loss, rel=0.02)
    saved = SentenceMIMModel.from_pretrained(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in saved.parameters())  # master weights stay float32
    assert any(not torch.equal(before[name], tensor) for name, tensor in saved.state_dict().items())


def test_a_second_precision_in_one_process_is_refused_in_one_line(data, tmp_path):
    tokenizer, splits = data
    train(make_model(tokenizer), tokenizer, splits, TrainingOptions(str(tmp_path / "fp32"), batch_size=8, max_steps=1,
                                                                    disable_tqdm=True))
    with pytest.raises(ValueError, match="accelerate keeps one precision and device per process") as caught:
        train(make_model(tokenizer), tokenizer, splits, TrainingOptions(
            str(tmp_path / "bf16"), batch_size=8, max_steps=1, mixed_precision="bf16", disable_tqdm=True))
    assert "\n" not in str(caught.value)
