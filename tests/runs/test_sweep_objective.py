"""The sweep's objective grammar (runs/objective.py), its bounds and violations, and the per-epoch pruning stand-in;
hand-written cases, no model."""

from __future__ import annotations

import math

import pytest

from obliviate.errors import ConfigError, RegistryError
from obliviate.runs.objective import Bound, Constraint, Objective, parse_objective, progress_signal


@pytest.mark.parametrize(("text", "expected"), [
    ("max forget_quality", Objective("max", "forget_quality")),
    ("max forget_quality s.t. model_utility >= 0.95*target",
     Objective("max", "forget_quality", (Constraint("model_utility", ">=", Bound(0.95, "target")),))),
    # spacing, case of the keywords, "subject to", ≥, a bare reference, an absolute bound, "and"
    ("MIN forget_rougeL_recall subject to model_utility≥ 0.9 * retain and privleak <= 20",
     Objective("min", "forget_rougeL_recall", (Constraint("model_utility", ">=", Bound(0.9, "retain")),
                                               Constraint("privleak", "<=", Bound(20.0))))),
    ("max forget_quality st model_utility >= target",
     Objective("max", "forget_quality", (Constraint("model_utility", ">=", Bound(1.0, "target")),))),
    ("min el10 s.t. model_utility >= 1e-1", Objective("min", "el10", (Constraint("model_utility", ">=", Bound(0.1)),))),
])
def test_parse(text, expected):
    assert parse_objective(text) == expected


def test_the_canonical_text_parses_back_to_the_same_objective():
    o = parse_objective("max  forget_quality   subject to model_utility>=0.95*target and privleak<=20")
    assert str(o) == "max forget_quality s.t. model_utility >= 0.95*target and privleak <= 20"
    assert parse_objective(str(o)) == o
    assert o.metrics() == ["forget_quality", "model_utility", "privleak"] and o.direction == "maximize"


@pytest.mark.parametrize(("text", "needle"), [
    ("", "expected 'max' or 'min', got the end"),
    ("maximise forget_quality", "expected 'max' or 'min', got 'maximise'"),
    ("max", "expected a metric name"),
    ("max forget_quality model_utility >= 1", "expected 's.t.'"),
    ("max forget_quality s.t.", "a constrained metric name, got the end"),
    ("max forget_quality s.t. model_utility > 0.9", "use >= or <="),
    ("max forget_quality s.t. model_utility = 0.9", "use >= or <="),
    ("max forget_quality s.t. model_utility >= ", "a number, NUMBER*target or NUMBER*retain"),
    ("max forget_quality s.t. model_utility >= 0.9*base", "'target' or 'retain' after '*'"),
    ("max forget_quality s.t. model_utility >= inf", "a number"),
    ("max forget_quality s.t. model_utility >= 0.9 or privleak <= 1", "expected 'and' or the end, got 'or'"),
])
def test_syntax_errors_name_the_token_and_the_grammar(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_objective(text)
    assert needle in str(e.value) and "grammar: max|min METRIC" in str(e.value)


def test_unknown_metric_is_a_registry_error_with_did_you_mean():
    with pytest.raises(RegistryError, match="did you mean 'forget_quality'"):
        parse_objective("max forget_qualty").check()
    with pytest.raises(RegistryError, match="did you mean 'model_utility'"):
        parse_objective("max forget_quality s.t. model_utilty >= 0.9*target").check()


def test_thresholds_and_violations():
    """0.95 × the target's MU 0.80 = 0.76: MU 0.70 misses it by 0.06, 0.80 meets it by 0.04 (violation −0.04);
    privleak <= 20 at 25 misses by 5. An absent value misses infinitely."""
    mu = Constraint("model_utility", ">=", Bound(0.95, "target"))
    refs = {"target": {"model_utility": 0.80}, "retain": {"model_utility": 0.70}}
    th = mu.threshold(refs)
    assert th == pytest.approx(0.76)
    assert mu.violation(0.70, th) == pytest.approx(0.06) and mu.violation(0.80, th) == pytest.approx(-0.04)
    assert mu.violation(None, th) == math.inf
    pl = Constraint("privleak", "<=", Bound(20.0))
    assert pl.threshold(refs) == 20.0 and pl.violation(25.0, 20.0) == 5.0
    assert Constraint("model_utility", ">=", Bound(1.0, "retain")).threshold(refs) == 0.70


def test_a_relative_bound_on_an_absent_reference_value_is_an_error():
    with pytest.raises(ConfigError, match="model_utility of the target model is absent"):
        Constraint("model_utility", ">=", Bound(0.95, "target")).threshold({"target": {"model_utility": None}})


def test_progress_signal_follows_the_objective():
    """Forgetting objectives report the forget NLL above the retain NLL, capped at the retain model's gap (2.0):
    forget 3.0, retain 0.5 -> 2.5 capped to 2.0; a min objective reports it negated (the study minimises). A utility
    objective reports minus the retain NLL; a metric without a better direction gets none."""
    terms = {"forget_nll_eval": 3.0, "retain_nll_eval": 0.5}
    fq = progress_signal(parse_objective("max forget_quality"), None, reference_gap=2.0)
    assert fq(terms) == 2.0 and fq({"forget_nll_eval": 1.5, "retain_nll_eval": 0.5}) == 1.0
    assert fq({"forget_nll_eval": 1.5}) == 1.5  # no retain view: the forget NLL alone
    rouge = progress_signal(parse_objective("min forget_rougeL_recall"))
    assert rouge(terms) == -2.5
    mu = progress_signal(parse_objective("max model_utility s.t. forget_quality >= 0.1"))
    assert mu(terms) == -0.5
    assert progress_signal(parse_objective("min privleak")) is None  # closer to 0 is better: no direction
    assert progress_signal(parse_objective("min forget_quality")) is None  # pushes against forgetting: no stand-in
    assert fq({}) is None


def test_the_best_trial_breaks_ties_by_the_room_left_on_the_constraint():
    from obliviate.runs.sweep import best_of

    obj = parse_objective("max forget_quality s.t. model_utility >= 0.95*target")
    c = "model_utility >= 0.95*target"

    def rec(n, value, violation, feasible=True, state="complete"):
        return {"number": n, "state": state, "value": value, "feasible": feasible, "constraints": {c: violation}}

    recs = [rec(0, 1.9e-4, -0.012), rec(1, 1.9e-4, -0.027), rec(2, 0.5, 0.1, feasible=False),
            rec(3, 1.9e-4, -0.027), rec(4, 0.9, -0.3, state="pruned")]
    assert best_of(recs, obj)["number"] == 1  # same FQ as trial 0, more room; trial 3 ties it and comes later
    recs.append(rec(5, 3.0e-3, -0.001))
    assert best_of(recs, obj)["number"] == 5  # the objective first
    assert best_of([rec(0, 0.5, 0.1, feasible=False)], obj) is None
