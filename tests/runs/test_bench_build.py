"""bench builds its models with the recipe it is given (`build.key=value` on the command line), and trains every
method on the retain set it is given (`--retain FILE|general`)."""

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


def test_every_job_trains_on_the_given_retain_file_and_its_content_keys_the_job(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(B, "load_scenario", lambda name, **k: name)
    monkeypatch.setattr(B, "unlearn", lambda target, method, **k: seen.update(k))
    f = tmp_path / "retain.jsonl"
    f.write_text('{"question": "Who painted the Mona Lisa?", "answer": "Leonardo da Vinci."}\n')
    job = B.Job("ga", {}, "target", "ref", "tofu-mini", {}, str(tmp_path / "runs" / "ga"), 1, str(f))
    assert B.run_job(job)["ok"]
    assert seen["retain"] == str(f) and seen["scenario"] == "tofu-mini"
    key = B._job_key(job)
    assert key != B._job_key(B.Job(*[getattr(job, k) for k in ("method", "config", "target", "reference_eval",
                                                                "scenario", "scenario_options", "out", "threads")]))
    f.write_text('{"question": "Who painted the Mona Lisa?", "answer": "Da Vinci."}\n')
    assert B._job_key(job) != key  # another retain set is another run, under the same path


def test_retain_general_is_the_scenario_retain_plus_the_base_answers_written_once(monkeypatch, tmp_path):
    from obliviate.data.records import QA, load_file
    from obliviate.models import bases, loading
    from obliviate.runs import rehearsal as R
    from obliviate.runs.common import load_scenario

    scen = load_scenario("synthetic")
    calls = []

    def fake_synthesize(model, tok, spec, avoid, **k):
        calls.append((model, spec.source, list(avoid)))
        return [QA("rehearsal-0", "Who painted the Mona Lisa?", "Leonardo da Vinci.")]

    monkeypatch.setattr(R, "synthesize", fake_synthesize)
    monkeypatch.setattr(bases, "resolve_base", lambda name: f"dir-of-{name}")
    monkeypatch.setattr(loading, "load_model_and_tokenizer",
                        lambda d: (type("M", (), {"eval": lambda self: f"model from {d}"})(), "tok"))
    f = R.general_retain_file(tmp_path, scen, "smollm2-135m", lambda m: None)
    f2 = R.general_retain_file(tmp_path, scen, "smollm2-135m", lambda m: None)
    assert f == f2 == str(tmp_path / "retain-general.jsonl") and len(calls) == 1  # reused
    model, source, avoid = calls[0]
    assert model == "model from dir-of-smollm2-135m" and source == "general"
    assert set(avoid) >= {r.question for r in scen.unlearn_retain.records} | {r.question for r in scen.forget.records}
    recs = load_file(f)
    n = len(scen.unlearn_retain.records)
    assert [(r.question, r.answer) for r in recs[:n]] == [(r.question, r.answer) for r in scen.unlearn_retain.records]
    assert [(r.id, r.question, r.answer) for r in recs[n:]] == [
        ("general-rehearsal-0", "Who painted the Mona Lisa?", "Leonardo da Vinci.")]
    said = []
    R.general_retain_file(tmp_path, scen, "other-base", said.append)  # OUT's copy is another base's: written again
    assert len(calls) == 2 and calls[1][0] == "model from dir-of-other-base"
    assert any("written for another base" in m for m in said)


def test_retain_general_needs_a_scenario_and_a_pretrained_base(tmp_path):
    from obliviate.errors import ConfigError
    from obliviate.runs.sweep import plan

    with pytest.raises(ConfigError, match="pretrained --base"):
        B.bench("tofu-mini", ["npo_kl"], tmp_path / "b", retain="general")
    assert not (tmp_path / "b").exists()
    kw = dict(model=None, forget=None, retain="general", space="default", objective="max forget_quality",
              config=None, scenario_options=None, data=None, eval_config=None)
    with pytest.raises(ConfigError, match="pretrained --base"):
        plan("npo_kl", scenario="tofu-mini", base="tiny", **kw)
    with pytest.raises(ConfigError, match="with --model give a retain file"):
        plan("npo_kl", scenario="tofu-mini", base="tiny", **{**kw, "model": "m"})
    p = plan("npo_kl", scenario="tofu-mini", base="smollm2-135m", **kw)
    assert p.retain == p.retain_given == "general"  # resolved to OUT/retain-general.jsonl once the models exist


def test_a_retain_file_is_checked_up_front_and_recorded_absolute(tmp_path, monkeypatch):
    from obliviate.errors import DataError
    from obliviate.runs.sweep import plan

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.jsonl").write_text('{"question": "Who painted the Mona Lisa?", "answer": "Leonardo da Vinci."}\n')
    (tmp_path / "empty.jsonl").write_text("")
    kw = dict(model=None, forget=None, space="default", objective="max forget_quality", config=None,
              scenario_options=None, data=None, eval_config=None)
    p = plan("npo_kl", scenario="tofu-mini", base="tiny", retain="r.jsonl", **kw)
    assert p.retain == p.retain_given == str(tmp_path / "r.jsonl")  # best.json and the preset name it from anywhere
    for bad, says in (("nope.jsonl", "no such file"), ("empty.jsonl", "holds no QA items")):
        with pytest.raises(DataError, match=says):  # before the build and the reference evaluations
            plan("npo_kl", scenario="tofu-mini", base="tiny", retain=bad, **kw)
        with pytest.raises(DataError, match=says):
            B.bench("tofu-mini", ["npo_kl"], tmp_path / "b", retain=bad)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # a toy build, four evaluations and one method under two seeds (~50 s): make test-all, CI
def test_a_benchmark_trains_on_the_retain_file_it_is_given(tmp_path, monkeypatch, capsys):
    """End to end on a toy build: the method's run reads the file (its manifest's retain hash and count are the
    file's), the evaluation stays the scenario's, and the leaderboard records the file. The job says where it is
    as plain lines (here at every report: the interval set to 0)."""
    from obliviate.data.records import QA, write_records
    from obliviate.utils import progress
    from obliviate.utils.io import read_json

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    retain = tmp_path / "retain.jsonl"
    write_records(retain, [QA(f"r{i}", f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(6)])
    opts = {"n_people": 10, "n_refusal": 4}
    board = B.bench("synthetic", ["graddiff"], tmp_path / "b", jobs=1, scenario_options=opts, retain=str(retain),
                    build={"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                                     "vocab_size": 400}, "train": {"epochs": 1}},
                    overrides={"graddiff": {"epochs": 1, "batch_size": 4}}, progress=lambda m: None, seeds=2)
    assert board["retain"] == str(retain.resolve())
    # the second seed is another run: its own row and config, other weights, and the spread across the two
    runs = tmp_path / "b" / "runs"
    assert read_json(runs / "graddiff.seed1" / "manifest.json")["config"]["seed"] == 1
    assert read_json(runs / "graddiff" / "manifest.json")["config"]["seed"] == 0
    assert B.changed_fraction(runs / "graddiff", runs / "graddiff.seed1") > 0.01
    assert [e["runs"] for e in board["across_seeds"]] == [2]
    row = next(r for r in board["rows"] if r["name"] == "graddiff")
    assert not row.get("error") and row["model_utility"] is not None
    data = read_json(tmp_path / "b" / "runs" / "graddiff" / "manifest.json")["data"]
    assert data["n_retain"] == 6 and not str(data["retain"]).startswith("scenario:")
    assert f"Retain set trained on: {retain.resolve()}" in (tmp_path / "b" / "leaderboard.md").read_text()
    assert "Retain set trained on: " in (tmp_path / "b" / "report.html").read_text()
    said = capsys.readouterr().err.splitlines()
    assert any(ln.startswith("graddiff: unlearn, epoch 1/1 (") and " elapsed, " in ln for ln in said)
    assert any(ln.startswith("graddiff: eval, ") and "scoring answers" in ln for ln in said)
