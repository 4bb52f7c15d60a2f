"""The output folder of a training run: what a run writes there (RUN_LAYOUT), the lock that keeps out a second
writer, and the only deletion `--overwrite` ever does (the user's view: docs/errors.md).

A run marks a folder as its own with the file `.sentmim-run`, created before anything else is written. While the run
writes, its main process holds an exclusive `flock` on that file. The operating system drops the lock however the
process ends (kill -9 included), so a dead run never blocks the next one and a live run always blocks a second writer.
"""

import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path

from .files import TMP_PREFIX, read_json, write_json_atomic

MARKER = ".sentmim-run"
WRITTEN = ".sentmim-files"  # names a run put in the folder beyond RUN_LAYOUT (whatever save_pretrained wrote)

# What a training run writes (glob patterns; a dict describes a folder's own contents, None accepts the entry whole).
CHECKPOINTS_LAYOUT = {"step_*": None, f"{TMP_PREFIX}*": None, "latest": None, "run": None}
RUN_LAYOUT = {
    MARKER: None, WRITTEN: None,
    "config.json": None, "generation_config.json": None, "model.safetensors": None,  # the best model
    "tokenizer.json": None, "tokenizer_config.json": None, "special_tokens_map.json": None,  # its tokenizer
    "aggregate_posterior.safetensors": None,  # fitted to the best model's training codes at the end
    "checkpoints": CHECKPOINTS_LAYOUT,
    "log.jsonl": None, "training_args.json": None, "run_options.json": None, "train_results.json": None,
    "eval_results_*.json": None, ".eval_results_*.tmp": None,  # recipes/train.py's test evaluation
    "sentmim": None,  # TensorBoard events (--report-to tensorboard)
    f"{TMP_PREFIX}*": None,  # files being written
}


class RunFolderError(ValueError):
    """A folder a run may not use as it was asked to; the message says which files are in the way."""


def record_written(folder: Path, names: list[str]) -> None:
    """Add `names` to the folder's list of files its run wrote (before the files appear there)."""
    listed = written_names(folder)
    if not set(names) <= listed:
        write_json_atomic(Path(folder) / WRITTEN, sorted(listed | set(names)))


def written_names(folder: Path) -> set[str]:
    path = Path(folder) / WRITTEN
    return set(read_json(path)) if path.is_file() else set()


def foreign_entries(folder: Path, layout: dict) -> list[Path]:
    """Entries of `folder` (recursively where the layout describes sub-folders) that neither the layout nor the
    folder's list of written files names."""
    foreign = []
    layout = {**layout, **dict.fromkeys(written_names(folder))}
    for entry in sorted(Path(folder).iterdir()):
        pattern = next((pattern for pattern in layout if fnmatch(entry.name, pattern)), None)
        if pattern is None:
            foreign.append(entry)
        elif isinstance(layout[pattern], dict):
            if entry.is_dir() and not entry.is_symlink():
                foreign += foreign_entries(entry, layout[pattern])
            else:
                foreign.append(entry)
    return foreign


def describe(paths: list[Path], root: Path, limit: int = 3) -> str:
    names = [str(path.relative_to(root)) for path in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(names) + more


def is_marked(folder: Path) -> bool:
    """Whether a sentmim run wrote this folder: it carries the mark, or (runs from before the mark existed) a run's
    training_args.json and checkpoints/run/config.json."""
    folder = Path(folder)
    legacy = (folder / "training_args.json").is_file() and (folder / "checkpoints" / "run" / "config.json").is_file()
    return (folder / MARKER).is_file() or legacy


def check_overwrite(folder: Path, layout: dict, dataset: str | None = None, marked: bool | None = None) -> None:
    """Refuse (deleting nothing) to overwrite a folder that holds anything a run did not write, or the dataset."""
    folder = Path(folder)
    if dataset and Path(dataset).exists() and Path(dataset).resolve().is_relative_to(folder.resolve()):
        raise RunFolderError(
            f"--overwrite would delete the dataset being read: {dataset} is inside --output-dir {folder}; "
            "keep data and runs in separate folders"
        )
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not (is_marked(folder) if marked is None else marked):
        entries = sorted(folder.iterdir())
        raise RunFolderError(
            f"--overwrite refused: {folder} was not written by a sentmim run (it holds {describe(entries, folder)}); "
            "nothing was deleted: choose a new or empty output folder"
        )
    foreign = foreign_entries(folder, layout)
    if foreign:
        raise RunFolderError(
            f"--overwrite refused: {folder} holds files a run did not write ({describe(foreign, folder)}); nothing "
            "was deleted: move them elsewhere, or choose a new output folder"
        )


def clear(folder: Path) -> None:
    """Delete what `check_overwrite` accepted (call it first): everything in the folder but the mark, which carries
    the lock."""
    for entry in Path(folder).iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be written, before any time is spent on data. The folder itself, or
    where it would be created, is tried with an invisible temporary file."""
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.parents) if path.exists())  # "/" or "." at the latest
    if not existing.is_dir():
        raise RunFolderError(f"--output-dir {folder}: {existing} is a file, not a folder; pass a folder path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise RunFolderError(
            f"--output-dir {folder}: cannot write in {existing} ({error.strerror}); choose a writable folder"
        ) from None


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _busy(folder: Path) -> RunFolderError:
    return RunFolderError(
        f"{folder} is being written by another sentmim run ({_holder(folder / MARKER)}): wait for it to finish, "
        "stop it, or choose another output folder"
    )


def check_not_locked(folder: Path) -> None:
    """Refuse at once a folder that a live run holds (a shared lock: several processes may check together)."""
    marker = Path(folder) / MARKER
    try:
        descriptor = os.open(marker, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(Path(folder)) from None
    finally:
        os.close(descriptor)  # closing drops the shared lock


class RunLock:
    """The exclusive lock of a run on its output folder (created if needed); `release()` or process exit drops it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.folder / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
        for _ in range(20):  # another process may be checking the folder this very moment (a shared lock)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            os.close(descriptor)
            raise _busy(self.folder)
        self.descriptor = descriptor
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode() + b"\n", 0)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the only descriptor of the lock releases it
            self.descriptor = None
