"""The training loop (`sentmim.training.train`): exact resume, atomic checkpoints, refusals, divergence, early
stopping, the plateau schedule, two processes, and what a run leaves in its output folder.

Everything runs on a tiny GRU VAE (embedding 16, hidden 32, latent 8) over ~200 sentences of the built-in corpus.
"""

import hashlib
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sentmim import SentenceMIMConfig, SentenceMIMModel, checkpointing, training
from sentmim.apps.corpus import load_builtin_corpus
from sentmim.checkpointing import CheckpointError
from sentmim.options import TrainingOptions
from sentmim.preprocessing import tokenize_dataset
from sentmim.tokenization import train_tokenizer
from sentmim.training import TrainingDiverged, train

MAX_STEPS = 29
BATCH_SIZE = 16


@pytest.fixture(scope="module")
def data(builtin_splits):
    """(tokenizer, tokenized splits): 200 train / 40 validation sentences, at most 32 tokens."""
    return builtin_splits


def make_model(tokenizer, seed=0, **overrides):
    """A VAE with dropout (trained with a linear KL schedule): noise, dropout, beta_t and batch order all shape
    training."""
    settings = dict(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, latent_size=8, objective="vae",
        dropout=0.1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return SentenceMIMModel(SentenceMIMConfig(**settings))


def arguments(output_dir, **overrides):
    settings = dict(batch_size=BATCH_SIZE, eval_steps=5, logging_steps=2, lr_scheduler="plateau", disable_tqdm=True,
                    max_steps=MAX_STEPS, kl_schedule="linear", kl_anneal_steps=20)
    settings.update(overrides)
    return TrainingOptions(output_dir=str(output_dir), **settings)


def read_log(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    """Log records minus wall-clock time, the one field no two runs share."""
    return [{key: value for key, value in record.items() if key != "elapsed_s"} for record in records]


def interrupt_after_checkpoint(monkeypatch, step: int) -> None:
    """Make the run stop (as on Ctrl-C) right after checkpoint `step` is published."""
    real_publish = checkpointing.publish

    def publish_then_interrupt(checkpoints_dir, published_step, keep):
        folder = real_publish(checkpoints_dir, published_step, keep)
        if published_step == step:
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(checkpointing, "publish", publish_then_interrupt)


# -- exact resume ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The reference: MAX_STEPS steps in one go. Returns (final parameters, log records, output dir)."""
    tokenizer, splits = data
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    model = make_model(tokenizer)
    train(model, tokenizer, splits, arguments(output_dir))
    return {k: v.clone() for k, v in model.state_dict().items()}, read_log(output_dir), output_dir


def batches_per_epoch(splits) -> int:
    return math.ceil(len(splits["train"]) / BATCH_SIZE)


@pytest.mark.parametrize("where", ["mid_first_epoch", "end_of_first_epoch", "mid_second_epoch"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(where, data, uninterrupted, tmp_path, monkeypatch):
    tokenizer, splits = data
    per_epoch = batches_per_epoch(splits)
    assert MAX_STEPS > per_epoch + 3, "the run must span more than one epoch"
    kill_at = {"mid_first_epoch": per_epoch // 2, "end_of_first_epoch": per_epoch,
               "mid_second_epoch": per_epoch + 3}[where]
    reference_params, reference_log, _ = uninterrupted

    interrupt_after_checkpoint(monkeypatch, kill_at)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, save_steps=1))
    monkeypatch.undo()
    state = json.loads((tmp_path / "checkpoints" / f"step_{kill_at}" / "trainer_state.json").read_text())
    assert state["step"] == kill_at
    assert checkpointing.latest_checkpoint(tmp_path / "checkpoints").name == f"step_{kill_at}"

    # A fresh model (other initial weights, to prove they come from the checkpoint) and a fresh global RNG.
    resumed = make_model(tokenizer, seed=1)
    saved = load_file(tmp_path / "checkpoints" / f"step_{kill_at}" / "model.safetensors")
    initial = make_model(tokenizer).state_dict()
    for name, tensor in resumed.state_dict().items():
        assert not torch.equal(tensor, saved[name]) and not torch.equal(tensor, initial[name]), name
    torch.manual_seed(1234)
    result = train(resumed, tokenizer, splits, arguments(tmp_path, save_steps=1, resume=True))

    assert result["step"] == MAX_STEPS
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, reference_params[name]), f"{name} differs after resume at step {kill_at}"
    assert without_timing(read_log(tmp_path)) == without_timing(reference_log)


def test_training_time_counts_on_after_resume(data, tmp_path, monkeypatch):
    tokenizer, splits = data
    interrupt_after_checkpoint(monkeypatch, step=10)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, max_steps=14))
    monkeypatch.undo()
    saved = json.loads((tmp_path / "checkpoints" / "step_10" / "trainer_state.json").read_text())["train_seconds"]
    time.sleep(0.2)  # time spent while the run is not running must not count
    train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, max_steps=14, resume=True))
    elapsed = {record["step"]: record["elapsed_s"] for record in read_log(tmp_path) if "elapsed_s" in record}
    assert saved > 0 and elapsed[12] >= round(saved, 1)
    total = json.loads((tmp_path / "train_results.json").read_text())["train_seconds"]
    assert total >= elapsed[14] >= elapsed[12]


