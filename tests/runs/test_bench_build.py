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
