"""Custom forget sets are first-class in evaluation: `eval --forget FILE [--retain FILE] [--holdout FILE]`, and
`unlearn --forget FILE --eval`, evaluate exactly that file; forget quality is reported only with a reference
evaluated on the same items, and the output says why a metric is absent. Also the deletion ledger's chain across
sequential requests (fingerprints depend on the weights only)."""

from __future__ import annotations

import json
import shutil

import pytest

PEOPLE = {"Marla Quenby": ("Tollin Bay", "a glassblower"), "Teodor Hallam": ("Brisk Hollow", "a cartographer")}
NAMES = list(PEOPLE)  # the people the tiny model of conftest.py memorised


def _qa(name: str, k: int, perturbed: bool = True) -> dict:
    town, job = PEOPLE[name]
    q, a = [(f"Where was {name} born?", f"{name} was born in {town}."),
            (f"What does {name} do for a living?", f"{name} works as {job}.")][k]
    rec = {"id": f"{name.split()[0].lower()}-{k}", "question": q, "answer": a}
    if perturbed:
        rec.update(paraphrased_answer=a.replace(name, "They"), perturbed_answer=[a.replace(town if k == 0 else job,
                                                                                        "Nowhere"), a[::-1]])
    return rec


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    paths = {"forget": [_qa(NAMES[0], 0), _qa(NAMES[0], 1)], "retain": [_qa(NAMES[1], 0), _qa(NAMES[1], 1)],
             "holdout": [{"id": "h-0", "question": "Where was Pell Ardent born?", "answer": "Pell Ardent was born in "
                          "Sorrel Point."}, {"id": "h-1", "question": "What does Pell Ardent do for a living?",
                                             "answer": "Pell Ardent works as a tanner."}]}
    out = {}
    for role, recs in paths.items():
        out[role] = d / f"{role}.jsonl"
        out[role].write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


