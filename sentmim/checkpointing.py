"""Atomic, resumable training checkpoints, and the atomic publication of the best model.

A checkpoint is a folder `checkpoints/step_N/` holding
    model.safetensors        the weights (safetensors: loading never runs pickled code)
    optimizer.pt             optimizer state, loaded with torch.load(weights_only=True)
    rng_state_{rank}.pt      each process's torch (and CUDA) random state, weights_only as well
    trainer_state.json       step, epoch, position in the epoch, schedules, best metric, ...
It is written under a temporary name, flushed to disk and renamed into place only when complete, and
`checkpoints/latest` (a one-line file, itself replaced atomically) names the newest one. A process killed mid-save
leaves the previous checkpoints and pointer untouched; resume ignores unfinished folders, and when `latest` names a
folder that is gone or incomplete it falls back to the newest complete step_N folder.
"""

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import run_folder
from .files import TMP_PREFIX, read_json, replace_durably, write_text_atomic

logger = logging.getLogger(__name__)
LATEST = "latest"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state_0.pt")
WEIGHTS = "model.safetensors"  # a checkpoint's weights
MODEL_STAGING = f"{TMP_PREFIX}model"  # inside the output folder: the best model being written


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line message saying which and what to do."""


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"


def staging_dir(checkpoints_dir: Path, step: int) -> Path:
    return checkpoints_dir / f"{TMP_PREFIX}step_{step}"


def save_rng_state(folder: Path, rank: int) -> None:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        torch.save(state, folder / f"rng_state_{rank}.pt")
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        raise OSError(
            f"could not write checkpoint {folder} ({first_line(error)}); free disk space, then --resume"
        ) from None


def save_main_state(folder: Path, model_state: dict, optimizer, trainer_state: dict) -> None:
    """Weights, optimizer and trainer state (main process only; the RNG files come from every process)."""
    # safetensors refuses tensors that share memory (tied weights): store each tensor once, contiguous.
    aliases = shared_aliases(model_state)
    unique = {name: tensor.detach().cpu().contiguous() for name, tensor in model_state.items() if name not in aliases}
    try:
        save_file(unique, folder / WEIGHTS)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    except (OSError, RuntimeError, SafetensorError) as error:  # a full disk, whichever library meets it
        raise OSError(
            f"could not write checkpoint {folder} ({first_line(error)}); free disk space, then --resume "
            "(the previous checkpoint is intact)"
        ) from None


def shared_aliases(state: dict) -> set[str]:
    """Names of the tensors that share memory with one named before them (tied weights, at any depth): a checkpoint
    stores each tensor under its first name only."""
    seen, aliases = set(), set()
    for name, tensor in state.items():
        if tensor.data_ptr() in seen:
            aliases.add(name)
        seen.add(tensor.data_ptr())
    return aliases


def checkpoint_step(folder: Path) -> int | None:
    prefix, _, number = folder.name.partition("_")
    return int(number) if prefix == "step" and number.isdigit() else None


def missing_files(folder: Path) -> list[str]:
    return [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The step_N folders that hold every checkpoint file, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted((p for p in found if not missing_files(p)), key=checkpoint_step)


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
    return len(list(folder.glob("rng_state_*.pt")))


def load_checkpoint(folder: Path, model, optimizer, rank: int) -> dict:
    """Restore weights, optimizer and this process's RNG; return the trainer state. One-line errors on damage."""
    try:
        trainer_state = read_json(folder / "trainer_state.json")
        weights = load_file(folder / WEIGHTS)
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        rng_state = torch.load(folder / f"rng_state_{rank}.pt", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any damage gets the same actionable message
        raise CheckpointError(
            f"checkpoint {folder} is unreadable ({first_line(error)}); move that folder out of {folder.parent} and "
            "resume again: the run then continues from the newest checkpoint before it"
        ) from None
    expected = model.state_dict()
    tied = shared_aliases(expected)  # loading the first name of a shared tensor fills the others
    missing = sorted(set(expected) - set(weights) - tied)
    unexpected = sorted(set(weights) - set(expected))
    reshaped = sorted(name for name in set(weights) & set(expected) if weights[name].shape != expected[name].shape)
    if missing or unexpected or reshaped:  # checked first: load_state_dict would raise a multi-line RuntimeError
        raise CheckpointError(
            f"checkpoint {folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"other shape {reshaped[:3]}); resume with the model settings the run started with, or train into "
            "another output folder"
        )
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(rng_state["cpu"])
    if "cuda" in rng_state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng_state["cuda"])
    return trainer_state


def publish_model(output_dir: Path, model, tokenizer) -> None:
    """Save model and tokenizer into output_dir so that a reader finds the previous model or the new one, never a
    mix, and nothing is written outside output_dir.

    Everything is first written into a staging folder inside output_dir (one file system, so renames are atomic).
    The files that describe the model (config, generation config, tokenizer) move into place first and the weights
    (*.safetensors) last, in one rename. Within a run only the weights change; should a description file differ from
    the one in place (another model), or the weights come in several files, the old weights are removed first, so
    that meanwhile a reader finds no model rather than a mismatched one. The names are recorded in the folder's list
    of run files first (sentmim.run_folder), so that --overwrite knows them as the run's."""
    output_dir = Path(output_dir)
    staging = output_dir / MODEL_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except (OSError, RuntimeError, SafetensorError) as error:
        raise OSError(
            f"could not write the model into {staging} ({first_line(error)}); free disk space, then --resume"
        ) from None
    files = sorted(staging.iterdir())
    weights = [item for item in files if item.name.endswith(".safetensors")]
    if not weights:
        raise RuntimeError(f"save_pretrained wrote no .safetensors file in {staging}")
    described = [item for item in files if item not in weights]
    changed = [item for item in described if not same_bytes(item, output_dir / item.name)]
    run_folder.record_written(output_dir, [item.name for item in files])
    if changed or len(weights) > 1:
        for old in output_dir.glob("*.safetensors"):
            old.unlink()
    for item in changed + weights:
        replace_durably(item, output_dir / item.name)
    shutil.rmtree(staging)


def same_bytes(first: Path, second: Path) -> bool:
    return second.is_file() and first.read_bytes() == second.read_bytes()