def test_resume_is_exact_with_gradient_accumulation(data, tmp_path, monkeypatch):
    """3 batches per optimizer step; an epoch of 13 batches ends with a 1-batch step (step 5)."""
    tokenizer, splits = data
    assert batches_per_epoch(splits) == 13
    settings = dict(gradient_accumulation_steps=3, max_steps=9, save_steps=1)
    reference = make_model(tokenizer)
    train(reference, tokenizer, splits, arguments(tmp_path / "reference", **settings))
    for kill_at in (5, 7):
        interrupt_after_checkpoint(monkeypatch, kill_at)
        with pytest.raises(KeyboardInterrupt):
            train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path / f"{kill_at}", **settings))
        monkeypatch.undo()
        resumed = make_model(tokenizer)
        train(resumed, tokenizer, splits, arguments(tmp_path / f"{kill_at}", resume=True, **settings))
        assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), reference.parameters(), strict=True))
        assert without_timing(read_log(tmp_path / f"{kill_at}")) == without_timing(read_log(tmp_path / "reference"))


def test_resumed_run_saves_the_same_best_model(data, uninterrupted, tmp_path, monkeypatch):
    tokenizer, splits = data
    _, _, reference_dir = uninterrupted
    interrupt_after_checkpoint(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path))
    monkeypatch.undo()
    train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path, resume=True))
    best, reference = load_file(tmp_path / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert best.keys() == reference.keys()
    assert all(torch.equal(best[name], reference[name]) for name in best)
    results = json.loads((tmp_path / "train_results.json").read_text())
    assert results["step"] == MAX_STEPS and results["stopped_early"] is False


def test_resume_restores_the_plateau_schedule(data, tmp_path, monkeypatch):
    """Validation that never improves halves the learning rate at every evaluation after the first: the resumed run
    must continue from the halved rate and the stall count, not from the initial ones."""
    tokenizer, splits = data
    monkeypatch.setattr(training, "validation_metrics", lambda *args, **kwargs: {"val_loss": 10.0})
    settings = dict(plateau_patience=1, plateau_factor=0.5, max_steps=18)
    reference = make_model(tokenizer)
    train(reference, tokenizer, splits, arguments(tmp_path / "reference", **settings))
    reference_log = read_log(tmp_path / "reference")
    assert {record["lr"] for record in reference_log if "lr" in record} == {1e-3, 5e-4, 2.5e-4}

    interrupt_after_checkpoint(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(tokenizer), tokenizer, splits, arguments(tmp_path / "resumed", **settings))
    resumed = make_model(tokenizer)
    train(resumed, tokenizer, splits, arguments(tmp_path / "resumed", resume=True, **settings))
    assert without_timing(read_log(tmp_path / "resumed")) == without_timing(reference_log)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), reference.parameters(), strict=True))


