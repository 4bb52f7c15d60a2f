"""sentmim.files: a replaced file's data reaches the disk before its new name does (so a power loss cannot leave the
name on missing data), unless SENTMIM_FSYNC=0; JSON read errors name the file; a JSON-lines log loses at most its
torn last line; file names made from split specs."""

import json
import logging
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


def test_write_json_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "eval_results_test.json"  # the folder does not exist yet
    assert files.write_json_atomic(path, {"iw_nll": 1.5, "collapsed": False, "bleu4_corpus": None}) == path
    files.write_json_atomic(path, {"iw_nll": 2.5, "collapsed": True, "bleu4_corpus": None})  # replaces the first
    assert json.loads(path.read_text()) == {"iw_nll": 2.5, "collapsed": True, "bleu4_corpus": None}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    records = [{"step": 1, "loss": 2.5}, {"step": 2, "val_kl": float("nan")}]
    text = "".join(json.dumps(record) + "\n" for record in records)
    path.write_text(text + "\n")  # a blank line is no record
    assert json.dumps(files.read_jsonl(path)) == json.dumps(records)
    path.write_bytes(text.encode() + b'{"step": 3, "text": "\xc3')  # cut inside a key and a UTF-8 character
    with caplog.at_level(logging.WARNING, logger="sentmim.files"):
        assert json.dumps(files.read_jsonl(path)) == json.dumps(records)
    assert f"{path}: dropped its torn last line" in caplog.text
    path.write_text(text + "[1, 2]\n")  # JSON, but not a record
    assert len(files.read_jsonl(path)) == 2


def test_read_jsonl_refuses_a_damaged_line_before_the_last(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    with pytest.raises(ValueError, match=f"^{path} line 2 is not JSON .*: delete that line$"):
        files.read_jsonl(path)
    with pytest.raises(ValueError, match="line 2 is not JSON .*: delete that line, then resume again$"):
        files.read_jsonl(path, what_to_do="delete that line, then resume again")


@pytest.mark.parametrize(("split", "name"), [("test", "test"), ("test[:100]", "test_100"),
                                             ("train[10%:20%]+test", "train_10_20_test"), ("[]", "split")])
def test_file_safe(split, name):
    assert files.file_safe(split) == name
