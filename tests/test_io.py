"""Tests for obliviate.utils.io (atomic outputs) and obliviate.utils.hashing (stable cache-key hashes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from obliviate.errors import OutputExistsError
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_dir, atomic_write_json, check_output_dir, read_json


class Boom(RuntimeError):
    pass


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------------- atomic_dir


def test_atomic_dir_creates_directory_on_success(tmp_path):
    """The body writes into a temp dir that becomes `path`; nothing else is left in the parent."""
    out = tmp_path / "run"
    with atomic_dir(out) as d:
        assert d != out and d.parent == tmp_path
        (d / "result.json").write_text("{}")
        assert not out.exists()
    assert _names(out) == ["result.json"]
    assert _names(tmp_path) == ["run"]


def test_atomic_dir_leaves_nothing_when_body_raises(tmp_path):
    """An exception in the body removes the temp dir and creates no output."""
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "run") as d:
            (d / "half.json").write_text("{")
            raise Boom()
    assert _names(tmp_path) == []


def test_atomic_dir_failure_keeps_previous_output(tmp_path):
    """With overwrite=True, a failing body leaves the old directory as it was."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(out, overwrite=True) as d:
            (d / "new.txt").write_text("new")
            raise Boom()
    assert _names(out) == ["old.txt"]
    assert _names(tmp_path) == ["run"]


def test_atomic_dir_overwrite_replaces_existing(tmp_path):
    """overwrite=True replaces an existing directory's contents wholesale, leaving no trash behind."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out, overwrite=True) as d:
        (d / "new.txt").write_text("new")
    assert _names(out) == ["new.txt"]
    assert _names(tmp_path) == ["run"]


def _competitor_lands_first(monkeypatch) -> None:
    """Make the first rename of a finished directory find another writer's directory already at its target, as
    when two processes (sweep workers sharing a cache entry) finish the same path at once."""
    real = os.replace

    def racing(src, dst):
        if Path(src).is_dir() and not Path(dst).exists() and not getattr(racing, "done", False):
            racing.done = True
            Path(dst).mkdir()
            (Path(dst) / "theirs.txt").write_text("theirs")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", racing)


def test_atomic_dir_overwrite_survives_a_competing_writer(tmp_path, monkeypatch):
    """With overwrite=True, a directory that lands at `path` between the existence check and the rename is
    replaced (the last writer wins), not an error (it was `Directory not empty`), and no trash is left."""
    out = tmp_path / "entry"
    _competitor_lands_first(monkeypatch)
    with atomic_dir(out, overwrite=True) as d:
        (d / "ours.txt").write_text("ours")
    assert _names(out) == ["ours.txt"]
    assert _names(tmp_path) == ["entry"]


def test_atomic_dir_without_overwrite_refuses_a_competing_writer(tmp_path, monkeypatch):
    """Without overwrite, a directory that lands at `path` meanwhile is refused as an existing output: the other
    writer's files stay, ours are removed."""
    out = tmp_path / "run"
    _competitor_lands_first(monkeypatch)
    with pytest.raises(OutputExistsError, match="already exists"):
        with atomic_dir(out) as d:
            (d / "ours.txt").write_text("ours")
    assert _names(out) == ["theirs.txt"]
    assert _names(tmp_path) == ["run"]


def test_atomic_dir_refuses_existing_non_empty_dir(tmp_path):
    """Without overwrite an existing non-empty dir raises OutputExistsError mentioning --overwrite, before any work."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    entered = False
    with pytest.raises(OutputExistsError, match="--overwrite") as e:
        with atomic_dir(out):
            entered = True
    assert not entered
    assert str(out) in str(e.value)
    assert _names(out) == ["keep.txt"]
    assert _names(tmp_path) == ["run"]


def test_atomic_dir_allows_existing_empty_dir(tmp_path):
    """An existing EMPTY directory is not an error without overwrite."""
    out = tmp_path / "run"
    out.mkdir()
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("a")
    assert _names(out) == ["a.txt"]


def test_atomic_dir_creates_missing_parents(tmp_path):
    """Missing parent directories of the output are created."""
    out = tmp_path / "a" / "b" / "run"
    with atomic_dir(out) as d:
        (d / "x").write_text("x")
    assert (out / "x").read_text() == "x"


def test_check_output_dir_refuses_a_file(tmp_path):
    """An output path that is a file is refused even with overwrite."""
    f = tmp_path / "run"
    f.write_text("not a dir")
    with pytest.raises(OutputExistsError, match="not a directory"):
        check_output_dir(f, overwrite=True)


# ---------------------------------------------------------------------------------------------- JSON


def test_atomic_write_json_round_trip(tmp_path):
    """Nested data, non-ASCII text, tuples and Paths are written and read back; no temp files remain."""
    p = tmp_path / "sub" / "out.json"
    obj = {"name": "Zoë", "scores": [0.5, 1.0], "nested": {"ok": True, "none": None}}
    atomic_write_json(p, {**obj, "pair": (1, 2), "path": Path("/x/y")})
    assert read_json(p) == {**obj, "pair": [1, 2], "path": "/x/y"}
    assert "Zoë" in p.read_text(encoding="utf-8")
    assert _names(p.parent) == ["out.json"]


def test_atomic_write_json_writes_numpy_scalars(tmp_path):
    """Objects with `.item()` (numpy/torch scalars) are written as plain numbers."""
    np = pytest.importorskip("numpy")
    p = tmp_path / "o.json"
    atomic_write_json(p, {"x": np.float32(0.5), "n": np.int64(3)})
    assert json.loads(p.read_text()) == {"x": 0.5, "n": 3}


def test_atomic_write_json_failure_keeps_old_file(tmp_path):
    """An unserialisable object raises and leaves the previous file and no temp file."""
    p = tmp_path / "o.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"v": object()})
    assert read_json(p) == {"v": 1}
    assert _names(tmp_path) == ["o.json"]


# ---------------------------------------------------------------------------------------------- hashing


def test_stable_hash_is_dict_order_independent():
    """Dicts with the same items in a different order (nested too) hash equally."""
    a = {"lr": 1e-5, "method": "npo", "train": {"steps": 3, "bs": 8}}
    b = {"train": {"bs": 8, "steps": 3}, "method": "npo", "lr": 1e-5}
    assert stable_hash(a) == stable_hash(b)


def test_stable_hash_changes_with_content_and_has_length():
    """A changed value changes the hash; `length` sets the hex length."""
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash([1, 2]) != stable_hash([2, 1])
    assert len(stable_hash({"a": 1})) == 16
    assert len(stable_hash({"a": 1}, length=8)) == 8
    assert all(c in "0123456789abcdef" for c in stable_hash("x"))


def test_file_hash_depends_on_bytes(tmp_path):
    """Files with equal bytes hash equally; a changed byte changes the hash."""
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"abc")
    (tmp_path / "c").write_bytes(b"abd")
    assert file_hash(tmp_path / "a") == file_hash(tmp_path / "b")
    assert file_hash(tmp_path / "a") != file_hash(tmp_path / "c")
