"""Small, careful file operations: atomic and durable replacement, and JSON reads whose errors name the file.

A file replaced with `os.replace` is seen by readers as either the old or the new version, never a mix. Flushing the
new file to disk before the rename keeps that true across a power loss, not only across a killed process.
"""

import json
import os
from pathlib import Path

TMP_PREFIX = ".tmp-"  # files and folders being written; never read, removed or replaced by the next writer


def fsync_path(path: Path) -> None:
    """Flush a file to disk, unless the environment sets SENTMIM_FSYNC=0: for throw-away runs (and the tests) on a
    slow disk, where the ~5-10 ms per file count; a killed process still leaves consistent files then, but a power
    loss may not."""
    if os.environ.get("SENTMIM_FSYNC", "1") == "0":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` over `target` atomically, after flushing `source` (a file, or a folder's files) to disk, so
    that a power loss cannot leave the new name on data that never reached the disk. (The rename itself may then be
    lost, which leaves the old version: still consistent.)"""
    source, target = Path(source), Path(target)
    for item in source.iterdir() if source.is_dir() else [source]:
        if item.is_file():
            fsync_path(item)
    os.replace(source, target)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name beside it, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(text, encoding="utf-8")
    replace_durably(tmp, path)


def write_json_atomic(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path: Path, what_to_do: str = "restore it from a copy or delete it"):
    """The parsed content of a JSON file; a one-line ValueError naming the file if it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}): {what_to_do}") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}): {what_to_do}"
        ) from None
