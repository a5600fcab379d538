"""OpenUnlearning's result files: TOFU_EVAL.json / TOFU_SUMMARY.json written from an evaluation (their names and
layout, our numbers), and a retain model's TOFU_EVAL.json read back as `--reference`: the round trip gives the same
forget quality, privleak and reference attack as the native reference; a file that cannot serve is a DataError
naming the problem and the fix."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from obliviate.errors import DataError
from obliviate.eval import openunlearning as OU
from obliviate.eval import specs as S
from obliviate.eval import suite
from obliviate.eval.report import write_eval
from obliviate.runs.common import resolve_reference

REFERENCE_METRICS = ["forget_quality", "privleak", "privleak_auc_relative", "mia_auc_ref"]


@pytest.fixture(scope="module")
def evaluated(scenario, tiny_models, tmp_path_factory):
    """The seed-0 model's items and every metric with the seed-1 model as its native reference, and the seed-1
    model's own full evaluation written to disk (eval.json and TOFU_EVAL.json side by side)."""
    model, ref_model, tok = tiny_models
    cfg = suite.EvalConfig(metrics=list(S.metric_specs(scenario)), max_new_tokens=4, cache=False)
    runner, ref_runner = suite.make_runner(model, tok, cfg, "m"), suite.make_runner(ref_model, tok, cfg, "ref")
    native = suite.reference_from_runner(ref_runner, scenario, cfg)
    result = suite.evaluate_runner(runner, scenario, cfg, native)
    ref_dir = tmp_path_factory.mktemp("ou") / "ref_eval"
    write_eval(ref_dir, suite.evaluate_runner(ref_runner, scenario, cfg))
    return result, native, ref_dir


def _auc_their_way(forget_scores, holdout_scores):
    """OpenUnlearning's AUC: roc_auc_score with holdout = label 1 and their loss-like scores, i.e. the share of
    (forget, holdout) pairs where the holdout item scores higher, ties 1/2."""
    wins = sum(1.0 if h > f else 0.5 if h == f else 0.0 for f in forget_scores for h in holdout_scores)
    return wins / (len(forget_scores) * len(holdout_scores))


# ------------------------------------------------------------------------------------------------ writing


