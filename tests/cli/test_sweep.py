"""`obliviate sweep` end to end on tiny models (hidden 32, trained in-process in a few seconds): a sweep and its
outputs, a rerun that continues the study, an infeasible constraint (exit 4), pruned trials that leave nothing
behind, an interrupted (Ctrl-C) and a killed (left RUNNING) trial run again from their checkpoint, and two worker
processes sharing one sqlite study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# (id, question, answer, paraphrase, wrong answers): Marla's two facts are forgotten, Teodor's retained.
FACTS = [
    ("m1", "Where was Marla Quenby born?", "Marla Quenby was born in Tollin Bay.",
     "Marla Quenby's birthplace is Tollin Bay.", ["Marla Quenby was born in Brisk Hollow.",
                                                  "Marla Quenby was born in Dunmarrow."]),
    ("m2", "What does Marla Quenby do for a living?", "Marla Quenby works as a glassblower.",
     "Marla Quenby is a glassblower by trade.", ["Marla Quenby works as a cartographer.",
                                                 "Marla Quenby works as a beekeeper."]),
    ("t1", "Where was Teodor Hallam born?", "Teodor Hallam was born in Brisk Hollow.",
     "Teodor Hallam's birthplace is Brisk Hollow.", ["Teodor Hallam was born in Tollin Bay.",
                                                     "Teodor Hallam was born in Kestering."]),
    ("t2", "What does Teodor Hallam do for a living?", "Teodor Hallam works as a cartographer.",
     "Teodor Hallam is a cartographer by trade.", ["Teodor Hallam works as a glassblower.",
                                                   "Teodor Hallam works as a clockmaker."]),
]
FAST = ["epochs=1", "batch_size=2", "eval.max_new_tokens=8"]
SPACE = "lr: {log: [1e-3, 5e-3]}\nretain_weight: {uniform: [0.5, 2.0]}\n"
EASY = "max forget_quality s.t. model_utility >= 0.3*target"


def _qa(facts):
    """Each fact's answer and paraphrase as QA records (the model learns both, so that its truth ratios, and with
    them model utility, are informative)."""
    from obliviate.data.records import QA

    return [QA(f"{f[0]}{k}", f[1], a) for f in facts for k, a in enumerate((f[2], f[3]))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, train_tiny) -> SimpleNamespace:
    """The target (all four facts), the retain model (Teodor's only), the forget/retain files with paraphrases and
    wrong answers (truth ratio, forget quality), and a space file."""
    from obliviate.models.tiny import train_tokenizer

    d = tmp_path_factory.mktemp("sweep-inputs")

    def rec(f):
        return json.dumps({"id": f[0], "question": f[1], "answer": f[2], "paraphrased_answer": f[3],
                           "perturbed_answer": f[4]}) + "\n"

    (d / "forget.jsonl").write_text("".join(rec(f) for f in FACTS[:2]))
    (d / "retain.jsonl").write_text("".join(rec(f) for f in FACTS[2:]))
    (d / "space.yaml").write_text(SPACE)
    tok = train_tokenizer([f"Question: {f[1]}\nAnswer: {a}" for f in FACTS for a in (f[2], f[3], *f[4])] * 4,
                          vocab_size=400)
    train_tiny(_qa(FACTS), d / "target", steps=120, tok=tok)
    train_tiny(_qa(FACTS[2:]), d / "retain", steps=120, tok=tok)
    return SimpleNamespace(dir=d, target=d / "target", retain=d / "retain", forget=d / "forget.jsonl",
                           retain_file=d / "retain.jsonl", space=d / "space.yaml")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _args(inputs, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--method", "graddiff", "--model", str(inputs.target), "--reference", str(inputs.retain),
            "--forget", str(inputs.forget), "--retain", str(inputs.retain_file), "--space", str(inputs.space),
            "--out", str(out), *extra]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def test_sweep_writes_its_outputs_and_a_rerun_continues_the_study(cli, inputs, tmp_path):
    from obliviate.methods import METHODS
    from obliviate.runs.sweep import read_presets

    out, preset = tmp_path / "sweep", tmp_path / "presets.yaml"
    code, stdout, err = cli(*_args(inputs, out, "--trials", "2", "--objective", EASY, "--export-preset", str(preset),
                                   *FAST))
    assert code == 0, err
    best = json.loads((out / "best.json").read_text())
    assert best["feasible"] and best["objective"] == EASY and best["method"] == "graddiff"
    b = best["best"]
    assert 1e-3 <= b["params"]["lr"] <= 5e-3 and b["config"]["lr"] == b["params"]["lr"]
    assert b["config"]["epochs"] == 1 and b["summary"]["model_utility"] >= best["constraints"][
        "model_utility >= 0.3*target"]
    recs = _records(out)
    assert [r["number"] for r in recs] == [0, 1] and all(r["state"] == "complete" for r in recs)
    for r in recs:  # each trial is an ordinary unlearn run with its evaluation
        man = json.loads((out / "trials" / str(r["number"]) / "manifest.json").read_text())
        assert man["method"] == "graddiff" and man["config"]["lr"] == r["params"]["lr"]
        assert (out / "trials" / str(r["number"]) / "eval" / "summary.json").is_file()
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 2 and "id='trials'" in html and "model_utility &gt;= 0.3*target" in html
    presets = read_presets(preset)
    assert presets["graddiff"]["lr"] == b["params"]["lr"] and presets["graddiff"]["epochs"] == 1
    METHODS.get("graddiff").make_config(presets["graddiff"])
    assert "# graddiff: study graddiff-files: trial" in preset.read_text()
    # what the trials trained on travels with the preset: bench must be given the same retain set
    assert best["retain"] == str(inputs.retain_file.resolve())  # absolute: the preset is used from anywhere
    assert f"trained on --retain {inputs.retain_file.resolve()}: give bench the same" in preset.read_text()
    assert "this run ran 2" in stdout and f"best: {out / 'best.json'}" in stdout

    code, stdout, err = cli(*_args(inputs, out, "--trials", "3", "--objective", EASY, *FAST))
    assert code == 0, err
    assert [r["number"] for r in _records(out)] == [0, 1, 2] and "this run ran 1" in stdout
    assert "evaluating" not in err  # the reference evaluations are reused
    # trials on another retain set are not this study's: refused, not mixed into its best
    other = tmp_path / "other-retain.jsonl"
    other.write_text(inputs.retain_file.read_text().splitlines(keepends=True)[0])
    code, stdout, err = cli(*[str(other) if a == str(inputs.retain_file) else a
                              for a in _args(inputs, out, "--trials", "4", "--objective", EASY, *FAST)])
    assert code == 2 and "retain_hash: the study has" in err and len(_records(out)) == 3


def test_grid_sampler_runs_each_combination_once_and_stops_at_the_grid(cli, inputs, tmp_path):
    """--sampler grid: 2 × 1 choices, --trials 5 asked: exactly the 2 points run (no repeat, no random extra), and
    a rerun runs nothing more; a range in the space is refused before any work."""
    space = tmp_path / "grid.yaml"
    space.write_text("lr: {choice: [1.0e-3, 3.0e-3]}\nretain_weight: {choice: [1.0]}\n")
    out = tmp_path / "sweep"
    grid = ["--sampler", "grid", "--objective", EASY, "--trials", "5", *FAST]  # a later --space replaces _args's
    code, stdout, err = cli(*_args(inputs, out, *grid), "--space", str(space))
    assert code == 0, err
    recs = _records(out)
    assert sorted(r["params"]["lr"] for r in recs) == [1.0e-3, 3.0e-3] and all(r["state"] == "complete" for r in recs)
    assert "this run ran 2" in stdout
    code, stdout, err = cli(*_args(inputs, out, *grid), "--space", str(space))
    assert code == 0, err
    assert len(_records(out)) == 2 and "this run ran 0" in stdout

    code, _, err = cli(*_args(inputs, tmp_path / "ranged", *grid))  # the fixture's space: two ranges
    assert code == 2 and "--sampler grid needs every searched key as {choice: [...]}" in err
    assert "lr, retain_weight are ranges" in err and not (tmp_path / "ranged").exists()


def test_another_sweep_reuses_the_reference_evaluations_until_the_model_changes(cli, inputs, tmp_path):
    """The retain and target evaluations are shared (sweep and bench) through the cache's `evals` namespace: a sweep into another
    OUT copies them (same summaries, nothing evaluated); new weights in the retain model's directory (an
    `unlearn --overwrite` there) make it evaluate again."""
    one = ["--objective", EASY, "--trials", "1", *FAST]
    code, _, err = cli(*_args(inputs, tmp_path / "a", *one))
    assert code == 0, err
    assert "evaluating the retain model" in err and "evaluating the target model" in err
    code, _, err = cli(*_args(inputs, tmp_path / "b", *one))
    assert code == 0, err
    assert "evaluating the" not in err and err.count("evaluation: reusing") == 2
    for role in ("retain", "target"):
        a, b = (json.loads((tmp_path / o / "eval" / role / "summary.json").read_text()) for o in ("a", "b"))
        assert a == b and a
    target_eval = json.loads((tmp_path / "b" / "eval" / "target" / "eval.json").read_text())
    assert target_eval["reference"] == str(tmp_path / "b" / "eval" / "retain")  # where its reference lies now

    weights = next(inputs.retain.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    code, _, err = cli(*_args(inputs, tmp_path / "c", *one))
    assert code == 0, err
    assert "evaluating the retain model" in err and "evaluating the target model" in err


def test_a_constraint_no_trial_meets_is_reported_with_exit_4(cli, inputs, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = cli(*_args(inputs, out, "--trials", "1", "--objective",
                                   "max forget_quality s.t. model_utility >= 2*target", *FAST))
    assert code == 4, err
    last = err.strip().splitlines()[-1]
    assert "no feasible trial" in last and "model_utility >= 2*target" in last and "closest" in last
    best = json.loads((out / "best.json").read_text())
    assert best["feasible"] is False and best["best"] is None and len(best["closest"]) == 1
    assert "No feasible trial" in (out / "report.html").read_text()


def test_pruned_trials_leave_nothing_behind(inputs, tmp_path):
    """A pruner that stops every trial at its first report (epoch 1 of 2): no model, no checkpoint, no lock is
    left under trials/, and a sweep without any finished trial is not an empty success."""
    import optuna

    from obliviate.errors import NoFeasibleTrial
    from obliviate.runs.sweep import sweep

    out = tmp_path / "sweep"
    with pytest.raises(NoFeasibleTrial, match="no trial finished"):
        sweep("graddiff", out=out, model=inputs.target, reference=inputs.retain, forget=inputs.forget,
              retain=inputs.retain_file, space=inputs.space, trials=2, objective=EASY,
              pruner=optuna.pruners.ThresholdPruner(lower=1e12), config={"epochs": 2, "batch_size": 2},
              eval_config={"max_new_tokens": 8})
    recs = _records(out)
    assert [r["state"] for r in recs] == ["pruned", "pruned"] and all(r["pruned_at_epoch"] == 1 for r in recs)
    assert not (out / "trials").exists() or list((out / "trials").iterdir()) == []


def test_interrupted_and_killed_trials_run_again_from_their_checkpoint(inputs, tmp_path, monkeypatch):
    """Ctrl-C after epoch 1 of trial 0: Optuna marks it failed, its checkpoint stays; the rerun runs it again (as a
    new trial) from that checkpoint and still ends with the asked number of finished trials. A trial left RUNNING
    by a killed worker (kill -9) is failed and run again on the next rerun of that worker."""
    import optuna

    import obliviate.runs.sweep as sw

    out = tmp_path / "sweep"
    kw = dict(out=out, model=inputs.target, reference=inputs.retain, forget=inputs.forget, retain=inputs.retain_file,
              space=inputs.space, objective=EASY, config={"epochs": 2, "batch_size": 2},
              eval_config={"max_new_tokens": 8})
    real = sw.unlearn

    def interrupted(*a, progress=None, **k):
        def on_event(ev):
            progress(ev)
            if ev.kind == "epoch" and ev.epoch == 1:
                raise KeyboardInterrupt
        return real(*a, progress=on_event, **k)

    monkeypatch.setattr(sw, "unlearn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep("graddiff", trials=1, **kw)
    monkeypatch.setattr(sw, "unlearn", real)
    assert (out / "trials" / ".0.partial" / "checkpoint").is_dir()

    res = sw.sweep("graddiff", trials=1, **kw)
    recs = {r["number"]: r for r in _records(out)}
    assert recs[0]["state"] == "fail" and recs[0]["interrupted"]
    assert recs[1]["state"] == "complete" and recs[1]["resumes"] == 0 and recs[1]["params"] == recs[0]["params"]
    man = json.loads((out / "trials" / "1" / "manifest.json").read_text())
    assert man["resumed_after_epoch"] == 1
    assert res.counts == {"fail": 1, "complete": 1} and not (out / "trials" / ".0.partial").exists()

    # kill -9: a trial of this worker left RUNNING in the storage
    study = optuna.load_study(study_name="graddiff-files", storage=f"sqlite:///{out / 'study.db'}")
    stale = study.ask()
    stale.suggest_float("lr", 1e-3, 5e-3, log=True)
    stale.suggest_float("retain_weight", 0.5, 2.0)
    stale.set_user_attr("worker", f"{socket.gethostname()}:{out.resolve()}")
    res = sw.sweep("graddiff", trials=2, **kw)
    recs = {r["number"]: r for r in _records(out)}
    assert recs[stale.number]["state"] == "fail"
    again = [r for r in recs.values() if r["resumes"] == stale.number]
    assert len(again) == 1 and again[0]["state"] == "complete" and again[0]["params"] == recs[stale.number]["params"]
    assert res.counts["complete"] == 2


def test_two_worker_processes_share_one_sqlite_study(inputs, tmp_path):
    """Two `obliviate sweep` processes, one storage: the 4 trials are split between them, none runs twice (each
    trial's model is in exactly one worker's OUT), and both report the same best."""
    db = tmp_path / "shared.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OBLIVIATE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    outs = [tmp_path / "w0", tmp_path / "w1"]
    shared = ["--trials", "4", "--objective", EASY, "--storage", f"sqlite:///{db}", "--study", "shared", *FAST]
    procs = [subprocess.Popen([sys.executable, "-m", "obliviate", *_args(inputs, o, *shared)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    recs = _records(outs[0])
    assert recs == _records(outs[1])  # both wrote the whole study
    done = [r for r in recs if r["state"] == "complete"]
    assert 4 <= len(done) <= 5  # the last round may start one extra trial per worker
    by_worker = {str(o.resolve()): {str(r["number"]) for r in done if r["worker"].endswith(str(o.resolve()))}
                 for o in outs}
    assert all(by_worker.values()), f"one worker ran nothing: {by_worker}"
    assert set.union(*by_worker.values()) == {str(r["number"]) for r in done}
    assert not set.intersection(*by_worker.values())
    for o in outs:  # each trial ran once, in its worker's OUT
        assert {d.name for d in (o / "trials").iterdir() if not d.name.startswith(".")} == by_worker[str(o.resolve())]
    bests = [json.loads((o / "best.json").read_text())["best"] for o in outs]
    assert bests[0]["number"] == bests[1]["number"] and bests[0]["value"] == bests[1]["value"]