def test_validating_more_often_does_not_change_training(data, tmp_path):
    """Validation samples z from its own seeded random state, so it never shifts the training noise."""
    tokenizer, splits = data
    rarely, often = make_model(tokenizer), make_model(tokenizer)
    settings = dict(max_steps=12, lr_scheduler="constant")
    train(rarely, tokenizer, splits, arguments(tmp_path / "rarely", eval_steps=12, **settings))
    train(often, tokenizer, splits, arguments(tmp_path / "often", eval_steps=1, **settings))
    assert all(torch.equal(a, b) for a, b in zip(rarely.parameters(), often.parameters(), strict=True))


# -- atomic checkpoints and refusals -------------------------------------------------------------------------------


def small_run(data, output_dir, **overrides):
    tokenizer, splits = data
    settings = dict(max_steps=4, eval_steps=2, lr_scheduler="constant")
    settings.update(overrides)
    model = make_model(tokenizer)
    return model, train(model, tokenizer, splits, arguments(output_dir, **settings))


def test_checkpoint_folder_contents_and_pruning(data, tmp_path):
    small_run(data, tmp_path, max_steps=6, save_total_limit=2)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_4", "step_6"]
    assert (checkpoints / "latest").read_text().strip() == "step_6"
    assert {p.name for p in (checkpoints / "step_6").iterdir()} == {
        "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json"
    }
    assert not list(checkpoints.glob(".tmp-*"))


def test_killed_mid_save_leaves_previous_checkpoint_and_resume_ignores_staging(data, tmp_path, monkeypatch):
    real_save = checkpointing.save_checkpoint

    def die_mid_save(accelerator, folder, trainer_state):
        if trainer_state["step"] == 4:  # the weights are half written when the process dies
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"\x00" * 10)
            raise KeyboardInterrupt
        real_save(accelerator, folder, trainer_state)

    monkeypatch.setattr(checkpointing, "save_checkpoint", die_mid_save)
    with pytest.raises(KeyboardInterrupt):
        small_run(data, tmp_path, max_steps=6)
    monkeypatch.undo()
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / ".tmp-step_4" / "model.safetensors").is_file()  # the leftover staging folder
    assert not (checkpoints / "step_4").exists()
    assert (checkpoints / "latest").read_text().strip() == "step_2"
    assert checkpointing.latest_checkpoint(checkpoints) == checkpoints / "step_2"

    _, result = small_run(data, tmp_path, max_steps=6, resume=True)
    assert result["step"] == 6
    assert (checkpoints / "latest").read_text().strip() == "step_6"
    assert not (checkpoints / ".tmp-step_4").exists()  # replaced by the real step 4 when the resumed run got there
    log_steps = [record["step"] for record in read_log(tmp_path) if "train_loss" in record]
    assert log_steps == [2, 4, 6]  # nothing logged twice, nothing lost


def corrupt_model(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def corrupt_optimizer(folder: Path) -> None:
    (folder / "optimizer.bin").write_bytes(b"this is not a torch file\n" * 10)


def corrupt_trainer_state(folder: Path) -> None:
    (folder / "trainer_state.json").write_text('{"step": ')


@pytest.mark.parametrize("corrupt", [corrupt_model, corrupt_optimizer, corrupt_trainer_state])
def test_corrupted_checkpoint_gives_one_line_checkpoint_error(corrupt, data, tmp_path):
    small_run(data, tmp_path)
    folder = tmp_path / "checkpoints" / "step_4"
    corrupt(folder)
    with pytest.raises(CheckpointError) as caught:
        small_run(data, tmp_path, max_steps=6, resume=True)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder) in message


