"""--resume continues the same run or refuses (issue items 5, 6, 7, 11): changed options are refused with their old
and new values, a torn last log line is dropped and logged again, a `latest` pointer to a missing or incomplete
folder falls back to the newest complete checkpoint, no message advises deleting checkpoints that exist, and a
different number of processes is refused."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from sentmim import SentenceMIMConfig, SentenceMIMModel, checkpointing
from sentmim.cli import main
from sentmim.options import TrainingOptions
from sentmim.training import nothing_to_resume, train
from tests.conftest import TINY_TRAIN, cli_error_line, run_cli
from tests.test_training import interrupt_after_checkpoint

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")

MORE = [arg if arg != "3" else "5" for arg in TINY_TRAIN]  # --max-steps 5


def copy_run(cli_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(cli_run, folder)
    return folder


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with `flag` set to `value` (replaced when present, appended otherwise)."""
    if flag in argv:
        argv = list(argv)
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


# -- item 5: options that would change the run are refused ------------------------------------------------------------


@pytest.mark.parametrize("flag, value, saved", [
    ("--latent-size", "16", "8"),
    ("--objective", "vae", "'mim'"),
    ("--batch-size", "7", "8"),
    ("--learning-rate", "0.01", "0.001"),
    ("--seed", "1", "0"),
    ("--max-length", "30", "24"),
    ("--vocab-size", "300", "400"),
    ("--lr-scheduler", "cosine", "'constant'"),
    ("--gradient-accumulation-steps", "2", "1"),
])
def test_resume_refuses_an_option_that_changes_the_run(flag, value, saved, cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    before = {name: (folder / name).read_bytes() for name in ("training_args.json", "run_options.json", "log.jsonl")}
    argv = with_option(["train", "--dataset", str(corpus_file), "--output-dir", str(folder), "--resume", *MORE],
                       flag, value)
    line = cli_error_line(capsys, *argv)
    name = flag[2:].replace("-", "_")
    assert f"option {name} was {saved} when this run started" in line and f"now {value}" in line.replace("'", "")
    assert {name: (folder / name).read_bytes() for name in before} == before  # nothing rewritten
    assert checkpointing.latest_checkpoint(folder / "checkpoints").name == "step_3"


def test_resume_refuses_other_data(cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    other = tmp_path / "other.txt"
    shutil.copy(corpus_file, other)
    line = cli_error_line(capsys, "train", "--dataset", other, "--output-dir", folder, "--resume", *MORE)
    assert f"option dataset was '{corpus_file}'" in line and str(other) in line


def test_resume_may_extend_the_run_and_change_how_it_reports(cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    argv = with_option(with_option(["train", "--dataset", str(corpus_file), "--output-dir", str(folder), "--resume",
                                    *MORE], "--eval-steps", "1"), "--logging-steps", "1")
    status, out, err = run_cli(capsys, *argv, "--save-steps", "1")
    assert status == 0, err
    assert "trained 5 steps" in out
    saved = json.loads((folder / "training_args.json").read_text())
    assert (saved["max_steps"], saved["eval_steps"], saved["logging_steps"]) == (5, 1, 1)


def small_model(tokenizer):
    torch.manual_seed(0)
    return SentenceMIMModel(SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16,
                                              latent_size=4, objective="vae"))


@pytest.mark.parametrize("scheduler, patience, allowed", [
    ("constant", 0, True), ("cosine", 0, True), ("plateau", 0, False), ("constant", 2, False),
])
def test_evaluation_frequency_may_change_unless_evaluations_steer_training(scheduler, patience, allowed,
                                                                          builtin_splits, tmp_path):
    tokenizer, splits = builtin_splits
    settings = dict(max_steps=4, eval_steps=2, lr_scheduler=scheduler, early_stopping_patience=patience,
                    disable_tqdm=True)
    train(small_model(tokenizer), tokenizer, splits, TrainingOptions(str(tmp_path), **settings))
    resumed = TrainingOptions(str(tmp_path), **{**settings, "eval_steps": 1}, resume=True)
    if allowed:
        train(small_model(tokenizer), tokenizer, splits, resumed)
    else:
        with pytest.raises(ValueError, match="option eval_steps was 2 .* now 1: evaluations steer this run"):
            train(small_model(tokenizer), tokenizer, splits, resumed)


def test_the_run_length_may_grow_unless_the_schedule_is_cosine(builtin_splits, tmp_path):
    tokenizer, splits = builtin_splits
    for scheduler in ("constant", "cosine"):
        settings = dict(max_steps=2, eval_steps=2, lr_scheduler=scheduler, disable_tqdm=True)
        train(small_model(tokenizer), tokenizer, splits, TrainingOptions(str(tmp_path / scheduler), **settings))
        longer = TrainingOptions(str(tmp_path / scheduler), **{**settings, "max_steps": 4}, resume=True)
        if scheduler == "constant":
            assert train(small_model(tokenizer), tokenizer, splits, longer)["step"] == 4
        else:
            with pytest.raises(ValueError, match="max_steps was 2 .* now 4: the cosine schedule decays"):
                train(small_model(tokenizer), tokenizer, splits, longer)


def test_help_states_the_resume_rules(capsys):
    """--resume's help, as `sentmim train --help` prints it, lists exactly the options a resume may change."""
    import dataclasses

    from sentmim.cli import TRAIN_OPTIONS
    from sentmim.options import RESUME_EVALUATION, RESUME_LENGTH, RESUME_MAY_CHANGE, TrainingOptions

    help_text = next(item.metadata["help"] for item in dataclasses.fields(TrainingOptions) if item.name == "resume")
    assert main(["train", "--help"]) == 0
    assert "".join(help_text.split()) in "".join(capsys.readouterr().out.split())  # wrapped, even at hyphens
    flags = {f"--{name.replace('_', '-')}" for name in RESUME_MAY_CHANGE | RESUME_LENGTH | RESUME_EVALUATION}
    known = {f"--{item.name.replace('_', '-')}" for options in TRAIN_OPTIONS for item in dataclasses.fields(options)}
    mentioned = set(re.findall(r"--[a-z][a-z-]*", help_text)) - {"--resume", "--output-dir", "--lr-scheduler",
                                                                    "--early-stopping-patience"}
    assert mentioned == flags & known - {"--output-dir", "--overwrite", "--resume"}


# -- item 6: a torn log line ------------------------------------------------------------------------------------------


def read_log_without_time(folder) -> list[dict]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "elapsed_s"} for record in records]


