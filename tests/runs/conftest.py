"""Fixtures shared by the benchmark tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from obliviate.runs import bench as B
from obliviate.utils.io import atomic_write_json


class Ran(list):
    """The runs a fake benchmark trained, and the methods it makes fail."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: set[str] = set()


@pytest.fixture
def fake_bench(monkeypatch, tmp_path):
    """bench end to end with its models, evaluations and unlearning replaced: each run writes what a real one does
    (manifest, eval/summary.json) with a forget quality made from its seed, so the rows say which seed ran. Returns
    the list of (method, run name, seed) it trained; a method put in its `.fail` set raises instead."""
    built = SimpleNamespace(info={"key": "k"}, target=tmp_path / "t", retain=tmp_path / "r")
    monkeypatch.setattr(B, "build_models", lambda scenario, overrides=None: built)
    monkeypatch.setattr(B, "load_scenario", lambda name, **kw: SimpleNamespace(name=name))
    monkeypatch.setattr(B, "evaluate_reference", lambda *a, **k: {"forget_quality": 1.0})
    monkeypatch.setattr(B, "changed_fraction", lambda before, after: 0.5)
    ran = Ran()

    def unlearn(target, method, *, out, config, **kw):
        ran.append((method, out.name, config.get("seed")))
        if method in ran.fail:
            raise RuntimeError(f"{method} broke")
        seed = config.get("seed", 0)
        atomic_write_json(out / "manifest.json", {"method": method, "config": config,
                                                  "wall_time_s": 10.0 + seed, "peak_memory_bytes": 2**20})
        atomic_write_json(out / "eval" / "summary.json", {"forget_quality": 0.1 * (seed + 1), "model_utility": 0.5})

    monkeypatch.setattr(B, "unlearn", unlearn)
    return ran
