"""Recovery attacks (obliviate.runs.attacks): the rounding against hand-computed grids, the ratio, which records each
attack measures, and the bench cache that must notice a changed model. Kept beside the method tests for the tiny
memorised model of conftest.py."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from obliviate.data.records import Split
from obliviate.errors import DataError
from obliviate.runs import attacks as A
from obliviate.models.loading import load_model_and_tokenizer


def test_quantize_rounds_each_row_to_its_own_symmetric_grid():
    lin = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.4, 0.26], [0.1, 0.2, -0.3]]))
    q = A.quantize_weights(torch.nn.Sequential(lin), bits=2)[0].weight  # 2 bits: levels -1, 0, 1 × absmax
    # row 0: scale 1.0 -> round(1, -0.4, 0.26) = (1, 0, 0); row 1: scale 0.3 -> round(1/3, 2/3, -1) = (0, 1, -1)
    assert torch.allclose(q, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, -0.3]]))
    q8 = A.quantize_weights(torch.nn.Sequential(lin), bits=8)[0].weight
    step = lin.weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((q8 - lin.weight).abs() <= step / 2 + 1e-7).all()
    assert not torch.equal(q8, lin.weight)  # the copy is rounded, the original untouched
    assert lin.weight[0, 1].item() == pytest.approx(-0.4)


def test_recovery_ratio():
    assert A.ratio(0.5, 0.25) == 2.0
    assert A.ratio(0.3, 0.0) is None  # nothing measured before: no ratio


@pytest.fixture
def model_tok(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir)


def _spy_questions(monkeypatch) -> list[list[str]]:
    """Record the questions each forget_scores call measures (the real function still runs)."""
    seen: list[list[str]] = []
    real = A.forget_scores

    def spy(model, tok, records, max_new_tokens, questions=None, progress=None):
        seen.append(list(questions) if questions is not None else [r.question for r in records])
        return real(model, tok, records, max_new_tokens, questions, progress)

    monkeypatch.setattr(A, "forget_scores", spy)
    return seen


def test_relearn_trains_on_one_part_and_measures_only_the_other(model_tok, forget_records, monkeypatch):
    seen = _spy_questions(monkeypatch)
    m, tok = model_tok
    before_w = [p.detach().clone() for p in m.parameters()]
    res = A.run_attack("relearn", m, tok, forget_records, A.AttackConfig(steps=2, max_new_tokens=16))
    assert (res["trained_on"], res["measured_on"], res["steps"]) == (3, 3, 2)
    assert seen[0] == seen[1] and len(seen[0]) == 3  # before and after on the same held-out half
    trained = {r.question for r in forget_records} - set(seen[0])
    assert len(trained) == 3  # the other half: the trained questions are never measured
    assert all(torch.equal(a, b) for a, b in zip(before_w, m.parameters()))  # the attacked model is a copy
    assert res["recovery"] == pytest.approx(res["after"]["rougeL"] / res["before"]["rougeL"])


def test_paraphrase_asks_the_reworded_questions(model_tok, forget_records, monkeypatch):
    seen = _spy_questions(monkeypatch)
    recs = [r.with_(paraphrased_question=f"Tell me: {r.question}") for r in forget_records]
    res = A.run_attack("paraphrase", *model_tok, recs, A.AttackConfig(max_new_tokens=16))
    assert seen == [[r.question for r in recs], [r.paraphrased_question for r in recs]]
    assert res["measured_on"] == 6
    with pytest.raises(DataError, match="paraphrased_question"):
        A.run_attack("paraphrase", *model_tok, forget_records, A.AttackConfig())


def test_prefix_completes_memorised_answers(model_tok, forget_records):
    res = A.run_attack("prefix", *model_tok, forget_records, A.AttackConfig(max_new_tokens=24))
    assert res["measured_on"] == 6
    assert res["after"]["rougeL"] > 0.5  # the tiny model memorised these answers: given half, it goes on


def test_bench_attack_cache_is_redone_for_a_changed_model(tiny_model_dir, forget_records, tmp_path, monkeypatch):
    calls: list[str] = []
    real = A.run_attack
    monkeypatch.setattr(A, "run_attack", lambda name, *a: calls.append(name) or real(name, *a))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    scen = SimpleNamespace(forget=Split("forget", tuple(forget_records)))
    rows = [{"name": "target"}]
    A.attack_rows(rows, tmp_path / "bench", scen, ["quantize"], model, lambda _: None)
    A.attack_rows(rows, tmp_path / "bench", scen, ["quantize"], model, lambda _: None)
    assert calls == ["quantize"]  # the second run read the cache
    m, tok = load_model_and_tokenizer(model)
    with torch.no_grad():
        next(m.parameters()).add_(0.01)
    m.save_pretrained(model)
    A.attack_rows(rows, tmp_path / "bench", scen, ["quantize"], model, lambda _: None)
    assert calls == ["quantize", "quantize"]  # new weights: attacked anew
    assert "attack_quantize_recovery" in rows[0]


def test_bench_attacks_the_retain_model_as_the_control(tiny_model_dir, forget_records, tmp_path):
    scen = SimpleNamespace(forget=Split("forget", tuple(forget_records)))
    rows = [{"name": "target"}, {"name": "retain"}, {"name": "ga", "error": "failed"}]
    A.attack_rows(rows, tmp_path / "bench", scen, ["quantize", "prefix"], tiny_model_dir, lambda _: None,
                  retain=tiny_model_dir)
    assert rows[1]["attack_quantize_recovery"] == rows[0]["attack_quantize_recovery"]  # the same model here
    assert 0 <= rows[1]["attack_quantize_prob_after"] <= 1
    assert "attack_prefix_after" in rows[1] and "attack_prefix_prob_after" not in rows[1]  # no probability measured
    assert not any(k.startswith("attack_") for k in rows[2])
    bare = [{"name": "retain"}]
    A.attack_rows(bare, tmp_path / "bench2", scen, ["quantize"], tiny_model_dir, lambda _: None)
    assert bare == [{"name": "retain"}]  # no retain model given: nothing to attack
