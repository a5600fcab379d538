"""benchmarks/openunlearning_compat.py's check on two tiny untrained Llamas: `eval --compat openunlearning` agrees
item for item (<= 1e-4) with OpenUnlearning's metric code transcribed in that script, on every metric compared;
the default definitions do not (extraction strength's floor, the EOS in Min-K%), so the check can fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def oc():
    sys.path.insert(0, str(BENCH))
    try:
        import openunlearning_compat
    finally:
        sys.path.remove(str(BENCH))
    return openunlearning_compat


@pytest.fixture(scope="module")
def models(oc, scenario):
    return oc.tiny_untrained(scenario)


# Every metric the check must have compared (so that agreement cannot come from comparing nothing).
EXPECTED = {"forget/Q_A_Prob", "retain/Q_A_Prob", "forget/avg_loss", "forget/Truth_Ratio", "retain/Truth_Ratio",
            "forget/exact_memorization", "forget/extraction_strength", "forget/mia_loss", "holdout/mia_loss",
            "forget/mia_zlib", "forget/mia_min_k", "holdout/mia_min_k", "forget/mia_min_k_plus_plus",
            "auc/mia_min_k", "forget_quality", "privleak", "forget_truth_ratio (agg)", "retain_truth_ratio (agg)"}


def test_compat_agrees_with_openunlearnings_code(oc, models, scenario):
    target, retain = models
    diffs = oc.check(target, retain, scenario, "openunlearning")
    assert EXPECTED <= set(diffs), sorted(EXPECTED - set(diffs))
    assert any(k.endswith("Q_A_Prob_normalised") for k in diffs)
    bad = {k: d for k, (d, _, _, _) in diffs.items() if not d <= 1e-4}  # absolute: every value here is small
    assert not bad, bad


def test_the_default_definitions_differ(oc, models, scenario):
    """Untrained: no argmax matches, so OpenUnlearning's ES is 1/n per item where the definition gives 0; Min-K%
    without the EOS differs from Min-K% with it."""
    target, retain = models
    diffs = oc.check(target, retain, scenario, "none")
    assert diffs["forget/extraction_strength"][0] > 0.02
    assert diffs["forget/mia_min_k"][0] > 1e-3