def test_torn_last_log_line_is_dropped_and_logged_again(builtin_splits, tmp_path, monkeypatch):
    tokenizer, splits = builtin_splits
    settings = dict(max_steps=8, eval_steps=4, logging_steps=1, lr_scheduler="constant", disable_tqdm=True)
    reference = small_model(tokenizer)
    train(reference, tokenizer, splits, TrainingOptions(str(tmp_path / "reference"), **settings))

    interrupt_after_checkpoint(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(tokenizer), tokenizer, splits, TrainingOptions(str(tmp_path / "torn"), **settings))
    monkeypatch.undo()
    log = tmp_path / "torn" / "log.jsonl"
    next_record = read_log_without_time(tmp_path / "reference")[len(log.read_text().splitlines())]
    log.write_text(log.read_text() + json.dumps(next_record)[:25])  # the power went while step 5 was logged
    resumed = small_model(tokenizer)
    train(resumed, tokenizer, splits, TrainingOptions(str(tmp_path / "torn"), **settings, resume=True))
    assert read_log_without_time(tmp_path / "torn") == read_log_without_time(tmp_path / "reference")
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), reference.parameters(), strict=True))


def test_damaged_log_line_before_the_end_names_file_and_line(cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    lines = (folder / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", folder, "--resume", *MORE)
    assert f"{folder / 'log.jsonl'} line 2 is not JSON" in line


@pytest.mark.parametrize("name", ["training_args.json", "run_options.json", "checkpoints/step_3/trainer_state.json"])
def test_damaged_run_json_names_the_file(name, cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    (folder / name).write_text('{"max_steps": 3,')
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", folder, "--resume", *MORE)
    assert str(folder / name) in line or str((folder / name).parent) in line
    assert "--overwrite" not in line


# -- item 7: a `latest` pointer to a folder that is not there --------------------------------------------------------


def run_with_checkpoints(tokenizer, splits, folder, monkeypatch, stop_at: int):
    settings = dict(max_steps=8, eval_steps=2, save_steps=2, save_total_limit=3, lr_scheduler="constant",
                    disable_tqdm=True)
    interrupt_after_checkpoint(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(tokenizer), tokenizer, splits, TrainingOptions(str(folder), **settings))
    monkeypatch.undo()
    return settings


@pytest.mark.parametrize("damage", ["folder_gone", "pointer_gone", "folder_incomplete"])
def test_resume_falls_back_to_the_newest_complete_checkpoint(damage, builtin_splits, tmp_path, monkeypatch):
    tokenizer, splits = builtin_splits
    reference = small_model(tokenizer)
    settings = run_with_checkpoints(tokenizer, splits, tmp_path / "run", monkeypatch, stop_at=6)
    train(reference, tokenizer, splits, TrainingOptions(str(tmp_path / "reference"), **settings))
    checkpoints = tmp_path / "run" / "checkpoints"
    if damage == "folder_gone":
        shutil.move(checkpoints / "step_6", tmp_path / "moved-away")
    elif damage == "pointer_gone":
        (checkpoints / "latest").unlink()
    else:
        (checkpoints / "step_6" / "optimizer.bin").unlink()
    expected = "step_6" if damage == "pointer_gone" else "step_4"
    assert checkpointing.latest_checkpoint(checkpoints).name == expected
    resumed = small_model(tokenizer)
    assert train(resumed, tokenizer, splits, TrainingOptions(str(tmp_path / "run"), **settings, resume=True))[
        "step"] == 8
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), reference.parameters(), strict=True))
    final = load_file(checkpoints / "step_8" / "model.safetensors")
    assert all(torch.equal(final[name], tensor) for name, tensor in reference.state_dict().items() if name in final)


