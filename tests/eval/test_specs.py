"""The metric specs: one spec per summary metric, the surfaces' lists derived from them, name errors, and golden
values of the summary step on hand-made per-item values (no model)."""

from __future__ import annotations

import pytest

from obliviate.errors import ConfigError, RegistryError
from obliviate.eval import metrics as M
from obliviate.eval import specs as S

# Today's lists, written out literally: the specs must reproduce them exactly (eval/report.py _ORDER for the CLI
# summary and report.md, bench/run.py ROW_KEYS, bench/report.py COLUMNS, ledger.py KEY_METRICS).
SUMMARY_ORDER = ["forget_quality", "model_utility", "forget_rougeL_recall", "forget_prob", "forget_truth_ratio",
                 "retain_rougeL_recall", "retain_prob", "retain_truth_ratio", "extraction_strength",
                 "exact_memorization", "el10", "ma", "holdout_el10", "holdout_ma", "forget_refusal_rate", "privleak",
                 "mia_auc_loss", "mia_auc_zlib", "mia_auc_mink", "mia_auc_minkpp", "mia_auc_ref"]
ROW_KEYS = ["forget_quality", "model_utility", "forget_rougeL_recall", "forget_prob", "forget_truth_ratio",
            "retain_rougeL_recall", "forget_refusal_rate", "privleak", "mia_auc_loss", "mia_auc_zlib", "mia_auc_mink",
            "mia_auc_minkpp", "extraction_strength", "el10"]
COLUMN_KEYS = ["forget_quality", "model_utility", "forget_rougeL_recall", "privleak", "mia_auc_loss", "mia_auc_zlib",
               "mia_auc_mink", "mia_auc_minkpp", "forget_refusal_rate"]
KEY_METRICS = ["forget_quality", "model_utility", "forget_rougeL_recall", "forget_prob", "privleak",
               "forget_refusal_rate"]


@pytest.mark.parametrize(("where", "expected"), [
    ("cli", SUMMARY_ORDER), ("report", SUMMARY_ORDER), ("leaderboard", ROW_KEYS), ("columns", COLUMN_KEYS),
    ("ledger", KEY_METRICS)])
def test_summary_keys_reproduce_todays_lists(where, expected, scenario):
    assert S.summary_keys(where) == expected
    assert S.summary_keys(where, scenario) == expected


def test_positions_are_unique_on_every_surface(scenario):
    for where in S.SURFACES:
        pos = [s.shown[where] for s in S.metric_specs(scenario).values() if where in s.shown]
        assert len(pos) == len(set(pos)), where


def test_unknown_surface_suggests():
    with pytest.raises(ValueError, match="did you mean 'ledger'"):
        S.summary_keys("ledgr")


def test_column_headers_come_from_label_and_direction():
    assert [(n, S.metric_spec(n).header, S.metric_spec(n).higher_is_better) for n in COLUMN_KEYS] == [
        ("forget_quality", "FQ ↑", True), ("model_utility", "MU ↑", True),
        ("forget_rougeL_recall", "forget ROUGE-L ↓", False), ("privleak", "privleak (→0)", None),
        ("mia_auc_loss", "AUC loss", None), ("mia_auc_zlib", "AUC zlib", None), ("mia_auc_mink", "AUC Min-K", None),
        ("mia_auc_minkpp", "AUC Min-K++", None), ("forget_refusal_rate", "refusals", None)]


# ------------------------------------------------------------------------------------------- specs of a scenario


def test_per_split_metrics_follow_the_scenario(scenario):
    specs = S.metric_specs(scenario)
    assert set(scenario.utility) == {"famous_works", "world_facts"}
    for split in ("forget", "retain", *scenario.utility):
        for suffix in S.FAMILY:
            assert f"{split}_{suffix}" in specs
    for s in specs.values():
        assert set(s.splits) <= set(scenario.eval_splits), s.name
    assert set(specs["model_utility"].splits) == {"retain", *scenario.utility}


def test_without_a_scenario_the_utility_family_is_a_placeholder():
    """`ls metrics` without a scenario: forget/retain (every scenario has them) and `<utility>_*`, no set names."""
    specs = S.metric_specs()
    splits = {S.family_split(n) for n in specs} - {None}
    assert splits == {"forget", "retain", S.UTILITY}
    assert "each utility set the scenario declares" in specs[f"{S.UTILITY}_prob"].doc


def test_specs_of_one_scenario_do_not_leak_into_another(scenario):
    from obliviate.data.scenarios import Scenario

    other = Scenario(**{**scenario.__dict__, "name": "other", "utility": {"trivia": scenario.utility["world_facts"]}})
    assert "trivia_prob" in S.metric_specs(other) and "trivia_prob" not in S.metric_specs(scenario)
    assert "world_facts_prob" not in S.metric_specs(other)


