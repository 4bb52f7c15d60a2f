"""Atomic, resumable training checkpoints, and the atomic publication of the best model.

A checkpoint is a folder `checkpoints/step_N/` holding what `accelerate`'s `save_state` writes
    model.safetensors        the weights (safetensors: loading never runs pickled code)
    optimizer.bin            optimizer state     } loaded by accelerate with torch.load(weights_only=True)
    scheduler.bin            learning-rate state }
    random_states_{rank}.pkl each process's Python, numpy, torch (and CUDA) random states, weights_only as well
plus our `trainer_state.json` (step, epoch, position in the epoch, best metric, ...). It is written under a temporary
name, flushed to disk and renamed into place only when complete, and `checkpoints/latest` (a one-line file, itself
replaced atomically) names the newest one. A process killed mid-save leaves the previous checkpoints and pointer
untouched; resume ignores unfinished folders, and when `latest` names a folder that is gone or incomplete it falls
back to the newest complete step_N folder.
"""

import contextlib
import logging
import os
import shutil
from pathlib import Path

import accelerate.utils
from safetensors import SafetensorError

from . import lora, run_folder
from .aggregate_posterior import AGGREGATE_POSTERIOR_FILE
from .files import TMP_PREFIX, first_line, read_json, replace_durably, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)
LATEST = "latest"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json")
TRAINER_STATE = "trainer_state.json"
MODEL_STAGING = f"{TMP_PREFIX}model"  # inside the output folder: the best model being written
ADAPTER_FOLDER = "adapter"  # beside a LoRA run's published (merged) model: its adapters alone


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line message saying which and what to do."""


def staging_dir(checkpoints_dir: Path, step: int) -> Path:
    return checkpoints_dir / f"{TMP_PREFIX}step_{step}"


def checkpoint_step(folder: Path) -> int | None:
    prefix, _, number = folder.name.partition("_")
    return int(number) if prefix == "step" and number.isdigit() else None


def missing_files(folder: Path) -> list[str]:
    return [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]


def step_folders(checkpoints_dir: Path) -> list[Path]:
    """The step_N folders, complete or not, oldest first (by number: step_10 is newer than step_9)."""
    found = [p for p in checkpoints_dir.glob("step_*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The step_N folders that hold every checkpoint file, oldest first."""
    return [folder for folder in step_folders(checkpoints_dir) if not missing_files(folder)]


def publish(checkpoints_dir: Path, step: int, keep: int) -> Path:
    """Rename the finished staging folder into place, point `latest` at it, and prune old checkpoints."""
    final = checkpoints_dir / f"step_{step}"
    if final.exists():  # a resumed run redoing this step; set aside atomically, so no half-deleted folder shows
        discard(final)
    replace_durably(staging_dir(checkpoints_dir, step), final)
    write_text_atomic(checkpoints_dir / LATEST, final.name)
    for old in complete_checkpoints(checkpoints_dir)[:-keep]:
        discard(old)
    return final


