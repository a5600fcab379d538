"""The sweep's pruner: Optuna's median rule, measured against the trials that met the constraints.

Optuna's `MedianPruner` stops a trial whose intermediate value is worse than the median of every finished trial's
at the same step. Under a constrained objective that median is the wrong yardstick. Measured on tofu-mini (tiny,
"max forget_quality s.t. model_utility >= 0.95*target", 40 NPO trials): the trials that over-forget reach the
stand-in's cap (the retain model's forget–retain NLL gap, `objective.progress_signal`) by their second or third
epoch, finish, and fail the utility constraint; they set the median, and every moderate trial, the only kind
that ends feasible, is pruned at its third epoch (23 of 40 pruned: the slow ones at lr < 5e-5, and with them all 9
trials at lr 5.7e-5 to 1.4e-4, around the two feasible ones at 5.8e-5 and 7.5e-5). The median here is taken
over the finished trials that met every constraint, so a trial is stopped only when it is forgetting more slowly
than the trials that are candidates for the best; until `n_startup_trials` such trials exist, nothing is pruned.
Without constraints it is Optuna's median rule."""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import FrozenTrial, TrialState


class FeasibleMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial after `n_warmup_steps` steps when its intermediate value is worse than the median, at the
    same step, of the complete trials that met every constraint (violations ≤ 0, `Trial.set_constraint`) and
    reported that step; at least `n_startup_trials` of them, or nothing is pruned."""

    def __init__(self, n_startup_trials: int = 3, n_warmup_steps: int = 3) -> None:
        if n_startup_trials < 1 or n_warmup_steps < 0:
            raise ValueError("n_startup_trials >= 1 and n_warmup_steps >= 0")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        value = trial.intermediate_values[step]
        peers = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if all(v <= 0 for v in t.constraints.values()) and step in t.intermediate_values]
        if len(peers) < self.n_startup_trials:
            return False
        median = statistics.median(peers)
        return value > median if study.direction == optuna.study.StudyDirection.MINIMIZE else value < median