def test_every_spec_is_well_formed(scenario):
    for s in S.metric_specs(scenario).values():
        assert s.doc and s.splits and s.fields, s.name
        assert s.direction in S.DIRECTIONS and set(s.needs) <= S.PASSES and set(s.shown) <= set(S.SURFACES)


def test_a_malformed_spec_is_refused():
    with pytest.raises(ValueError, match="direction 'up'.*needs \\['gpu'\\]"):
        S.MetricSpec("x", lambda c: None, "doc", "up",  # type: ignore[arg-type]
                     ("forget",), ("prob",), frozenset({"gpu"}))


# ------------------------------------------------------------------------------------------- resolving names


def test_default_is_every_metric_but_the_opt_in_ones(scenario):
    names = [s.name for s in S.resolve(None, scenario)]
    assert names == [n for n, s in S.metric_specs(scenario).items() if not s.opt_in]
    assert "holdout_el10" not in names and "holdout_el10" in [s.name for s in S.resolve(["holdout_el10"], scenario)]


def test_unknown_metric_raises_with_a_suggestion(scenario):
    with pytest.raises(ConfigError, match="unknown metric 'forget_qualty'; did you mean 'forget_quality'"):
        S.resolve(["forget_qualty"], scenario)


def test_every_name_problem_is_reported_at_once(scenario):
    with pytest.raises(ConfigError) as e:
        S.resolve(["model_utility", "mia_auc_lss", "privleek"], scenario)
    assert "'mia_auc_loss'" in str(e.value) and "'privleak'" in str(e.value)


def test_metric_of_a_split_the_scenario_lacks_names_the_split(scenario):
    with pytest.raises(ConfigError, match="'real_authors_prob' reads split 'real_authors', which scenario "
                                          "'synthetic' does not have .*world_facts"):
        S.resolve(["real_authors_prob"], scenario)


def test_empty_metric_list_is_an_error(scenario):
    with pytest.raises(ConfigError, match="empty list"):
        S.resolve([], scenario)


def test_spec_lookup_suggests():
    assert S.metric_spec("privleak").direction == "closer_to_0"
    with pytest.raises(RegistryError, match="did you mean 'privleak'"):
        S.metric_spec("privleek")


# ------------------------------------------------------------------------------------------- golden summaries


def _summary(scenario, names, items, reference=None, reference_summary=None):
    return S.summarize(items, S.resolve(names, scenario), reference, reference_summary)


def test_reference_attack_golden(scenario):
    """L̄ per item (θ, reference): forget a (1.0, 3.0), b (2.0, 2.5); holdout c (2.0, 2.0), d (1.0, 1.5).
    Scores −(L̄_θ − L̄_ref): a 2.0, b 0.5; c 0.0, d 0.5. Member/non-member pairs: a>c, a>d, b>c, b=d (½):
    AUC = 3.5/4 = 0.875. An item the reference lacks (e) is left out."""
    items = {"forget": {"a": {"mean_nll": 1.0}, "b": {"mean_nll": 2.0}, "e": {"mean_nll": 9.0}},
             "holdout": {"c": {"mean_nll": 2.0}, "d": {"mean_nll": 1.0}}}
    ref = {"forget": {"a": {"mean_nll": 3.0}, "b": {"mean_nll": 2.5}},
           "holdout": {"c": {"mean_nll": 2.0}, "d": {"mean_nll": 1.5}}}
    out = _summary(scenario, ["mia_auc_ref"], items, ref)
    assert out == {"mia_auc_ref": pytest.approx(0.875)}
    assert out["mia_auc_ref"] == pytest.approx(M.auc([M.mia_reference(1.0, 3.0), M.mia_reference(2.0, 2.5)],
                                                     [M.mia_reference(2.0, 2.0), M.mia_reference(1.0, 1.5)]))
    assert _summary(scenario, ["mia_auc_ref"], items) == {"mia_auc_ref": None}  # no reference model


def test_forget_quality_golden(scenario):
    """Model TRs {1, 2, 3}, reference TRs {4, 5, 6} on the same items: disjoint samples of 3, so the exact KS
    p-value is 2 / C(6, 3) = 0.1 (only the two fully separated labelings reach D = 1)."""
    items = {"forget": {k: {"truth_ratio": v} for k, v in zip("abc", (1.0, 2.0, 3.0), strict=True)}}
    ref = {"forget": {k: {"truth_ratio": v} for k, v in zip("abc", (4.0, 5.0, 6.0), strict=True)}}
    fq = _summary(scenario, ["forget_quality"], items, ref)["forget_quality"]
    assert fq == pytest.approx(0.1)
    assert _summary(scenario, ["forget_quality"], items, items)["forget_quality"] == pytest.approx(1.0)


