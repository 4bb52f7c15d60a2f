"""Atomic, resumable training checkpoints.

A checkpoint is a folder `checkpoints/step_N/` holding
    model.safetensors        the weights (safetensors: loading never runs pickled code)
    optimizer.pt             optimizer state, loaded with torch.load(weights_only=True)
    rng_state_{rank}.pt      each process's torch (and CUDA) random state, weights_only as well
    trainer_state.json       step, epoch, position in the epoch, schedules, best metric, ...
It is written under a temporary name and renamed into place only when complete, and `checkpoints/latest` (a one-line
file, itself replaced atomically) names the newest one. A process killed mid-save leaves the previous checkpoint and
pointer untouched; resume ignores unfinished folders.
"""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"
TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a one-line message saying which and what to do."""


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def staging_dir(checkpoints_dir: Path, step: int) -> Path:
    return checkpoints_dir / f"{TMP_PREFIX}step_{step}"


def save_rng_state(folder: Path, rank: int) -> None:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, folder / f"rng_state_{rank}.pt")


def save_main_state(folder: Path, model_state: dict, optimizer, trainer_state: dict) -> None:
    """Weights, optimizer and trainer state (main process only; the RNG files come from every process)."""
    # safetensors refuses tensors that share memory (tied weights): store each tensor once, contiguous.
    aliases = shared_aliases(model_state)
    unique = {name: tensor.detach().cpu().contiguous() for name, tensor in model_state.items() if name not in aliases}
    save_file(unique, folder / "model.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))


def shared_aliases(state: dict) -> set[str]:
    """Names of the tensors that share memory with one named before them (tied weights, at any depth): a checkpoint
    stores each tensor under its first name only."""
    seen, aliases = set(), set()
    for name, tensor in state.items():
        if tensor.data_ptr() in seen:
            aliases.add(name)
        seen.add(tensor.data_ptr())
    return aliases


def publish(checkpoints_dir: Path, step: int, keep: int) -> Path:
    """Rename the finished staging folder into place, point `latest` at it, and prune old checkpoints."""
    final = checkpoints_dir / f"step_{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging_dir(checkpoints_dir, step), final)
    write_text_atomic(checkpoints_dir / LATEST, final.name)
    finished = sorted(
        (p for p in checkpoints_dir.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1])
    )
    for old in finished[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    pointer = checkpoints_dir / LATEST
    if not pointer.is_file():
        return None
    folder = checkpoints_dir / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_checkpoint(folder: Path, model, optimizer, rank: int) -> dict:
    """Restore weights, optimizer and this process's RNG; return the trainer state. One-line errors on damage."""
    try:
        trainer_state = json.loads((folder / "trainer_state.json").read_text())
        weights = load_file(folder / "model.safetensors")
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        rng_file = folder / f"rng_state_{rank}.pt"
        if not rng_file.is_file():  # resumed with more processes than saved it
            rng_file = folder / "rng_state_0.pt"
        rng_state = torch.load(rng_file, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any damage gets the same actionable message
        raise CheckpointError(
            f"checkpoint {folder} is unreadable ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            f"delete it and point {folder.parent / LATEST} at an older step_N folder, or start again with --overwrite"
        ) from None
    expected = model.state_dict()
    tied = shared_aliases(expected)  # loading the first name of a shared tensor fills the others
    missing = sorted(set(expected) - set(weights) - tied)
    unexpected = sorted(set(weights) - set(expected))
    reshaped = sorted(name for name in set(weights) & set(expected) if weights[name].shape != expected[name].shape)
    if missing or unexpected or reshaped:  # checked first: load_state_dict would raise a multi-line RuntimeError
        raise CheckpointError(
            f"checkpoint {folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"other shape {reshaped[:3]}); resume with the same model settings or start again with --overwrite"
        )
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(rng_state["cpu"])
    if "cuda" in rng_state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng_state["cuda"])
    return trainer_state
