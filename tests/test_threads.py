"""OBLIVIATE_THREADS: one budget for a command, shared by the jobs it runs side by side."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from obliviate.errors import ConfigError
from obliviate.utils import threads as T


def test_the_budget_is_the_cores_unless_told(monkeypatch):
    monkeypatch.delenv(T.ENV, raising=False)
    assert T.thread_budget() == T.available_cores()
    monkeypatch.setenv(T.ENV, "3")
    assert T.thread_budget() == 3
    assert [T.per_job(j) for j in (1, 2, 3, 4)] == [3, 1, 1, 1]
    monkeypatch.setenv(T.ENV, "8")
    assert [T.per_job(j) for j in (1, 2, 3)] == [8, 4, 2]


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_budget_names_the_variable_and_the_fix(monkeypatch, raw):
    monkeypatch.setenv(T.ENV, raw)
    with pytest.raises(ConfigError, match=rf"OBLIVIATE_THREADS='{raw}' is not a positive whole number.*unset it"):
        T.thread_budget()


def test_the_cli_holds_torch_to_the_budget(monkeypatch, cli):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(T.ENV, "1")
    try:
        code, out, _ = cli("ls", "methods")
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bench_jobs_share_the_budget(monkeypatch, tmp_path):
    """A bench job's threads are its share of OBLIVIATE_THREADS (they used to be cpu_count // jobs whatever the
    variable said, so two benches side by side oversubscribed the cores)."""
    from obliviate.runs import bench as B

    jobs = []

    class _Stop(Exception):
        pass

    built = SimpleNamespace(info={"key": "k"}, target=tmp_path / "t", retain=tmp_path / "r")
    monkeypatch.setattr(B, "build_models", lambda scenario, overrides=None: built)
    monkeypatch.setattr(B, "load_scenario", lambda name, **kw: SimpleNamespace(name=name))
    monkeypatch.setattr(B, "evaluate_reference", lambda *a, **k: {})
    monkeypatch.setattr(B, "run_job", lambda job: (jobs.append(job), (_ for _ in ()).throw(_Stop))[1])
    monkeypatch.setenv(T.ENV, "2")
    with pytest.raises(_Stop):
        B.bench("tofu-mini", ["ga"], tmp_path / "b", jobs=1)
    assert jobs[-1].threads == 2
    monkeypatch.setenv(T.ENV, "1")
    with pytest.raises(_Stop):
        B.bench("tofu-mini", ["ga"], tmp_path / "b", jobs=1)
    assert jobs[-1].threads == 1
