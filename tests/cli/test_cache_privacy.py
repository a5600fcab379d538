"""What the cache keeps, and `obliviate cache purge`: the forget set's generations (which decode to what the model
still says about the forget data) are stored only when asked; a model's cached passes can be purged by model, and
everything obliviate cached by `cache purge` alone, never anything else under the cache root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("OBLIVIATE_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.fixture
def forget_file(tmp_path) -> Path:
    p = tmp_path / "forget.jsonl"
    p.write_text(json.dumps({"question": "Where was Marla Quenby born?", "answer": "Marla Quenby was born in Tollin "
                             "Bay."}) + "\n")
    return p


def _entries(root: Path, kind: str) -> list[Path]:
    return sorted((root / "passes").rglob(f"{kind}-*")) if (root / "passes").exists() else []


def test_forget_generations_are_cached_only_when_asked(people_model_dir, forget_file, cache, tmp_path, cli):
    code, _, err = cli("eval", "--model", str(people_model_dir), "--forget", str(forget_file), "--out",
                       str(tmp_path / "a"), "max_new_tokens=8")
    assert code == 0, err
    assert _entries(cache, "logprob"), "the teacher-forced pass (numbers, not text) is cached"
    assert not _entries(cache, "generate"), "forget-set generations were stored without being asked"

    code, _, err = cli("eval", "--model", str(people_model_dir), "--forget", str(forget_file), "--out",
                       str(tmp_path / "b"), "max_new_tokens=8", "cache_forget_generations=true")
    assert code == 0, err
    assert _entries(cache, "generate")


def test_cache_purge_by_model_then_everything(people_model_dir, forget_file, cache, tmp_path, cli):
    from obliviate.models.loading import fingerprint, load_model

    code, _, err = cli("eval", "--model", str(people_model_dir), "--forget", str(forget_file), "--out",
                       str(tmp_path / "a"), "max_new_tokens=8")
    assert code == 0, err
    fp = fingerprint(load_model(people_model_dir))
    other = cache / "passes" / "another-model" / "logprob-x.npz"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    mine = cache / "not-obliviates" / "keep.txt"  # OBLIVIATE_CACHE may point at a shared folder
    mine.parent.mkdir(parents=True)
    mine.write_text("keep")
    assert (cache / "passes" / fp).is_dir()

    code, out, err = cli("cache", "purge", "--model", str(people_model_dir))
    assert code == 0, err
    assert not (cache / "passes" / fp).exists() and other.is_file()
    assert f"passes/{fp}" in out.replace("\n", "")

    code, out, err = cli("cache", "purge")
    assert code == 0, err
    assert not (cache / "passes").exists() and mine.read_text() == "keep"
    code, out, _ = cli("cache", "purge")
    assert code == 0 and "nothing cached" in out