def test_tofu_eval_names_and_layout(evaluated, scenario):
    result, _, _ = evaluated
    tofu = OU.tofu_eval(result.items, result.summary, result.specs)
    utility = {"famous_works": "famous_works", "world_facts": "wf"}
    assert set(scenario.utility) == set(utility)
    expected = {"forget_quality", "model_utility", "privleak", "extraction_strength", "exact_memorization",
                "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                "forget_truth_ratio", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                *(f"{u}_{m}" for u in utility.values() for m in ("Q_A_Prob_normalised", "Q_A_ROUGE", "Truth_Ratio"))}
    assert list(tofu) == sorted(expected)
    for name in ("forget_quality", "model_utility", "privleak"):
        assert tofu[name] == {"agg_value": result.summary[name]}

    forget = list(result.items["forget"].values())
    prob = tofu["forget_Q_A_Prob"]
    assert list(prob["value_by_index"]) == [str(i) for i in range(len(forget))]
    assert prob["value_by_index"]["3"] == {"prob": forget[3]["prob"], "avg_loss": forget[3]["mean_nll"]}
    assert prob["agg_value"] == result.summary["forget_prob"]
    tr = tofu["forget_truth_ratio"]
    assert [v["score"] for v in tr["value_by_index"].values()] == [v["truth_ratio"] for v in forget]
    assert tr["agg_value"] == result.summary["forget_truth_ratio"]
    assert tofu["forget_Q_A_ROUGE"]["value_by_index"]["0"] == {"rougeL_recall": forget[0]["rougeL_recall"]}
    assert tofu["extraction_strength"]["value_by_index"]["1"] == {"score": forget[1]["extraction_strength"]}
    wf = list(result.items["world_facts"].values())
    assert tofu["wf_Q_A_Prob_normalised"]["value_by_index"]["0"] == {"prob": wf[0]["norm_prob"]}
    assert tofu["wf_Truth_Ratio"]["agg_value"] == result.summary["world_facts_truth_ratio"]


def test_attack_scores_are_losses_and_the_auc_is_the_same(evaluated):
    """OpenUnlearning scores an item like a loss (higher = non-member): each score is the negation of ours, and
    their AUC convention (holdout the positive label) over their scores gives our AUC."""
    result, _, _ = evaluated
    tofu = OU.tofu_eval(result.items, result.summary, result.specs)
    mink = tofu["mia_min_k"]
    assert set(mink) == {"forget", "holdout", "auc", "agg_value"}
    assert mink["auc"] == mink["agg_value"] == result.summary["mia_auc_mink"]
    sides = {s: [v["score"] for v in mink[s]["value_by_index"].values()] for s in ("forget", "holdout")}
    for s in sides:
        assert sides[s] == [-v["mia_mink"] for v in result.items[s].values()]
        assert mink[s]["agg_value"] == pytest.approx(sum(sides[s]) / len(sides[s]))
    assert _auc_their_way(sides["forget"], sides["holdout"]) == pytest.approx(result.summary["mia_auc_mink"])
    loss = tofu["mia_loss"]["forget"]["value_by_index"]
    assert [v["score"] for v in loss.values()] == [v["mean_nll"] for v in result.items["forget"].values()]


def test_write_eval_writes_both_files_and_the_summary_drops_nulls(evaluated):
    _, _, ref_dir = evaluated  # evaluated without a reference: forget quality and privleak are null
    tofu = json.loads((ref_dir / OU.EVAL_FILE).read_text())
    summary = json.loads((ref_dir / OU.SUMMARY_FILE).read_text())
    assert tofu["forget_quality"] == {"agg_value": None} and "forget_quality" not in summary
    assert summary == {k: v["agg_value"] for k, v in tofu.items() if v["agg_value"] is not None}
    assert list(summary) == sorted(summary) and "model_utility" in summary
    assert (ref_dir / OU.EVAL_FILE).read_text().startswith('{\n    "')  # indent=4, as OpenUnlearning writes


def test_nan_values_are_written_as_null():
    """JSON has no NaN: a per-item value that could not be computed is null, and the mean skips it."""
    spec = S.metric_specs(None)["mia_auc_loss"]
    items = {"forget": {"a": {"mia_loss": -1.0}, "b": {"mia_loss": float("nan")}}, "holdout": {"c": {"mia_loss": -2.0}}}
    tofu = OU.tofu_eval(items, {"mia_auc_loss": 1.0}, [spec])
    assert tofu["mia_loss"]["forget"] == {"agg_value": 1.0,
                                          "value_by_index": {"0": {"score": 1.0}, "1": {"score": None}}}


# ------------------------------------------------------------------------------------------------ round trip


def test_own_tofu_eval_as_reference_gives_the_native_numbers(evaluated, scenario):
    """The reference model's TOFU_EVAL.json, read back, gives exactly the forget quality, privleak (both forms) and
    reference-attack AUC of the native reference computed from the model, and of its saved eval.json."""
    result, native, ref_dir = evaluated
    chosen = S.resolve(REFERENCE_METRICS, scenario)
    from_file = OU.load_reference(ref_dir / OU.EVAL_FILE, scenario)
    assert from_file.problem is None

    def summary(ref):
        return S.summarize(result.items, chosen, ref.items, ref.summary)

    want = {k: result.summary[k] for k in REFERENCE_METRICS}
    assert all(v is not None for v in want.values())
    assert summary(from_file) == want
    assert summary(suite.load_reference_eval(ref_dir, scenario)) == want
    ours = [v["truth_ratio"] for v in result.items["forget"].values()]
    theirs = [v["truth_ratio"] for v in native.items["forget"].values()]
    assert ours != theirs and want["forget_quality"] == stats.ks_2samp(ours, theirs).pvalue


def test_resolve_reference_finds_the_file_or_its_directory(evaluated, scenario, tmp_path):
    """The TOFU_EVAL.json itself, or a directory holding only it, is read as OpenUnlearning's file; a directory with
    eval.json too is read as obliviate's."""
    _, _, ref_dir = evaluated
    cfg = suite.EvalConfig()
    alone = tmp_path / "retain_logs"
    alone.mkdir()
    (alone / OU.EVAL_FILE).write_text((ref_dir / OU.EVAL_FILE).read_text())
    assert resolve_reference(str(ref_dir / OU.EVAL_FILE), scenario, cfg).source == str(ref_dir / OU.EVAL_FILE)
    assert resolve_reference(str(alone), scenario, cfg).source == str(alone / OU.EVAL_FILE)
    assert resolve_reference(str(ref_dir), scenario, cfg).source == str(ref_dir)


# ------------------------------------------------------------------------------------------------ their files


def _their_file(trs, auc=0.6, ground_truths=None, loss=None):
    """A retain log as OpenUnlearning writes it (the parts `--reference` reads, plus an unrelated metric)."""
    data = {"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {str(i): {"score": t}
                                                                         for i, t in enumerate(trs)}},
            "extraction_strength": {"agg_value": 0.1, "value_by_index": {"0": {"score": 0.1}}}}
    if auc is not None:
        data["mia_min_k"] = {"forget": {}, "holdout": {}, "auc": auc, "agg_value": auc}
    if ground_truths is not None:
        data["forget_Q_A_ROUGE"] = {"agg_value": 0.4, "value_by_index": {
            str(i): {"rougeL_recall": 0.4, "input": "q", "ground_truth": g, "generation": "x"}
            for i, g in enumerate(ground_truths)}}
    if loss is not None:
        data["mia_loss"] = {side: {"agg_value": 0.0, "value_by_index": {str(i): {"score": s} for i, s in enumerate(v)}}
                            for side, v in loss.items()}
    return data