def discard(folder: Path) -> None:
    """Delete a checkpoint folder: renamed out of sight first, so that it vanishes whole."""
    doomed = folder.with_name(f"{TMP_PREFIX}deleting-{folder.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names, or, when it names a folder that is missing or
    incomplete (or the pointer itself is missing), the newest complete step_N folder. None when there is none."""
    checkpoints_dir = Path(checkpoints_dir)
    pointer = checkpoints_dir / LATEST
    named = checkpoints_dir / pointer.read_text().strip() if pointer.is_file() else None
    if named is not None and named.is_dir() and checkpoint_step(named) is not None and not missing_files(named):
        return named
    complete = complete_checkpoints(checkpoints_dir)
    if not complete:
        return None
    logger.warning("%s names %s, which is %s: using %s, the newest complete checkpoint", pointer,
                   named.name if named else "nothing", "missing or incomplete" if named else "absent", complete[-1])
    return complete[-1]


def saved_num_processes(folder: Path) -> int:
    """How many processes wrote the checkpoint (each saves its own random state)."""
    return len(list(folder.glob("random_states_*.pkl")))


@contextlib.contextmanager
def full_disk_as_oserror(what: str, note: str = ""):
    """A failed write (a full disk, whichever library meets it: torch reports one as a RuntimeError) as a one-line
    OSError saying what could not be written."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        raise OSError(f"could not write {what} ({first_line(error)}); free disk space, then --resume{note}") from None


def save_checkpoint(accelerator, folder: Path, trainer_state: dict) -> None:
    """accelerate's `save_state` into `folder` (every process calls it: each writes its own random state), then the
    trainer state (main process). A full disk, whichever library meets it, ends in a one-line OSError."""
    with full_disk_as_oserror(f"checkpoint {folder}", " (the previous checkpoint is intact)"):
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            write_json_atomic(folder / TRAINER_STATE, trainer_state)


def load_checkpoint(accelerator, folder: Path) -> dict:
    """Restore weights, optimizer, scheduler and this process's random states with accelerate's `load_state`;
    return the trainer state. Any damage ends in a one-line CheckpointError naming the folder."""
    try:
        trainer_state = read_json(folder / TRAINER_STATE)
        # load_state only logs a random state it cannot read and goes on, which would silently break exact resume
        accelerate.utils.load(folder / f"random_states_{accelerator.process_index}.pkl")
        accelerator.load_state(str(folder))
    except Exception as error:  # noqa: BLE001 - any damage gets the same actionable message
        raise CheckpointError(
            f"checkpoint {folder} is unreadable or does not match the model ({first_line(error)}); move that folder "
            f"out of {folder.parent} and resume again: the run then continues from the newest checkpoint before it"
        ) from None
    return trainer_state


def publish_model(output_dir: Path, model, tokenizer) -> None:
    """Save model and tokenizer into output_dir so that a reader finds the previous model or the new one, never a
    mix, and nothing is written outside output_dir.

    Everything is first written into a staging folder inside output_dir (one file system, so renames are atomic).
    The files that describe the model (config, generation config, tokenizer) move into place first and the weights
    (*.safetensors) last, in one rename. Within a run only the weights change; should a description file differ from
    the one in place (another model), or the weights come in several files, the old weights are removed first, so
    that meanwhile a reader finds no model rather than a mismatched one. The names are recorded in the folder's list
    of run files first (sentmim.run_folder), so that --overwrite knows them as the run's. An aggregate posterior
    fitted to the previous weights is removed first: it describes another model's codes (training fits a new one
    at the end of the run).

    A LoRA model is published merged, with its adapters alone in adapter/ (docs/backbones.md), which replaces the
    previous adapter/ whole just before the weights move."""
    output_dir = Path(output_dir)
    adapters = model if lora.is_lora_model(model) else None
    model = lora.merged_copy(model)
    staging = output_dir / MODEL_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    with full_disk_as_oserror(f"the model into {staging}"):
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if adapters is not None:
            adapters.save_pretrained(staging / ADAPTER_FOLDER)
    files = sorted(item for item in staging.iterdir() if item.is_file())
    weights = [item for item in files if item.name.endswith(".safetensors")]
    if not weights:
        raise RuntimeError(f"save_pretrained wrote no .safetensors file in {staging}")
    described = [item for item in files if item not in weights]
    changed = [item for item in described if not same_bytes(item, output_dir / item.name)]
    run_folder.record_written(output_dir, [item.name for item in files] + ([ADAPTER_FOLDER] if adapters else []))
    if adapters is not None:
        if (output_dir / ADAPTER_FOLDER).exists():
            discard(output_dir / ADAPTER_FOLDER)
        replace_durably(staging / ADAPTER_FOLDER, output_dir / ADAPTER_FOLDER)
    (output_dir / AGGREGATE_POSTERIOR_FILE).unlink(missing_ok=True)
    if changed or len(weights) > 1:
        for old in output_dir.glob("*.safetensors"):
            old.unlink()
    for item in changed + weights:
        replace_durably(item, output_dir / item.name)
    shutil.rmtree(staging)


def same_bytes(first: Path, second: Path) -> bool:
    return second.is_file() and first.read_bytes() == second.read_bytes()
