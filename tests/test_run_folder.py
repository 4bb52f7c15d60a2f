"""The output folder of a run (sentmim.run_folder, sentmim.checkpointing.publish_model): --overwrite deletes only what
a run wrote and never the data being read, a second writer is refused while a live run holds the folder (and a killed
run's lock is taken over), the best model is published atomically inside the folder, and an unwritable folder is
reported before any data is loaded."""

import os
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from sentmim import SentenceMIMModel, checkpointing
from sentmim.apps.benchmark import prepare_benchmark_dir
from sentmim.apps.benchmark_settings import benchmark_settings
from sentmim.cli import main
from sentmim.options import TrainingOptions
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.training import train
from tests.conftest import TINY_TRAIN, cli_error_line

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# -- item 1: --overwrite never deletes what a run did not write -------------------------------------------------------


def test_overwrite_refuses_the_folder_holding_the_dataset(corpus_file, tmp_path, capsys):
    """The report: `--dataset work/data/train.jsonl --output-dir work/data --overwrite` exited 0, the data gone."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(corpus_file, data / "train.txt")
    (data / "notes.md").write_text("my notes")
    before = snapshot(data)
    line = cli_error_line(capsys, "train", "--dataset", data / "train.txt", "--output-dir", data, "--overwrite",
                      *TINY_TRAIN)
    assert "would delete the dataset being read" in line and str(data / "train.txt") in line
    assert snapshot(data) == before


def test_overwrite_refuses_the_dataset_even_under_a_run_file_name(cli_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    (run / "log.jsonl").write_text('{"text": "a sentence ."}\n' * 50)  # the user's data, named like a run's log
    before = snapshot(run)
    line = cli_error_line(capsys, "train", "--dataset", run / "log.jsonl", "--output-dir", run, "--overwrite",
                          *TINY_TRAIN)
    assert "would delete the dataset" in line and str(run / "log.jsonl") in line
    assert snapshot(run) == before


def test_overwrite_refuses_a_run_folder_holding_other_files(cli_run, corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    for name in ("notes.txt", "b.txt", "c.txt", "d.txt"):
        (run / name).write_text("mine")
    (run / "checkpoints" / "keep.me").write_text("mine too")
    before = snapshot(run)
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", run, "--overwrite", *TINY_TRAIN)
    assert "b.txt, c.txt, checkpoints/keep.me and 2 more" in line and "nothing was deleted" in line
    assert snapshot(run) == before


def test_overwrite_refuses_a_folder_no_run_wrote(cli_run, corpus_file, tmp_path, capsys):
    """Files named like a model's (another library's model, say) are not ours to delete."""
    other = tmp_path / "other-model"
    other.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(cli_run / name, other / name)
    before = snapshot(other)
    line = cli_error_line(capsys, "train", "--dataset", corpus_file, "--output-dir", other, "--overwrite", *TINY_TRAIN)
    assert "not written by a sentmim run" in line and "config.json" in line
    assert snapshot(other) == before


def test_overwrite_replaces_a_run_and_keeps_its_mark(cli_run, corpus_file, tmp_path, capsys):
    from sentmim import run_folder

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    (run / "checkpoints" / "step_2").rename(run / "checkpoints" / "step_1000")  # to see that the old run is gone
    capsys.readouterr()
    assert main(["train", "--dataset", str(corpus_file), "--output-dir", str(run), "--overwrite", *TINY_TRAIN]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_2", "step_3"]
    assert (run / run_folder.MARKER).is_file() and run_folder.foreign_entries(run, run_folder.RUN_LAYOUT) == []


def test_benchmark_overwrite_deletes_only_a_benchmark(tmp_path, corpus_file, capsys):
    folder = tmp_path / "bench"
    settings = benchmark_settings("smoke", output_dir=folder, dataset=str(corpus_file))
    overwriting = benchmark_settings("smoke", output_dir=folder, dataset=str(corpus_file), overwrite=True)
    prepare_benchmark_dir(folder, settings)
    (folder / "results.md").write_text("old results")
    (folder / "plots").mkdir()
    (folder / "plots" / "kl.png").write_bytes(b"png")
    prepare_benchmark_dir(folder, overwriting)  # a benchmark's own files: replaced
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json"]

    (folder / "thesis.tex").write_text("months of work")
    before = snapshot(folder)
    with pytest.raises(ValueError, match=r"thesis\.tex.*nothing was deleted"):
        prepare_benchmark_dir(folder, overwriting)
    assert snapshot(folder) == before

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(corpus_file, data / "train.txt")
    line = cli_error_line(capsys, "benchmark", "--preset", "smoke", "--output-dir", data, "--overwrite",
                      "--dataset", data / "train.txt")
    assert "would delete the dataset" in line
    assert (data / "train.txt").read_bytes() == corpus_file.read_bytes()


# -- item 8: one writer per folder -----------------------------------------------------------------------------------


def hold_lock_in_child(folder):
    """Fork a process that takes the run lock on `folder` and sleeps; returns its pid once it holds the lock."""
    from sentmim import run_folder

    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold the lock until killed
        try:
            run_folder.RunLock(folder)
            os.write(ready_write, b"1")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1"
    os.close(ready_read)
    return pid


def test_second_writer_is_refused_until_the_holder_dies(cli_run, corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    holder = hold_lock_in_child(run)
    try:
        before = snapshot(run)
        # Refused before the (missing) dataset is even looked at, resumed or not.
        for extra in (["--resume"], ["--overwrite"]):
            line = cli_error_line(capsys, "train", "--dataset", tmp_path / "missing.txt", "--output-dir", run, *extra,
                              *TINY_TRAIN)
            assert f"{run} is being written by another sentmim run (pid {holder}" in line
        assert snapshot(run) == before
    finally:
        os.kill(holder, signal.SIGKILL)  # kill -9: the holder never releases the lock itself
        os.waitpid(holder, 0)
    more = [arg if arg != "3" else "4" for arg in TINY_TRAIN]
    capsys.readouterr()
    assert main(["train", "--dataset", str(corpus_file), "--output-dir", str(run), "--resume", *more]) == 0
    assert "trained 4 steps" in capsys.readouterr().out


def test_lock_is_held_during_training_and_released_after(builtin_splits, tmp_path, monkeypatch):
    from sentmim import run_folder

    tokenizer, splits = builtin_splits
    seen = []
    real_publish = checkpointing.publish

    def publish_and_try_the_lock(checkpoints_dir, step, keep):
        with pytest.raises(run_folder.RunFolderError, match="being written by another sentmim run"):
            run_folder.check_not_locked(tmp_path / "run")
        seen.append(step)
        return real_publish(checkpoints_dir, step, keep)

    monkeypatch.setattr(checkpointing, "publish", publish_and_try_the_lock)
    model = SentenceMIMModel(tiny_model_config(tokenizer))
    train(model, tokenizer, splits, TrainingOptions(str(tmp_path / "run"), max_steps=2, eval_steps=1,
                                                      disable_tqdm=True))
    assert seen == [1, 2]
    run_folder.check_not_locked(tmp_path / "run")  # released: no error
    run_folder.RunLock(tmp_path / "run").release()


def tiny_model_config(tokenizer):
    from sentmim import SentenceMIMConfig

    return SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, latent_size=4)


def tiny_model(tokenizer) -> SentenceMIMModel:
    torch.manual_seed(0)
    return SentenceMIMModel(tiny_model_config(tokenizer))


# -- item 4: the best model is published atomically, inside the output folder ----------------------------------------


def train_improving_every_evaluation(tokenizer, splits, output, monkeypatch) -> None:
    """4 steps, evaluated at 2 and 4, each evaluation better than the last: the best model is published twice."""
    losses = iter(range(100))
    monkeypatch.setattr("sentmim.training.validation_metrics", lambda *a, **k: {"val_loss": 10.0 - next(losses)})
    args = TrainingOptions(str(output), max_steps=4, eval_steps=2, lr_scheduler="constant", disable_tqdm=True)
    train(tiny_model(tokenizer), tokenizer, splits, args)


class KilledAtRename:
    """Patches publish_model and os.replace so that the process "dies" (KeyboardInterrupt) just before the
    `rename`-th rename (from 0) under `folder` during the `publication`-th best-model publication."""

    def __init__(self, monkeypatch, folder, publication: int, rename: int):
        self.folder, self.publication, self.rename = str(folder), publication, rename
        self.publications = self.renames = 0
        self.real_publish, self.real_replace = checkpointing.publish_model, os.replace
        monkeypatch.setattr(checkpointing, "publish_model", self.publish)
        monkeypatch.setattr(os, "replace", self.replace)

    def publish(self, *args):
        self.publications += 1
        self.real_publish(*args)

    def replace(self, source, target):
        if self.publications == self.publication and str(target).startswith(self.folder):
            if self.renames == self.rename:
                raise KeyboardInterrupt
            self.renames += 1
        return self.real_replace(source, target)


@pytest.mark.parametrize("publication", [1, 2])
def test_killed_mid_publish_leaves_the_old_model_or_the_new_one(publication, builtin_splits, tmp_path, monkeypatch):
    """Interrupt a best-model publication before each of its renames in turn: the folder must then load as a
    complete model (the previous weights or the new ones) or hold no model yet, and nothing may lie outside it."""
    tokenizer, splits = builtin_splits
    published = []
    real_publish = checkpointing.publish_model

    def publish_and_keep(output_dir, model, tok):
        real_publish(output_dir, model, tok)
        published.append(load_file(output_dir / "model.safetensors"))

    monkeypatch.setattr(checkpointing, "publish_model", publish_and_keep)
    train_improving_every_evaluation(tokenizer, splits, tmp_path / "reference", monkeypatch)
    monkeypatch.undo()
    assert len(published) == 2

    for rename in range(100):
        output = tmp_path / f"killed-{rename}"
        with monkeypatch.context() as patch:
            killer = KilledAtRename(patch, output, publication, rename)
            try:
                train_improving_every_evaluation(tokenizer, splits, output, patch)
            except KeyboardInterrupt:
                pass
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing outside the folder
        if killer.renames < rename:  # the publication had fewer renames: every point has been tried
            break
        if (output / "model.safetensors").is_file():
            loaded = SentenceMIMPipeline.from_pretrained(output).model.state_dict()
            assert any(all(torch.equal(loaded[name], tensor) for name, tensor in weights.items())
                       for weights in published), f"a mixed model when killed before rename {rename}"
        else:
            assert publication == 1, "a published model disappeared"
            with pytest.raises(ValueError, match="no (config.json|model.safetensors) here"):
                SentenceMIMPipeline.from_pretrained(output)
    assert rename >= 4  # the config, the generation config, the tokenizer files and the weights were all tried


def test_a_different_model_never_pairs_with_the_old_weights(builtin_splits, tmp_path, monkeypatch):
    """publish_model into a folder holding another model (other sizes): interrupted after the config moved, the
    folder holds no weights rather than weights the new config cannot describe."""
    tokenizer, _ = builtin_splits
    small = SentenceMIMModel(tiny_model_config(tokenizer))
    checkpointing.publish_model(tmp_path, small, tokenizer)
    config = tiny_model_config(tokenizer)
    config.latent_size = 6
    larger = SentenceMIMModel(config)
    real_replace = os.replace

    def die_after_config(source, target):
        real_replace(source, target)
        if str(target).endswith("config.json"):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", die_after_config)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.publish_model(tmp_path, larger, tokenizer)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (tmp_path / "model.safetensors").exists()
    checkpointing.publish_model(tmp_path, larger, tokenizer)
    assert SentenceMIMPipeline.from_pretrained(tmp_path).model.config.latent_size == 6


# -- item 9: an unwritable output folder, before any data is loaded ---------------------------------------------------


def test_unwritable_output_folder_is_reported_before_the_data(tmp_path, capsys):
    unwritable = "/proc/sentmim-cannot-write-here/run"  # procfs takes no new files, even from root
    line = cli_error_line(capsys, "train", "--dataset", tmp_path / "missing.txt", "--output-dir", unwritable,
                          *TINY_TRAIN)
    assert unwritable in line and "cannot write in /proc" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = cli_error_line(capsys, "train", "--dataset", tmp_path / "missing.txt", "--output-dir", folder / "run",
                          *TINY_TRAIN)
        assert "cannot write in" in line and "Permission denied" in line
    finally:
        folder.chmod(0o755)


class AdapterLike:
    """A model whose save_pretrained writes other names than ours (as a peft LoRA model does)."""

    def save_pretrained(self, folder):
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "README.md").write_text("model card")
        save_file({"lora_A": torch.zeros(2, 2)}, folder / "adapter_model.safetensors")


def test_files_a_publication_writes_count_as_the_runs(builtin_splits, tmp_path):
    from sentmim import run_folder

    tokenizer, _ = builtin_splits
    run = tmp_path / "run"
    run_folder.RunLock(run).release()
    checkpointing.publish_model(run, AdapterLike(), tokenizer)
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= run_folder.written_names(run)
    assert run_folder.foreign_entries(run, run_folder.RUN_LAYOUT) == []
    run_folder.check_overwrite(run, run_folder.RUN_LAYOUT)  # all of it the run's: may be overwritten
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files a run did not write \(notes\.txt\)"):
        run_folder.check_overwrite(run, run_folder.RUN_LAYOUT)