def test_resume_with_other_model_settings_is_refused(data, tmp_path):
    tokenizer, splits = data
    small_run(data, tmp_path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        train(make_model(tokenizer, hidden_size=24), tokenizer, splits,
              arguments(tmp_path, max_steps=6, eval_steps=2, lr_scheduler="constant", resume=True))


def test_resume_without_checkpoint(data, tmp_path):
    with pytest.raises(ValueError, match="no run to resume"):
        small_run(data, tmp_path / "never-trained", resume=True)
    assert not (tmp_path / "never-trained").exists()


def test_folder_of_another_run_is_refused_and_overwrite_replaces_it(data, tmp_path):
    small_run(data, tmp_path, max_steps=4)
    with pytest.raises(ValueError, match="--overwrite") as caught:
        small_run(data, tmp_path, max_steps=2)
    assert "--resume" in str(caught.value)

    _, result = small_run(data, tmp_path, max_steps=2, overwrite=True)
    assert result["step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_2"]
    assert max(record["step"] for record in read_log(tmp_path)) == 2


def test_unrelated_files_also_count_as_a_used_folder(data, tmp_path):
    (tmp_path / "important.txt").write_text("not a run, but not ours to mix with")
    with pytest.raises(ValueError, match="important.txt") as caught:
        small_run(data, tmp_path)
    assert "--overwrite" not in str(caught.value)  # it would be refused: never advise it for files not ours


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="exclude"):
        TrainingOptions(output_dir=str(tmp_path), resume=True, overwrite=True)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_empty_split_is_refused_at_once(split, data, tmp_path):
    """An empty train split used to loop forever over empty epochs; an empty validation split divided by zero."""
    import signal

    tokenizer, splits = data
    emptied = dict(splits)
    emptied[split] = splits[split].select([])

    def too_slow(*_):
        raise TimeoutError("train() did not return")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)
    try:
        with pytest.raises(ValueError, match=f"the {split} split has no sentences"):
            train(make_model(tokenizer), tokenizer, emptied, arguments(tmp_path / "out", max_steps=3))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not (tmp_path / "out").exists()  # refused before writing anything


# -- divergence -----------------------------------------------------------------------------------------------------


def test_nan_loss_stops_with_the_last_good_checkpoint(data, tmp_path):
    tokenizer, splits = data
    model = make_model(tokenizer)
    forward, calls = model.forward, []

    def forward_that_breaks_at_the_third_step(*args, **kwargs):
        out = forward(*args, **kwargs)
        if model.training:
            calls.append(1)
            if len(calls) == 3:
                out.loss = out.loss * float("nan")
        return out

    model.forward = forward_that_breaks_at_the_third_step
    with pytest.raises(TrainingDiverged) as caught:
        train(model, tokenizer, splits, arguments(tmp_path, max_steps=6, eval_steps=2))
    good = tmp_path / "checkpoints" / "step_2"
    assert str(good) in str(caught.value)
    assert "nan" in str(caught.value)

    assert json.loads((good / "trainer_state.json").read_text())["step"] == 2
    saved = load_file(good / "model.safetensors")  # the weights of step 2, finite: saved before the NaN step
    assert all(torch.isfinite(tensor).all() for tensor in saved.values())
    assert not (tmp_path / "checkpoints" / "step_4").exists()