def test_privleak_golden(scenario):
    """Min-K scores: forget {3, 4} all above holdout {1, 2}: AUC 1.0; the retain model's AUC 0.8:
    privleak = ((1 − 1.0) − (1 − 0.8)) / (1 − 0.8) × 100 = −100 (the field's sign);
    privleak_auc_relative = (1.0 − 0.8) / 0.8 × 100 = 25. Forget {2, 3} vs holdout {1, 4}: AUC 0.5, so against the
    same retain AUC privleak = (0.5 − 0.2)/0.2 × 100 = +150 and the AUC-relative one (0.5 − 0.8)/0.8 × 100 = −37.5."""
    names = ["privleak", "privleak_auc_relative"]
    items = {"forget": {"a": {"mia_mink": 3.0}, "b": {"mia_mink": 4.0}},
             "holdout": {"c": {"mia_mink": 1.0}, "d": {"mia_mink": 2.0}}}
    assert _summary(scenario, names, items, {}, {"mia_auc_mink": 0.8}) == {
        "privleak": pytest.approx(-100.0), "privleak_auc_relative": pytest.approx(25.0)}
    items = {"forget": {"a": {"mia_mink": 2.0}, "b": {"mia_mink": 3.0}},
             "holdout": {"c": {"mia_mink": 1.0}, "d": {"mia_mink": 4.0}}}
    assert _summary(scenario, names, items, {}, {"mia_auc_mink": 0.8}) == {
        "privleak": pytest.approx(150.0), "privleak_auc_relative": pytest.approx(-37.5)}
    assert _summary(scenario, names, items, {}, {}) == {"privleak": None, "privleak_auc_relative": None}


def test_truth_ratio_scores_golden(scenario):
    """TRs {0.5, 2}: forget score mean min(TR, 1/TR) = (0.5 + 0.5)/2 = 0.5; the same TRs on retain give mean
    max(0, 1 − TR) = (0.5 + 0)/2 = 0.25; NaN values are skipped."""
    trs = {"a": {"truth_ratio": 0.5}, "b": {"truth_ratio": 2.0}, "c": {"truth_ratio": float("nan")}}
    out = _summary(scenario, ["forget_truth_ratio", "retain_truth_ratio", "world_facts_truth_ratio"],
                   {"forget": trs, "retain": trs, "world_facts": trs})
    assert out == {"forget_truth_ratio": pytest.approx(0.5), "retain_truth_ratio": pytest.approx(0.25),
                   "world_facts_truth_ratio": pytest.approx(0.25)}


def test_a_metric_cannot_read_what_it_did_not_declare(scenario):
    sneaky = S.MetricSpec("sneaky", lambda c: c.mean("retain", "prob"), "reads retain", "higher", ("forget",),
                          ("prob",))
    with pytest.raises(LookupError, match="'prob' of split 'retain' without declaring it"):
        S.summarize({"forget": {}, "retain": {"a": {"prob": 1.0}}}, [sneaky])


def test_model_utility_golden(scenario):
    """TOFU's harmonic mean of 9 numbers. Retain: prob 0.5, ROUGE-L 0.25, TR 0.5 → max(0, 1 − 0.5) = 0.5. Each
    utility set of the scenario (synthetic: famous_works, world_facts): NORMALISED prob 0.5, ROUGE-L 1.0, TR 0.5
    → 0.5; their raw `prob` (0.1) must not be read. HM = 9 / (2 + 4 + 2 + 2 × (2 + 1 + 2)) = 9/18 = 0.5; with a
    utility set's values missing there is no model utility (None), and a zero anywhere makes it 0."""
    util = {"a": {"norm_prob": 0.5, "prob": 0.1, "rougeL_recall": 1.0, "truth_ratio": 0.5}}
    items = {"retain": {"r": {"prob": 0.5, "rougeL_recall": 0.25, "truth_ratio": 0.5}},
             **{name: util for name in scenario.utility}}
    assert list(scenario.utility) == ["famous_works", "world_facts"]
    assert _summary(scenario, ["model_utility"], items) == {"model_utility": pytest.approx(0.5)}
    assert _summary(scenario, ["model_utility"], {**items, "world_facts": {}}) == {"model_utility": None}
    zero = {"retain": {"r": {"prob": 0.5, "rougeL_recall": 0.0, "truth_ratio": 0.5}}}
    assert _summary(scenario, ["model_utility"], {**items, **zero}) == {"model_utility": 0.0}
