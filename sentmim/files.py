"""Small, careful file operations: atomic and durable replacement, JSON and JSON-lines reads whose errors name the
file, file names made from user text, and a library's exception as part of such a one-line error.

A file replaced with `os.replace` is seen by readers as either the old or the new version, never a mix. Flushing the
new file to disk before the rename keeps that true across a power loss, not only across a killed process.
"""

import json
import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a text file under a temporary name beside it (creating its folder if needed), then rename it into place.
    Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(text, encoding="utf-8")
    replace_durably(tmp, path)
    return path


def write_json_atomic(path: Path, value) -> Path:
    """Write `value` as indented JSON, atomically (`write_text_atomic`). Returns the path."""
    return write_text_atomic(path, json.dumps(value, indent=2) + "\n")


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


def read_jsonl(path: Path, what_to_do: str = "delete that line") -> list[dict]:
    """The records of a JSON-lines file (one JSON object per line, as logs are written), in file order.

    A torn last line, left by a writer that died or is still writing it, is dropped with a warning; a damaged line
    elsewhere is a one-line ValueError naming the file, the line and `what_to_do`. Blank lines are skipped.
    """
    path = Path(path)
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise json.JSONDecodeError("not a JSON object", line, 0)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning("%s: dropped its torn last line %r", path, line[:60])
                break
            raise ValueError(f"{path} line {number} is not JSON ({error.msg}): {what_to_do}") from None
        records.append(record)
    return records


def first_line(error: BaseException) -> str:
    """An exception as part of a one-line message: its type and its text's first line (at most 200 characters)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def file_safe(text: str) -> str:
    """Text (say, a split spec) as part of a file name: "test[:100]" -> "test_100"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "split"