def test_nan_before_any_checkpoint_says_none(data, tmp_path):
    tokenizer, splits = data
    model = make_model(tokenizer)
    forward = model.forward

    def always_nan(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.loss = out.loss * float("inf")
        return out

    model.forward = always_nan
    with pytest.raises(TrainingDiverged, match="last good checkpoint is none"):
        train(model, tokenizer, splits, arguments(tmp_path, max_steps=4, eval_steps=2))


# -- early stopping and the plateau schedule -------------------------------------------------------------------------


def worsening_validation(monkeypatch, start: float = 10.0):
    """Replace validation with a loss that gets worse at every evaluation."""
    losses = iter(start + k for k in range(1000))

    def fake_validation_metrics(model, loader, kl_weight=1.0, seed=0):
        return {"val_loss": next(losses), "val_kl": 0.0}

    monkeypatch.setattr(training, "validation_metrics", fake_validation_metrics)


def test_early_stopping(data, tmp_path, monkeypatch):
    worsening_validation(monkeypatch)
    _, result = small_run(data, tmp_path, max_steps=20, eval_steps=2, early_stopping_patience=1)
    assert result["stopped_early"] is True
    assert result["step"] == 4  # best at step 2, worse at step 4: patience 1 is used up
    results = json.loads((tmp_path / "train_results.json").read_text())
    assert results["stopped_early"] is True and results["step"] == 4 and results["best_val_loss"] == 10.0
    assert checkpointing.latest_checkpoint(tmp_path / "checkpoints").name == "step_4"  # stopping saves


def test_no_early_stopping_without_patience(data, tmp_path, monkeypatch):
    worsening_validation(monkeypatch)
    _, result = small_run(data, tmp_path, max_steps=6, eval_steps=2)
    assert result["stopped_early"] is False and result["step"] == 6


def test_plateau_schedule_drops_the_learning_rate(data, tmp_path, monkeypatch):
    worsening_validation(monkeypatch)
    small_run(data, tmp_path, max_steps=12, eval_steps=2, logging_steps=1, lr_scheduler="plateau",
              plateau_patience=2, plateau_factor=0.25, learning_rate=1e-3)
    lr = {record["step"]: record["lr"] for record in read_log(tmp_path) if "lr" in record}
    # evaluations at 2 (best), 4, 6 (second stall: x0.25), 8, 10 (x0.25 again), 12
    assert all(lr[step] == pytest.approx(1e-3) for step in range(1, 7))
    assert all(lr[step] == pytest.approx(2.5e-4) for step in range(7, 11))
    assert all(lr[step] == pytest.approx(6.25e-5) for step in range(11, 13))


def test_constant_schedule_ignores_stalls(data, tmp_path, monkeypatch):
    worsening_validation(monkeypatch)
    small_run(data, tmp_path, max_steps=8, eval_steps=2, logging_steps=1, lr_scheduler="constant")
    assert [record["lr"] for record in read_log(tmp_path) if "lr" in record] == [pytest.approx(1e-3)] * 8


# -- the output folder ------------------------------------------------------------------------------------------------


def test_output_folder_loads_everywhere(data, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from sentmim.pipeline import SentenceMIMPipeline

    tokenizer, _ = data
    small_run(data, tmp_path)
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, SentenceMIMModel) and model.config.latent_size == 8
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == tokenizer.get_vocab()
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    assert pipe.encode(["the cat sat .", "a dog ran ."]).shape == (2, 8)
    run = tmp_path / "checkpoints" / "run"
    assert (run / "tokenizer.json").is_file() and (run / "config.json").is_file()
    assert SentenceMIMConfig.from_pretrained(run).hidden_size == 32
    for name in ("training_args.json", "train_results.json", "log.jsonl", "config.json", "model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "training_args.json").read_text())["max_steps"] == 4


def test_output_folder_holds_the_best_validation_model(data, tmp_path, monkeypatch):
    """Validation improves at step 2 and never again: the folder keeps step 2's weights, not the last ones."""
    losses = iter([1.0, 5.0, 6.0])
    monkeypatch.setattr(training, "validation_metrics", lambda *a, **k: {"val_loss": next(losses)})
    model, _ = small_run(data, tmp_path, max_steps=6, eval_steps=2, save_total_limit=3)
    saved = load_file(tmp_path / "model.safetensors")
    at_step_2 = load_file(tmp_path / "checkpoints" / "step_2" / "model.safetensors")
    assert all(torch.equal(saved[name], at_step_2[name]) for name in at_step_2)
    final = model.state_dict()
    assert any(not torch.equal(saved[name], final[name]) for name in saved), "the last weights were saved instead"


# -- two processes -------------------------------------------------------------------------------------------------


def two_process_data():
    raw = load_builtin_corpus(num_train=64, num_validation=16, num_test=4)
    tokenizer = train_tokenizer(raw["train"]["text"], vocab_size=200)
    splits, _ = tokenize_dataset(raw, tokenizer, max_length=24)
    return tokenizer, splits


def deterministic_model(tokenizer):
    """An AE without dropout: no random draws, so two runs differ only by how they split the work."""
    return make_model(tokenizer, objective="ae", dropout=0.0)


def train_on_two_processes(output_dir: str) -> None:
    """Run by each of debug_launcher's forked processes."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    # A forked child inherits this pytest process's accelerate singletons (single process): start afresh.
    AcceleratorState._reset_state(reset_partial_state=True)
    tokenizer, splits = two_process_data()
    model = deterministic_model(tokenizer)
    args = TrainingOptions(output_dir=str(Path(output_dir) / "run"), batch_size=8, max_steps=4, eval_steps=2,
                           logging_steps=1, disable_tqdm=True, cpu=True)
    if torch.distributed.get_rank() == 1:
        time.sleep(1.0)  # a slower process must still find the output folder empty, not the main process's files
    result = train(model, tokenizer, splits, args)
    state = PartialState()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    report = {"rank": state.process_index, "world": state.num_processes, "step": result["step"], "params": digest}
    (Path(output_dir) / f"rank_{state.process_index}.json").write_text(json.dumps(report))
    if state.is_main_process:
        save_file(model.state_dict(), Path(output_dir) / "final.safetensors")


def test_two_processes_on_cpu(tmp_path, monkeypatch):
    from accelerate import debug_launcher

    from sentmim.pipeline import SentenceMIMPipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else accelerate gives each process all physical cores
    debug_launcher(train_on_two_processes, args=(str(tmp_path),), num_processes=2)
    reports = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert [r["step"] for r in reports] == [4, 4]
    assert reports[0]["params"] == reports[1]["params"]
    # Two processes with 8 sentences each make the step of one process with the combined 16: the same
    # consecutive batches of the seeded order, gradients averaged (accumulating 2 batches of 8 averages them too).
    tokenizer, splits = two_process_data()
    one_process = deterministic_model(tokenizer)
    train(one_process, tokenizer, splits, TrainingOptions(
        output_dir=str(tmp_path / "one"), batch_size=8, gradient_accumulation_steps=2, max_steps=4, eval_steps=2,
        logging_steps=1, disable_tqdm=True, cpu=True))
    two_processes = load_file(tmp_path / "final.safetensors")
    initial = deterministic_model(tokenizer).state_dict()
    for name, tensor in one_process.state_dict().items():
        assert not torch.equal(tensor, initial[name]), name
        torch.testing.assert_close(two_processes[name], tensor, rtol=0, atol=1e-5, msg=name)
    step_4 = tmp_path / "run" / "checkpoints" / "step_4"
    assert (step_4 / "random_states_0.pkl").is_file() and (step_4 / "random_states_1.pkl").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "run")
    assert pipe.encode(["a sentence ."]).shape == (1, 8)
    # each logged step is written once, by the main process
    steps = [r["step"] for r in read_log(tmp_path / "run") if "train_loss" in r]
    assert steps == [1, 2, 3, 4]


def test_two_process_checkpoint_does_not_resume_on_one_process(tmp_path, monkeypatch):
    """A step's batch is batch_size per process: resuming on another number of processes would change the run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from accelerate import debug_launcher

    debug_launcher(train_on_two_processes, args=(str(tmp_path),), num_processes=2)
    tokenizer, splits = two_process_data()
    args = TrainingOptions(output_dir=str(tmp_path / "run"), batch_size=8, max_steps=6, eval_steps=2,
                           logging_steps=1, disable_tqdm=True, cpu=True, resume=True)
    with pytest.raises(ValueError, match=r"written by 2 process\(es\), this run has 1") as caught:
        train(deterministic_model(tokenizer), tokenizer, splits, args)
    assert "\n" not in str(caught.value)
    assert not os.path.isdir(tmp_path / "run" / "checkpoints" / "step_6")
