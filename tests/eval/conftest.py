"""Shared fixtures of the evaluation tests: a small synthetic scenario and two untrained tiny Llamas (different
seeds) over one tokenizer trained on the scenario's texts, built in-process (no download, one CPU thread)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

# Small enough to evaluate in seconds: 10 forget items, 2 retain people, 1 holdout person (the utility sets have
# a fixed size).
SCENARIO_OPTIONS = dict(n_people=10, n_holdout=1, n_refusal=4, n_retain_eval=2)
TINY_SPEC = dict(vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="session")
def scenario():
    from obliviate.data.scenarios import get_scenario

    return get_scenario("synthetic", **SCENARIO_OPTIONS)


@pytest.fixture(scope="session")
def tiny_models(scenario):
    """(model seed 0, model seed 1, tokenizer): untrained, so their per-item values differ."""
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer

    texts = [f"{r.question}\n{r.answer}" for s in (scenario.target_train, *scenario.eval_splits.values())
             for r in s.records]
    tok = train_tokenizer(texts, vocab_size=TINY_SPEC["vocab_size"])
    spec = TinyModelSpec(**TINY_SPEC)
    return build_model(spec, tok, seed=0).eval(), build_model(spec, tok, seed=1).eval(), tok
