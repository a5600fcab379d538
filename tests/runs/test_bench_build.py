"""bench builds its models with the recipe it is given (`build.key=value` on the command line)."""

from __future__ import annotations

import pytest

from obliviate.runs import bench as B


class _Built(Exception):
    pass


def test_build_overrides_reach_the_build_with_the_base(monkeypatch, tmp_path, cli):
    seen = {}

    def fake_build(scenario, overrides=None):
        seen.update(scenario=scenario, overrides=overrides)
        raise _Built

    monkeypatch.setattr(B, "build_models", fake_build)
    with pytest.raises(_Built):
        B.bench("tofu-mini", ["ga"], tmp_path / "b", base="smollm2-135m",
                build={"rehearsal": {"source": "general"}, "train": {"epochs": 3}})
    assert seen == {"scenario": "tofu-mini", "overrides": {"rehearsal": {"source": "general"}, "train": {"epochs": 3},
                                                           "base": "smollm2-135m"}}
    seen.clear()
    with pytest.raises(_Built):
        cli("bench", "--methods", "ga", "--out", str(tmp_path / "c"), "build.train.epochs=3")
    assert seen["overrides"] == {"train": {"epochs": 3}}


def test_a_benchmark_directory_of_other_models_is_refused(monkeypatch, tmp_path):
    """The first run records the models' build key; a run on other models (another recipe) into the same directory
    is refused before any evaluation, and the same models resume."""
    from types import SimpleNamespace

    from obliviate.errors import ConfigError

    key = {"k": "key-1"}
    monkeypatch.setattr(B, "build_models", lambda scenario, overrides=None: SimpleNamespace(info={"key": key["k"]}))

    def stop(*a, **k):
        raise _Built

    monkeypatch.setattr(B, "load_scenario", stop)
    with pytest.raises(_Built):
        B.bench("tofu-mini", ["ga"], tmp_path / "b")
    with pytest.raises(_Built):  # the same models: resumed
        B.bench("tofu-mini", ["ga"], tmp_path / "b")
    key["k"] = "key-2"
    with pytest.raises(ConfigError, match="holds a benchmark of other models"):
        B.bench("tofu-mini", ["ga"], tmp_path / "b", build={"train": {"epochs": 3}})
