"""ICU's own mechanics (methods/icu.py, METHODS.md §2): the composite loss against a hand-computed value, the
refinement that retires a forgotten sample together with its analogous partner, and the KUMPR stop."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from obliviate.data.records import Split
from obliviate.data.templates import Formatter
from obliviate.methods import METHODS
from obliviate.methods.base import TrainContext
from obliviate.methods.data import epoch_plan
from obliviate.methods.engine import Reference
from obliviate.methods.icu import ICU


def _icu(**over) -> ICU:
    info = METHODS.get("icu")
    method = info.create(info.make_config({"embedder": "tfidf", **over}))
    assert isinstance(method, ICU)
    return method


class _TableModel(torch.nn.Module):
    """A "model" whose logits at each position are a fixed row chosen by the token there: logits = table[ids]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])  # (B, T, V)


def test_the_composite_loss_matches_a_hand_computed_value():
    """L = −NLL(x_f) + α·NLL(x_a) + β·CE(p₀ ‖ p_θ on x_a), each averaged over answer tokens, α = 0.5, β = 1.

    V = 4. The student's logits depend only on the current token: after token 3 it is uniform (p = 1/4 each),
    after token 2 it is p = (1/2, 1/4, 1/8, 1/8). The reference θ₀ is uniform everywhere.
    x_f = [3, 3, 3], labels [−, 0, 1]: both answer tokens are predicted after token 3, so NLL(x_f) = log 4.
    x_a = [2, 2, 2], labels [−, 0, 1]: predicted after token 2, NLL(x_a) = (log 2 + log 4) / 2 = 1.5 log 2.
    CE(p₀ ‖ p_θ) per position = −Σ_v ¼ log p_θ(v) = ¼ (1 + 2 + 3 + 3) log 2 = 2.25 log 2.
    L = −2 log 2 + 0.5 · 1.5 log 2 + 2.25 log 2 = log 2."""
    log_p = torch.log(torch.tensor([[0.25] * 4, [0.25] * 4, [0.5, 0.25, 0.125, 0.125], [0.25] * 4]))
    student, reference = _TableModel(log_p), _TableModel(torch.zeros(4, 4))
    ids = {"forget": [3, 3, 3], "analog": [2, 2, 2]}
    batch = {v: {"input_ids": torch.tensor([x]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
                 "labels": torch.tensor([[-100, 0, 1]])} for v, x in ids.items()}
    out = _icu(alpha=0.5, beta=1.0).loss(batch, student, Reference(reference))
    ln2 = math.log(2)
    assert float(out.loss) == pytest.approx(ln2, abs=1e-6)
    assert out.terms["forget_nll"] == pytest.approx(2 * ln2, abs=1e-6)
    assert out.terms["analog_nll"] == pytest.approx(1.5 * ln2, abs=1e-6)
    assert out.terms["analog_ce"] == pytest.approx(2.25 * ln2, abs=1e-6)


def _setup(tiny_model, forget, retain, tmp_path, scenario=None, **over) -> ICU:
    """ICU as the engine prepares it: context, then the analogous partners (which starts the active set)."""
    _, tok = tiny_model
    method = _icu(**over)
    method.ctx = TrainContext(tok, Formatter(tok, "auto"), list(forget), list(retain), scenario, tmp_path,
                              torch.device("cpu"))
    method.aligned_views(list(forget), list(retain))
    return method


def test_a_forgotten_sample_leaves_training_with_its_partner(tiny_model, forget_records, retain_records, tmp_path):
    """Record 0's answer is replaced by a string the model never produces, so its greedy answer falls below the
    ROUGE-L / BLEU thresholds: after the epoch it leaves the active set (recorded with its epoch), the five
    memorised ones stay, and no later batch holds index 0 in the forget view nor in the aligned analog view (its
    partner)."""
    forget = [forget_records[0].with_(answer="zqx canary xqz"), *forget_records[1:]]
    method = _setup(tiny_model, forget, retain_records, tmp_path)
    log: dict[str, float] = {}
    stop = method.after_epoch(copy.deepcopy(tiny_model[0]), 1, log)
    assert not stop
    assert method.active_forget() == [1, 2, 3, 4, 5]
    assert method.removed == {forget[0].id: 1} and log["active"] == 5 and log["removed_this_epoch"] == 1
    for epoch in range(3):
        plan = epoch_plan(len(forget), len(retain_records), 2, 0, epoch, method.views, method.active_forget())
        assert all(0 not in step["forget"] and 0 not in step["analog"] for step in plan)
        assert sorted(i for step in plan for i in step["analog"]) == [1, 2, 3, 4, 5]
    assert method.state_dict()["active"] == [1, 2, 3, 4, 5]  # and it survives a resume


def test_the_kumpr_stop_fires_when_the_forget_set_is_no_better_known_than_the_holdout(
        tiny_model, forget_records, retain_records, tmp_path):
    """KUMPR: stop once EL_n and MA on the forget set are at or below the holdout's. A holdout equal to the
    forget set (the model knows both equally) fires it; a holdout the model cannot reproduce (canary answers,
    EL and MA near 0) does not. Refinement keeps every memorised sample, so only KUMPR can stop here."""
    fires = _setup(tiny_model, forget_records, retain_records, tmp_path, el_n=3,
                   scenario=SimpleNamespace(holdout=Split("holdout", tuple(forget_records))))
    log: dict[str, float] = {}
    assert fires.after_epoch(copy.deepcopy(tiny_model[0]), 1, log) is True
    assert fires.active_forget() == list(range(len(forget_records)))  # not stopped by refinement
    assert log["el_forget"] == pytest.approx(log["el_holdout"]) and log["ma_forget"] == pytest.approx(log["ma_holdout"])
    assert log["ma_forget"] > 0.5

    unseen = tuple(r.with_(answer=f"zqx canary {k} xqz") for k, r in enumerate(forget_records))
    holds = _setup(tiny_model, forget_records, retain_records, tmp_path, el_n=3,
                   scenario=SimpleNamespace(holdout=Split("holdout", unseen)))
    log = {}
    assert holds.after_epoch(copy.deepcopy(tiny_model[0]), 1, log) is False
    assert log["ma_holdout"] < log["ma_forget"]

    off = _setup(tiny_model, forget_records, retain_records, tmp_path, el_n=3, kumpr=False,
                 scenario=SimpleNamespace(holdout=Split("holdout", tuple(forget_records))))
    assert off.after_epoch(copy.deepcopy(tiny_model[0]), 1, {}) is False