def test_their_retain_log_pairs_items_by_index(scenario, tmp_path):
    """Item i of the file is the forget split's i-th record; a null score is left out (as OpenUnlearning does);
    forget quality is the KS test against those values, privleak reads the file's Min-K% AUC; LOSS scores become
    the reference's L̄ for the reference attack."""
    n, nh = len(scenario.forget), len(scenario.holdout)
    trs = [0.5 + 0.01 * i for i in range(n)]
    trs[2] = None
    loss = {"forget": [1.0 + i for i in range(n)], "holdout": [2.0 + i for i in range(nh)]}
    ref = OU.read_reference(tmp_path / "x.json", _their_file(trs, auc=0.6, loss=loss), scenario)
    ids = [r.id for r in scenario.forget.records]
    assert ref.problem is None and ref.summary == {"mia_auc_mink": 0.6}
    assert ref.items["forget"][ids[2]] == {"mean_nll": 3.0}  # no truth ratio: left out of forget quality
    assert ref.items["forget"][ids[5]] == {"truth_ratio": trs[5], "mean_nll": 6.0}
    assert ref.items["holdout"][scenario.holdout.records[0].id] == {"mean_nll": 2.0}

    ours = {i: {"truth_ratio": 1.0 + 0.02 * k, "mia_mink": float(k)} for k, i in enumerate(ids)}
    holdout = {r.id: {"mia_mink": -1.0} for r in scenario.holdout.records}
    out = S.summarize({"forget": ours, "holdout": holdout}, S.resolve(["forget_quality", "privleak"], scenario),
                      ref.items, ref.summary)
    kept = [k for k in range(n) if k != 2]
    assert out["forget_quality"] == stats.ks_2samp([1.0 + 0.02 * k for k in kept], [trs[k] for k in kept]).pvalue
    assert out["privleak"] == pytest.approx(-100.0)  # our AUC 1 (every forget score above the holdout's) vs 0.6


def test_their_file_without_min_k_gives_forget_quality_only(scenario, tmp_path):
    ref = OU.read_reference(tmp_path / "x.json", _their_file([1.0] * len(scenario.forget), auc=None), scenario)
    assert ref.summary == {} and len(ref.items["forget"]) == len(scenario.forget)
    reasons = suite.absent_reasons({"privleak": None}, [S.metric_spec("privleak", scenario)],
                                   {"forget": {}, "holdout": {}}, ref)
    assert "no Min-K% AUC" in reasons["privleak"] and "mia_min_k" in reasons["privleak"]


def test_their_file_of_other_items_is_refused_with_a_reason(scenario, tmp_path):
    """Their ROUGE entries carry each item's answer: a file about other items (same count) cannot serve, and the
    metrics needing it are absent with the reason; spacing and case differences from decoding are not a mismatch."""
    n = len(scenario.forget)
    answers = [r.answer for r in scenario.forget.records]
    same = OU.read_reference(tmp_path / "x.json", _their_file([1.0] * n, ground_truths=[
        a.replace(".", " .").upper() for a in answers]), scenario)
    assert same.problem is None
    other = OU.read_reference(tmp_path / "x.json", _their_file([1.0] * n, ground_truths=answers[1:] + answers[:1]),
                              scenario)
    assert other.items is None and "other forget items (item 0:" in other.problem


@pytest.mark.parametrize(("data", "needles"), [
    ([1, 2], ("expected a JSON object", "got list", "TOFU_EVAL.json")),
    ({"format": 1, "items": {}}, ("obliviate eval.json under another name", "name the file eval.json")),
    ({"hello": "world"}, ("not an evaluation file", "hello", "--reference takes")),
    ({"mia_min_k": {"agg_value": 0.5}}, ("no per-item 'forget_truth_ratio'", "found: mia_min_k", "forget quality")),
    ({"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {"0": {"score": 1.0}}}},
     ("'forget_truth_ratio' has 1 items", "forget set has {n}", "same forget split")),
    ("keys", ("keys must be the item indices 0..{last}", "'a'")),
    ("score", ("item 1: expected {{\"score\": number}}", "\"x\"")),
    ("auc", ("'mia_min_k' agg_value must be the Min-K% AUC", "1.5")),
])
def test_bad_reference_files_name_the_problem(data, needles, scenario, tmp_path):
    n = len(scenario.forget)
    good = _their_file([1.0] * n)
    if data == "keys":
        good["forget_truth_ratio"]["value_by_index"]["a"] = good["forget_truth_ratio"]["value_by_index"].pop("0")
        data = good
    elif data == "score":
        good["forget_truth_ratio"]["value_by_index"]["1"] = {"score": "x"}
        data = good
    elif data == "auc":
        good["mia_min_k"]["agg_value"] = 1.5
        data = good
    with pytest.raises(DataError) as e:
        OU.read_reference(tmp_path / "ref.json", data, scenario)
    for needle in needles:
        assert needle.format(n=n, last=n - 1) in str(e.value)


def test_malformed_json_names_the_line(scenario, tmp_path):
    p = tmp_path / "TOFU_EVAL.json"
    p.write_text('{"forget_truth_ratio": \n{"agg_value": ')
    with pytest.raises(DataError, match=r"TOFU_EVAL.json line 2: malformed JSON"):
        OU.load_reference(p, scenario)