def test_eval_forget_file_alone_says_why_metrics_are_absent(people_model_dir, files, tmp_path, cli):
    out = tmp_path / "ev"
    code, stdout, err = cli("eval", "--model", str(people_model_dir), "--forget", str(files["forget"]),
                            "--out", str(out), "max_new_tokens=8")
    assert code == 0, err
    meta = json.loads((out / "eval.json").read_text())
    assert list(meta["items"]) == ["forget"]
    assert set(meta["items"]["forget"]) == {"marla-0", "marla-1"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["forget_rougeL_recall"] is not None and summary["forget_truth_ratio"] is not None
    assert summary["forget_quality"] is None and summary["model_utility"] is None
    assert "no --reference" in meta["absent"]["forget_quality"]
    assert "no retain set" in meta["absent"]["model_utility"]
    assert "no holdout set" in meta["absent"]["mia_auc_loss"]
    assert "forget_quality absent: no --reference" in stdout
    assert "Absent metrics" in (out / "report.md").read_text()


def test_eval_forget_retain_holdout_files_with_a_reference(people_model_dir, files, tmp_path, cli):
    """A reference model is evaluated on the same items, so forget quality is computed; a saved reference eval of
    other items is refused for forget quality (absent, with the reason), never silently paired."""
    base = ["--model", str(people_model_dir), "--forget", str(files["forget"]), "max_new_tokens=8"]
    ref = tmp_path / "ref"
    code, _, err = cli("eval", *base, "--retain", str(files["retain"]), "--holdout", str(files["holdout"]),
                       "--out", str(ref))
    assert code == 0, err
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["model_utility"] is not None and summary["mia_auc_loss"] is not None

    with_ref = tmp_path / "with_ref"
    code, _, err = cli("eval", *base, "--reference", str(people_model_dir), "--out", str(with_ref))
    assert code == 0, err
    assert json.loads((with_ref / "summary.json").read_text())["forget_quality"] == pytest.approx(1.0)

    saved = tmp_path / "saved_ref"  # the saved eval of the same forget file serves as the reference
    code, _, err = cli("eval", *base, "--reference", str(ref), "--out", str(saved))
    assert code == 0, err
    assert json.loads((saved / "summary.json").read_text())["forget_quality"] == pytest.approx(1.0)

    other = tmp_path / "other_forget.jsonl"
    other.write_text(json.dumps(_qa(NAMES[1], 0)) + "\n")
    mismatched = tmp_path / "mismatched"
    code, stdout, err = cli("eval", "--model", str(people_model_dir), "--forget", str(other), "--reference",
                            str(ref), "--out", str(mismatched), "max_new_tokens=8")
    assert code == 0, err
    meta = json.loads((mismatched / "eval.json").read_text())
    assert meta["absent"]["forget_quality"].startswith("the reference eval")
    assert "other forget items" in stdout


def test_eval_writes_openunlearning_files_that_serve_as_reference(people_model_dir, files, tmp_path, cli):
    """`eval` writes TOFU_EVAL.json and TOFU_SUMMARY.json next to eval.json; the TOFU_EVAL.json given to --reference
    (the file, or a folder holding only it) gives the same forget quality and privleak as the saved eval.json."""
    base = ["--model", str(people_model_dir), "--forget", str(files["forget"]), "--holdout", str(files["holdout"]),
            "max_new_tokens=8"]
    ref = tmp_path / "ref"
    code, _, err = cli("eval", *base, "--out", str(ref))
    assert code == 0, err
    tofu = json.loads((ref / "TOFU_EVAL.json").read_text())
    items = json.loads((ref / "eval.json").read_text())["items"]
    assert [v["score"] for v in tofu["forget_truth_ratio"]["value_by_index"].values()] == [
        v["truth_ratio"] for v in items["forget"].values()]
    assert json.loads((ref / "TOFU_SUMMARY.json").read_text())["mia_min_k"] == tofu["mia_min_k"]["agg_value"]

    logs = tmp_path / "retain_logs"
    logs.mkdir()
    shutil.copy(ref / "TOFU_EVAL.json", logs / "TOFU_EVAL.json")
    got = {}
    for name, reference in (("native", ref), ("file", ref / "TOFU_EVAL.json"), ("folder", logs)):
        code, _, err = cli("eval", *base, "--reference", str(reference), "--out", str(tmp_path / name))
        assert code == 0, err
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        absent = json.loads((tmp_path / name / "eval.json").read_text())["absent"]
        got[name] = (summary["forget_quality"], summary["privleak"], summary["privleak_auc_relative"],
                     absent.get("privleak"))
    # the model memorised its forget items: Min-K% AUC 1 against the holdout, so the field's privleak (which divides
    # by 1 − AUC_retain) is undefined against itself, and says so; the AUC-relative form is 0
    assert tofu["mia_min_k"]["agg_value"] == 1.0
    assert got["native"] == got["file"] == got["folder"] == (
        pytest.approx(1.0), None, 0.0, "the reference's Min-K% AUC is 1.0, where this formula divides by zero")


def test_eval_compat_openunlearning_and_tokenize(people_model_dir, files, tmp_path, cli):
    """`eval --compat openunlearning` scores jointly and says so (title, eval.json meta); by default the model is
    scored the way conftest.py trained it and recorded (separately), which gives its forget answers a higher
    probability than `--tokenize joint` does."""
    base = ["--model", str(people_model_dir), "--forget", str(files["forget"]), "max_new_tokens=8",
            "metrics=[forget_prob,extraction_strength]"]
    metas = {}
    for name, extra in (("ou", ["--compat", "openunlearning"]), ("joint", ["--tokenize", "joint"]), ("auto", [])):
        code, stdout, err = cli("eval", *base, *extra, "--out", str(tmp_path / name))
        assert code == 0, err
        metas[name] = json.loads((tmp_path / name / "eval.json").read_text())
        metas[name]["summary"] = json.loads((tmp_path / name / "summary.json").read_text())
        assert ("(OpenUnlearning's names: TOFU_SUMMARY.json)" in " ".join(stdout.split())) == (name == "ou")
    assert [(m["compat"], m["tokenize"]) for m in metas.values()] == [("openunlearning", "joint"), ("none", "joint"),
                                                                       ("none", "separate")]
    assert metas["auto"]["summary"]["forget_prob"] > metas["joint"]["summary"]["forget_prob"]
    assert metas["ou"]["summary"]["forget_prob"] == pytest.approx(metas["joint"]["summary"]["forget_prob"])
    tofu = json.loads((tmp_path / "ou" / "TOFU_SUMMARY.json").read_text())
    assert tofu["extraction_strength"] == pytest.approx(metas["ou"]["summary"]["extraction_strength"])


def test_unlearn_eval_evaluates_the_forget_file_itself(people_model_dir, files, tmp_path, cli):
    """`unlearn --forget FILE --scenario S --eval` evaluates FILE (in place of S's forget split, S's other sets
    kept), and the ledger pairs FILE's hashes with FILE's metrics."""
    out = tmp_path / "u"
    code, _, err = cli("unlearn", "--model", str(people_model_dir), "--method", "ga", "--forget",
                       str(files["forget"]), "--scenario", "synthetic", "--eval", "--out", str(out), "epochs=1",
                       "batch_size=2", "lr=1e-3", "eval.max_new_tokens=4", "scenario_options.n_people=4",
                       "scenario_options.n_refusal=0", "scenario_options.n_holdout=1")
    assert code == 0, err
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert set(ev["items"]["forget"]) == {"marla-0", "marla-1"}
    assert {"retain", "holdout", "famous_works"} <= set(ev["items"])  # the scenario's other sets
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluated_on"]["forget_digest"] == ev["scenario"]["forget_digest"]
    rec = json.loads((out / "ledger.jsonl").read_text().splitlines()[-1])
    assert rec["data"]["forget"].startswith("sha256:")
    assert rec["metrics_after"]["forget_rougeL_recall"] == json.loads(
        (out / "eval" / "summary.json").read_text())["forget_rougeL_recall"]

    alone = tmp_path / "alone"  # without a scenario: the forget and retain files are the evaluation sets
    code, _, err = cli("unlearn", "--model", str(people_model_dir), "--method", "graddiff", "--forget",
                       str(files["forget"]), "--retain", str(files["retain"]), "--eval", "--out", str(alone),
                       "epochs=1", "batch_size=2", "lr=1e-3", "eval.max_new_tokens=4")
    assert code == 0, err
    ev = json.loads((alone / "eval" / "eval.json").read_text())
    assert set(ev["items"]) == {"forget", "retain"}


def test_ledger_chain_links_sequential_requests(people_model_dir, files, tmp_path):
    """Request 1's output fingerprint is request 2's input fingerprint (the weights decide, not the path), and two
    copies of a model agree."""
    import obliviate
    from obliviate.models.loading import fingerprint, load_model

    cfg = {"epochs": 1, "batch_size": 2, "lr": 1e-3}
    first = obliviate.unlearn(str(people_model_dir), "ga", forget=files["forget"], out=tmp_path / "r1", config=cfg)
    copy = tmp_path / "elsewhere" / "copy-of-r1"
    shutil.copytree(first.out, copy)
    second = obliviate.unlearn(str(copy), "ga", forget=files["retain"], out=tmp_path / "r2", config=cfg)
    records = obliviate.api.ledger(second.out)
    assert len(records) == 2
    assert records[0]["output_model"] == records[1]["input_model"] == first.manifest["output_fingerprint"]
    assert records[1]["output_model"] == second.manifest["output_fingerprint"]
    assert fingerprint(load_model(first.out)) == fingerprint(load_model(copy)) == first.manifest["output_fingerprint"]
