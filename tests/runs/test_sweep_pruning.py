"""The sweep's pruner: the median of the trials that met the constraints, not of all finished trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from obliviate.runs.pruning import FeasibleMedianPruner

optuna.logging.set_verbosity(optuna.logging.ERROR)
DIST = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}


def _study(direction: str = "maximize") -> optuna.Study:
    """The shape measured on tofu-mini: three over-forgetters at the stand-in's cap (9.0) by step 3 that missed the
    utility constraint, and two moderate trials (0.04, 0.01 at step 3) that met it."""
    study = optuna.create_study(direction=direction)
    for gap, violation in ((9.0, 0.6), (9.0, 0.7), (9.0, 0.8), (0.04, -0.03), (0.01, -0.02)):
        study.add_trial(create_trial(value=gap, params={"lr": 1e-3}, distributions=DIST,
                                     intermediate_values={1: 0.0, 2: gap / 3, 3: gap},
                                     constraints={"model_utility >= 0.95*target": violation}))
    return study


def _running(study: optuna.Study, values: dict[int, float]):
    trial = study.ask(DIST)
    for step, v in values.items():
        trial.report(v, step)
    return study.trials[trial.number]  # a frozen copy, as Optuna hands it to the pruner


def test_a_moderate_trial_is_judged_against_the_feasible_trials_not_the_over_forgetters():
    study = _study()
    moderate = _running(study, {1: 0.0, 2: 0.01, 3: 0.03})  # above the feasible median (0.025), far below 9.0
    assert optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3).prune(study, moderate)  # the old rule
    assert not FeasibleMedianPruner(n_startup_trials=2, n_warmup_steps=3).prune(study, moderate)
    slow = _running(study, {1: 0.0, 2: 0.0, 3: 0.02})  # below it: slower than both candidates
    assert FeasibleMedianPruner(n_startup_trials=2, n_warmup_steps=3).prune(study, slow)


def test_nothing_is_pruned_before_the_warmup_or_before_enough_feasible_trials():
    study = _study()
    slow = _running(study, {1: 0.0, 2: 0.0, 3: 0.0})
    assert not FeasibleMedianPruner(n_startup_trials=3, n_warmup_steps=3).prune(study, slow)  # 2 feasible < 3
    assert not FeasibleMedianPruner(n_startup_trials=2, n_warmup_steps=4).prune(study, slow)  # step 3 < warmup


def test_without_constraints_every_finished_trial_counts_and_minimise_flips_the_rule():
    study = optuna.create_study(direction="minimize")
    for v in (1.0, 2.0, 3.0):
        study.add_trial(create_trial(value=v, params={"lr": 1e-3}, distributions=DIST, intermediate_values={3: v}))
    pruner = FeasibleMedianPruner(n_startup_trials=3, n_warmup_steps=3)
    assert pruner.prune(study, _running(study, {3: 2.5}))  # worse (higher) than the median 2.0
    assert not pruner.prune(study, _running(study, {3: 1.5}))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        FeasibleMedianPruner(n_startup_trials=0)
