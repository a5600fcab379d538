"""The one cache (obliviate.utils.cache): keys, atomic entries, corrupt entries recomputed; PassCache and the edit
statistics on top of it; the tensor utilities every pass batches with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.eval.passes import PassCache, TokenStats
from obliviate.utils.cache import JSON, NPZ, TORCH, Cache, cache_key
from obliviate.utils.tensors import IGNORE_INDEX, pad_batch


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    return tmp_path


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- keys


def test_key_separates_models_inputs_params_and_kinds():
    """Any one of (kind, model, inputs, params) changing gives another key; the same four give the same key."""
    base = cache_key("logprob", "fpA", [[1, 2, 3]], {"v": 1})
    assert base == cache_key("logprob", "fpA", [[1, 2, 3]], {"v": 1})
    others = [cache_key("generate", "fpA", [[1, 2, 3]], {"v": 1}), cache_key("logprob", "fpB", [[1, 2, 3]], {"v": 1}),
              cache_key("logprob", "fpA", [[1, 2, 4]], {"v": 1}), cache_key("logprob", "fpA", [[1, 2, 3]], {"v": 2})]
    assert len({base, *others}) == 5


def test_key_is_model_folder_then_kind_and_hash():
    key = cache_key("layer0", "abc123", "data", {"format": 1})
    folder, name = key.split("/")
    assert folder == "abc123" and name.startswith("layer0-") and len(name) == len("layer0-") + 20
    assert cache_key("x", None).startswith("_/x-")  # entries that depend on no model


@pytest.mark.parametrize("kind, fp", [("a/b", "fp"), ("ok", "../up"), ("", "fp")])
def test_key_refuses_names_that_are_not_plain_file_names(kind, fp):
    with pytest.raises(ValueError, match="letters, digits"):
        cache_key(kind, fp)


# ---------------------------------------------------------------------------------------------- entries


@pytest.mark.parametrize("codec, value", [
    (NPZ, {"a": np.arange(5), "b": np.array([0.5, 1.5])}),
    (TORCH, torch.eye(3, dtype=torch.float64)),
    (JSON, {"x": [1, 2], "y": "z"}),
])
def test_roundtrip_and_layout(root, codec, value):
    c = Cache("things")
    key = cache_key("k", "fp", [1], {})
    assert c.load(key, codec) is None
    c.save(key, value, codec)
    got = c.load(key, codec)
    if codec is NPZ:
        assert got.keys() == value.keys() and all(np.array_equal(got[k], value[k]) for k in value)
    elif codec is TORCH:
        assert torch.equal(got, value)
    else:
        assert got == value
    assert _files(root) == [f"things/{key}{codec.suffix}"]  # no temporary file left behind


@pytest.mark.parametrize("codec", [NPZ, TORCH, JSON])
def test_corrupt_entry_is_recomputed_not_trusted(root, codec):
    c = Cache("things")
    key = cache_key("k", "fp")
    c.path(key, codec).parent.mkdir(parents=True)
    c.path(key, codec).write_bytes(b"\x00garbage")
    assert c.load(key, codec) is None
    calls = []
    value = {"a": np.ones(2)} if codec is NPZ else [1.0]
    got = c.get(key, codec, lambda: calls.append(1) or value)
    assert calls == [1]
    c.get(key, codec, lambda: calls.append(1) or value)  # now stored: not computed again
    assert calls == [1] and got is value


def test_disabled_cache_stores_and_finds_nothing(root):
    c = Cache("things", enabled=False)
    key = cache_key("k", "fp")
    c.save(key, [1], JSON)
    assert c.load(key, JSON) is None and not any(root.iterdir())
    n = []
    c.get(key, JSON, lambda: n.append(1) or [1])
    c.get(key, JSON, lambda: n.append(1) or [1])
    assert n == [1, 1]


def test_a_failed_write_leaves_nothing(root):
    def boom(path, value):
        path.write_text("half")
        raise RuntimeError("disk full")

    from obliviate.utils.cache import Codec

    c = Cache("things")
    key = cache_key("k", "fp")
    with pytest.raises(RuntimeError):
        c.save(key, 1, Codec(".bin", boom, lambda p: p.read_text()))
    assert c.load(key, Codec(".bin", boom, lambda p: p.read_text())) is None
    assert _files(root) == []


def test_root_follows_the_environment_at_use(tmp_path, monkeypatch):
    c = Cache("things")
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "one"))
    assert c.root == tmp_path / "one" / "things"
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "two"))
    assert c.root == tmp_path / "two" / "things"
    assert Cache("things", root=tmp_path / "x").root == tmp_path / "x"


def test_directory_entries(root):
    c = Cache("builds")
    key = cache_key("synthetic", None, {"cfg": 1})
    assert not c.has_dir(key, "build.json")
    with pytest.raises(RuntimeError), c.write_dir(key) as d:
        (d / "build.json").write_text("{}")
        raise RuntimeError("training failed")
    assert not c.has_dir(key, "build.json") and not c.dir_path(key).exists()
    with c.write_dir(key) as d:
        (d / "model.bin").write_text("w")
        (d / "build.json").write_text("{}")
    assert c.has_dir(key, "build.json") and (c.dir_path(key) / "model.bin").is_file()


# ---------------------------------------------------------------------------------------------- users


def _stats(rng, lengths):
    return [TokenStats(rng.normal(size=n), rng.random(n) > 0.5, rng.normal(size=n), rng.random(n)) for n in lengths]


def test_pass_cache_roundtrip_and_corruption(root):
    pc = PassCache()
    rng = np.random.default_rng(0)
    stats = _stats(rng, [3, 0, 5])
    key = pc.key("logprob", "fpA", "enc", {"v": 1})
    assert pc.load_stats(key) is None
    pc.save_stats(key, stats)
    got = pc.load_stats(key)
    assert [len(s.logps) for s in got] == [3, 0, 5]
    assert all(np.array_equal(a.logps, b.logps) and np.array_equal(a.correct, b.correct) for a, b in zip(got, stats))
    assert all(np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma) for a, b in zip(got, stats))
    bare = [TokenStats(s.logps, s.correct) for s in stats]  # a pass without Min-K%++'s moments
    bkey = pc.key("logprob", "fpA", "enc", {"v": 1, "vocab_stats": False})
    pc.save_stats(bkey, bare)
    assert [(len(s.logps), s.mu, s.sigma) for s in pc.load_stats(bkey)] == [(3, None, None), (0, None, None), (5, None, None)]
    tkey = pc.key("generate", "fpA", [[1, 2]], {"max_new": 4})
    pc.save_tokens(tkey, [[5, 6], [], [7]])
    assert pc.load_tokens(tkey) == [[5, 6], [], [7]]
    assert pc.load_stats(tkey) is None  # an entry of another shape is not misread
    pc.store.path(key, NPZ).write_bytes(b"")  # corrupt
    assert pc.load_stats(key) is None
    assert (root / "passes" / "fpA").is_dir()
    assert PassCache(enabled=False).load_tokens(tkey) is None


def test_pad_batch_right_and_left():
    ids, mask, lab = pad_batch([[1, 2, 3], [4]], pad_id=0, labels=[[IGNORE_INDEX, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert lab.tolist() == [[-100, 2, 3], [4, -100, -100]]
    ids, mask, lab = pad_batch([[1, 2, 3], [4]], pad_id=9, left=True)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]] and lab is None


def test_ignore_index_is_the_templates_one():
    from obliviate.data.templates import IGNORE_INDEX as TEMPLATES_IGNORE

    assert IGNORE_INDEX == TEMPLATES_IGNORE == -100
