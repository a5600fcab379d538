"""The evaluation engine on the synthetic scenario with two tiny untrained models: every metric spec is computed
(none silently skipped), and the reference-based metrics match an independent recomputation from the per-item
values of both models."""

from __future__ import annotations

import pytest
from scipy import stats

from obliviate.eval import metrics as M
from obliviate.eval import specs as S
from obliviate.eval import suite


def _auc_brute(members, nonmembers):
    """P(score_member > score_nonmember) over all pairs, ties count 1/2."""
    wins = sum(1.0 if m > h else 0.5 if m == h else 0.0 for m in members for h in nonmembers)
    return wins / (len(members) * len(nonmembers))


@pytest.fixture(scope="module")
def evaluated(scenario, tiny_models):
    """Every metric (the opt-in ones too) of the seed-0 model, with the seed-1 model as the reference; then the
    default run and a self-referenced run on the same runners (passes are memoised per runner)."""
    model, ref_model, tok = tiny_models
    cfg = suite.EvalConfig(metrics=list(S.metric_specs(scenario)), max_new_tokens=4, cache=False)
    runner, ref_runner = suite.make_runner(model, tok, cfg, "m"), suite.make_runner(ref_model, tok, cfg, "ref")
    reference = suite.reference_from_runner(ref_runner, scenario, cfg)
    full = suite.evaluate_runner(runner, scenario, cfg, reference)
    default = suite.evaluate_runner(runner, scenario, cfg.model_copy(update={"metrics": None}), reference)
    itself = suite.evaluate_runner(runner, scenario, cfg.model_copy(update={"metrics": ["forget_quality"]}),
                                   suite.reference_from_runner(runner, scenario, cfg))
    return full, default, itself, reference


def test_every_spec_is_computed_on_the_synthetic_scenario(evaluated, scenario):
    full, default, _, _ = evaluated
    specs = S.metric_specs(scenario)
    assert list(full.summary) == list(specs)
    missing = [n for n, v in full.summary.items() if v is None]
    assert not missing, f"computed as None: {missing}"
    assert list(default.summary) == [n for n, s in specs.items() if not s.opt_in]
    assert {n: default.summary[n] for n in default.summary} == {n: full.summary[n] for n in default.summary}


def test_every_declared_field_is_produced(evaluated, scenario):
    """A spec's declared (split, field) reads exist in the per-item values (model_utility reads `prob` on retain
    and `norm_prob` on the utility sets, so each field must exist in at least one of its splits)."""
    items = evaluated[0].items
    for s in S.metric_specs(scenario).values():
        for f in s.fields:
            assert any(f in v for sp in s.splits for v in items[sp].values()), (s.name, f)


def test_forget_quality_is_a_real_p_value(evaluated):
    full, _, itself, reference = evaluated
    fq = full.summary["forget_quality"]
    ours = [v["truth_ratio"] for v in full.items["forget"].values()]
    theirs = [reference.items["forget"][i]["truth_ratio"] for i in full.items["forget"]]
    assert fq is not None and 0 <= fq <= 1
    assert fq == pytest.approx(stats.ks_2samp(ours, theirs).pvalue)
    assert ours != theirs  # two different models: a real comparison, not the trivial self-comparison
    assert itself.summary["forget_quality"] == pytest.approx(1.0)


def test_reference_attack_through_the_suite_matches_mia_reference(evaluated):
    full, _, _, reference = evaluated
    scores = {s: [M.mia_reference(v["mean_nll"], reference.items[s][i]["mean_nll"]) for i, v in full.items[s].items()]
              for s in ("forget", "holdout")}
    assert full.summary["mia_auc_ref"] == pytest.approx(_auc_brute(scores["forget"], scores["holdout"]))
    assert full.summary["mia_auc_ref"] == pytest.approx(M.auc(scores["forget"], scores["holdout"]))


def test_unknown_metric_in_the_config_is_an_error(scenario, tiny_models):
    from obliviate.errors import ConfigError

    model, _, tok = tiny_models
    cfg = suite.EvalConfig(metrics=["forget_qualty"], cache=False)
    with pytest.raises(ConfigError, match="did you mean 'forget_quality'"):
        suite.evaluate_runner(suite.make_runner(model, tok, cfg, "m"), scenario, cfg)


def test_asking_for_some_metrics_runs_only_the_passes_they_read(scenario, tiny_models, monkeypatch):
    """`metrics=[...]` reads only the splits those metrics name, and a split read only for ROUGE-L gets no
    teacher-forced pass; the values are those of the full evaluation."""
    from obliviate.eval import suite
    from obliviate.eval.runner import ModelRunner

    model, _, tok = tiny_models
    scored: list[tuple[str, bool]] = []
    real = ModelRunner.split_stats
    monkeypatch.setattr(ModelRunner, "split_stats", lambda self, split, vocab_stats=False: scored.append(
        (split.name, vocab_stats)) or real(self, split, vocab_stats))
    full = suite.evaluate_runner(ModelRunner(model, tok, max_new_tokens=8), scenario, suite.EvalConfig(max_new_tokens=8))
    # Min-K%++'s vocabulary moments (the costly part of a pass) only where the attacks read them
    assert {n for n, v in scored if v} == {"forget", "holdout"}
    assert {n for n, v in scored if not v} >= set(scenario.eval_splits) - {"forget", "holdout"}
    assert full.summary.get("mia_auc_minkpp") is not None and full.summary.get("mia_auc_mink") is not None
    scored.clear()
    cfg = suite.EvalConfig(max_new_tokens=8, metrics=["retain_rougeL_recall", "forget_truth_ratio"])
    some = suite.evaluate_runner(ModelRunner(model, tok, max_new_tokens=8), scenario, cfg)
    assert set(some.items) == {"retain", "forget"} and [n for n, _ in scored] == ["forget"]
    for k in ("retain_rougeL_recall", "forget_truth_ratio"):
        assert some.summary[k] == pytest.approx(full.summary[k])
