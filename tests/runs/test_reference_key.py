"""The key a shared reference evaluation is found by changes when the model it names changes: a directory's weights,
a single file, or the snapshot a hub id resolves to in the local Hugging Face cache."""

from __future__ import annotations

import os
from types import SimpleNamespace

from obliviate.runs import evaluate as E

SCEN = SimpleNamespace(name="s", eval_splits={"forget": SimpleNamespace(digest="d")})


def _key(model) -> str:
    return E.reference_key(model, SCEN, None, {})


def _touch_later(path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_file_is_named_by_its_content_stamp(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 16)
    first = _key(f)
    assert _key(f) == first
    _touch_later(f)
    assert _key(f) != first


def test_a_hub_id_is_named_by_its_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--model"
    assert E._hub_snapshot("org/model") is None  # not downloaded yet
    before = _key("org/model")
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert E._hub_snapshot("org/model") == "a" * 40
    old = _key("org/model")
    (repo / "refs" / "main").write_text("b" * 40)  # the hub's model changed and was downloaded again
    assert E._hub_snapshot("org/model") == "b" * 40
    assert len({before, old, _key("org/model")}) == 3
    assert _key("org/model") != _key("org/other")
