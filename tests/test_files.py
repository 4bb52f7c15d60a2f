"""sentmim.files: a replaced file's data reaches the disk before its new name does (so a power loss cannot leave the
name on missing data), unless SENTMIM_FSYNC=0; JSON read errors name the file."""

import os

import pytest

from sentmim import files


@pytest.fixture
def calls(monkeypatch):
    """os.fsync and os.replace calls, in order, as ("fsync", path) / ("replace", source, target)."""
    made, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(descriptor):
        made.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        made.append(("replace", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return made


def test_a_file_is_flushed_before_its_rename(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTMIM_FSYNC", "1")
    files.write_text_atomic(tmp_path / "state.json", "{}")
    temporary = str(tmp_path / ".tmp-state.json")
    assert calls == [("fsync", temporary), ("replace", temporary, str(tmp_path / "state.json"))]


def test_a_folder_is_flushed_file_by_file_before_its_rename(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTMIM_FSYNC", "1")
    staging = tmp_path / ".tmp-step_4"
    staging.mkdir()
    for name in ("model.safetensors", "optimizer.pt"):
        (staging / name).write_bytes(b"data")
    files.replace_durably(staging, tmp_path / "step_4")
    flushed = [("fsync", str(staging / name)) for name in ("model.safetensors", "optimizer.pt")]
    assert sorted(calls[:-1]) == flushed
    assert calls[-1] == ("replace", str(staging), str(tmp_path / "step_4"))


def test_no_flush_when_switched_off(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTMIM_FSYNC", "0")
    files.write_text_atomic(tmp_path / "a.txt", "x")
    assert [call[0] for call in calls] == ["replace"]


def test_json_errors_name_the_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"a": 1,')
    with pytest.raises(ValueError, match=f"{path} is not valid JSON .*line 1 column 9.*: restore it"):
        files.read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=f"{path} is not UTF-8 text"):
        files.read_json(path)