def test_nothing_to_resume_names_the_newest_partial_checkpoint_by_step_number(tmp_path):
    for step in (2, 9, 10):  # by name step_9 would sort last
        (tmp_path / "checkpoints" / f"step_{step}").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_10" / "model.safetensors").write_bytes(b"")
    message = nothing_to_resume(tmp_path)
    assert "(step_10 lacks" in message and "model.safetensors," not in message


def test_no_advice_to_delete_checkpoints_that_exist(cli_run, corpus_file, tmp_path, capsys):
    folder = copy_run(cli_run, tmp_path)
    for step in ("step_2", "step_3"):  # every checkpoint incomplete: nothing to resume, yet not for deleting
        (folder / "checkpoints" / step / "random_states_0.pkl").unlink()
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", folder, "--resume", *MORE)
    assert "no complete checkpoint" in line and "step_3 lacks random_states_0.pkl" in line
    assert "--overwrite" not in line

    folder = copy_run(cli_run, tmp_path / "second")
    weights = folder / "checkpoints" / "step_3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", folder, "--resume", *MORE)
    assert "unreadable" in line and "move that folder out" in line and "--overwrite" not in line
    shutil.move(folder / "checkpoints" / "step_3", tmp_path / "aside")  # the advice, followed: resume from step 2
    status, out, err = run_cli(capsys, "train", "--dataset", corpus_file, "--output-dir", folder, "--resume", *MORE)
    assert status == 0, err
    assert "trained 5 steps" in out


# -- item 11: another number of processes ---------------------------------------------------------------------------


def resume_on_two_processes(output_dir: str, corpus: str) -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    more = [arg if arg != "3" else "5" for arg in TINY_TRAIN]
    main(["train", "--dataset", corpus, "--output-dir", output_dir, "--resume", "--cpu", *more])


def test_resume_on_more_processes_than_saved_is_refused(cli_run, corpus_file, tmp_path, monkeypatch, capfd):
    from accelerate import debug_launcher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder = copy_run(cli_run, tmp_path)
    debug_launcher(resume_on_two_processes, args=(str(folder), str(corpus_file)), num_processes=2)
    err = capfd.readouterr().err
    assert "written by 1 process(es), this run has 2" in err
    assert not (folder / "checkpoints" / "step_5").exists()
