"""Hyperparameters for the built-in tiny models (about 5M parameters, trained from scratch).

The methods' config defaults are the papers' settings for 7B models (lr 1e-5, batch 32): on a 5M model trained
with lr 1e-3 those barely move the weights, so `obliviate bench` applies these scaled settings on the built-in
scenarios and records them in every run's manifest. Each value was chosen on the `synthetic` / `tofu-mini`
targets (benchmarks/baselines.py, benchmarks/seed_methods.py print what they give); with a real model, pass
`--paper-defaults` to bench or leave unlearn's defaults alone."""

from __future__ import annotations

from typing import Any

# Shared by every gradient method at tiny scale: the forget sets hold 40 items, so batch 8 gives 5 steps/epoch.
_COMMON: dict[str, Any] = {"batch_size": 8, "epochs": 10, "warmup_epochs": 1}

TINY: dict[str, dict[str, Any]] = {
    "ga": {"lr": 1e-4},
    "graddiff": {"lr": 2e-4},
    "ga_kl": {"lr": 2e-4},
    "npo": {"lr": 1e-4},
    "npo_gd": {"lr": 3e-4},
    "npo_kl": {"lr": 3e-4},
    "simnpo": {"lr": 5e-4},
    "idknll": {"lr": 3e-4},
    "idkdpo": {"lr": 3e-4},
    "rmu": {"lr": 1e-2, "alpha": 10.0},  # alpha 100 kept the forget activations in place (ROUGE-L 0.97)
    "rkld": {"lr": 3e-4, "aug_epochs": 5, "aug_lr": 3e-4},
    "icu": {"lr": 2e-4, "epochs": 15},
}


# Relative wall time on the built-in scenarios (measured with `obliviate demo`); bench starts the longest jobs
# first so that the worker pool does not end with one long job running alone.
COST: dict[str, float] = {"reveal_release": 4.0, "icu": 2.5, "unierase": 2.0}


# Per scenario, on top of TINY. Reveal-and-Release's defaults were set on `synthetic`; on tofu-mini 4 rounds at
# lr 1e-3 left forget ROUGE-L at 0.63 with MU to spare (0.905), while 8 rounds at 2e-3 stop on their own after 5
# released rounds (reward below min_reward) at ROUGE-L 0.23, MU 0.900 (benchmarks/seed_methods.py).
BY_SCENARIO: dict[str, dict[str, dict[str, Any]]] = {
    "tofu-mini": {"reveal_release": {"max_rounds": 8, "lr": 2e-3}},
}


def preset(method: str, scenario: str) -> dict[str, Any]:
    """The overrides bench applies for `method` on a built-in scenario (empty for methods without a preset)."""
    base = {**_COMMON, **TINY[method]} if method in TINY else {}
    return {**base, **BY_SCENARIO.get(scenario, {}).get(method, {})}
