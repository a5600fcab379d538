"""RKLD's own mechanics (methods/rkld.py, METHODS.md §1) on the tiny memorising Llama of conftest.py: the
augmented model is more confident on the forget set than θ₀, the two ways of holding the teacher give the same
loss, and the run records which teacher objective ran."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import obliviate
from obliviate.data.templates import Formatter
from obliviate.methods import METHODS
from obliviate.methods.base import TrainContext
from obliviate.methods.data import Views
from obliviate.methods.rkld import RKLD, augment

# 6 forget records, batch 4: 2 steps per augmentation epoch; the paper's 10 augmentation epochs. The input model
# has memorised the records (forget NLL 0.037), so the augmentation needs a small step: at 3e-3 it overshoots and
# the NLL RISES (0.062), at 1e-3 it falls to 0.030.
CFG = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 0, "aug_epochs": 10, "aug_lr": 1e-3}


def _ctx(tok, forget, work) -> TrainContext:
    return TrainContext(tok, Formatter(tok, "auto"), list(forget), [], None, work, torch.device("cpu"))


def _method(tiny_model, forget, work, **over) -> tuple[RKLD, Views]:
    """An RKLD instance after setup() on a copy of θ₀ (as the engine calls it), and its views."""
    model, tok = tiny_model
    info = METHODS.get("rkld")
    method = info.create(info.make_config({**CFG, **over}))
    assert isinstance(method, RKLD)
    method.ctx = _ctx(tok, forget, work)
    views = Views.build(method.views, forget, [], method.ctx.formatter)
    method.setup(copy.deepcopy(model), None, views)
    return method, views


def test_the_augmented_model_is_more_confident_on_the_forget_set(tiny_model, forget_records, helpers, tmp_path):
    """θ_aug = θ₀ fine-tuned on D_f for aug_epochs: its forget answers' NLL is below θ₀'s (measured: by 20%; θ₀
    already memorised them, at 0.037 nats), and θ₀ itself is left as it was."""
    model, tok = tiny_model
    before = helpers.mean_answer_nll(model, tok, forget_records)
    cfg = METHODS.get("rkld").make_config(CFG)
    aug = augment(copy.deepcopy(model), cfg, _ctx(tok, forget_records, tmp_path))
    after = helpers.mean_answer_nll(aug, tok, forget_records)
    assert after < 0.9 * before, (before, after)
    assert helpers.mean_answer_nll(model, tok, forget_records) == before
    assert not any(p.requires_grad for p in aug.parameters())  # frozen: a teacher, never trained further


def test_precomputed_and_on_the_fly_teachers_give_the_same_loss(tiny_model, forget_records, tmp_path):
    """The full-vocabulary teacher precomputed once and the teacher computed on the fly from θ₀ and θ_aug give the
    same reverse-KL loss on the same batch (1e-6); a top-k teacher gives a lower bound of it (the KL of the
    coarsened distributions). Each records its objective and mode in run_info. The same work dir makes the
    three share one θ_aug (the augmentation's checkpoint is reused)."""
    fly, views = _method(tiny_model, forget_records, tmp_path, teacher="on_the_fly")
    pre, _ = _method(tiny_model, forget_records, tmp_path, teacher="precomputed")
    top, _ = _method(tiny_model, forget_records, tmp_path, teacher="precomputed", topk=8)
    batch = {"forget": views.collate("forget", range(len(forget_records)))}
    student = copy.deepcopy(tiny_model[0])
    with torch.no_grad():
        l_fly, l_pre, l_top = (float(m.loss(batch, student, None).loss) for m in (fly, pre, top))
    assert l_fly > 1e-3  # θ_aug differs from θ₀, so the teacher differs from the student: not a trivial 0
    assert l_pre == pytest.approx(l_fly, abs=1e-6)
    assert l_top <= l_fly + 1e-6

    assert fly.run_info() == {"rkld_teacher": {"mode": "on_the_fly", "objective": "exact", "topk": None}}
    assert pre.run_info() == {"rkld_teacher": {"mode": "precomputed", "objective": "exact", "topk": None}}
    assert top.run_info() == {"rkld_teacher": {"mode": "precomputed", "objective": "topk_lower_bound", "topk": 8}}


def test_the_manifest_records_the_teacher_objective(tiny_model_dir, forget_records, tmp_path):
    """`unlearn` writes the method's run_info into manifest.json: here the automatic choice (the tiny model's
    full teacher table is smaller than two frozen models, so it is precomputed, exact)."""
    res = obliviate.unlearn(str(tiny_model_dir), "rkld", forget=forget_records, out=tmp_path / "out",
                            config={**CFG, "aug_epochs": 1})
    manifest = json.loads((res.out / "manifest.json").read_text())
    assert manifest["run_info"] == {"rkld_teacher": {"mode": "precomputed", "objective": "exact", "topk": None}}


def test_a_lora_run_augments_through_its_own_adapters(tiny_model, forget_records, helpers, tmp_path):
    """With `lora` (the real-scale presets), setup() receives the engine's PeftModel: θ₀ is its merged copy (the
    fresh adapters are zero, so the same function) and θ_aug is trained through LoRA adapters and merged into a
    plain model, more confident on the forget set than θ₀; the student's adapters are left untouched."""
    from obliviate.methods.engine import apply_lora

    model, tok = tiny_model
    before = helpers.mean_answer_nll(model, tok, forget_records)
    lora = {"lora": {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj", "down_proj"]}, "aug_lr": 2e-3}
    cfg = METHODS.get("rkld").make_config({**CFG, **lora, "teacher": "on_the_fly"})
    method = METHODS.get("rkld").create(cfg)
    method.ctx = _ctx(tok, forget_records, tmp_path)
    views = Views.build(method.views, forget_records, [], method.ctx.formatter)
    student = apply_lora(copy.deepcopy(model), cfg)
    method.setup(student, None, views)
    assert not hasattr(method.orig, "peft_config") and not hasattr(method.aug, "peft_config")
    assert helpers.mean_answer_nll(method.orig, tok, forget_records) == pytest.approx(before, rel=1e-5)
    # this 32-wide model has memorised the records (0.037 nats): rank-8 adapters lower it a little (at 5e-3 they
    # overshoot), unlike the full fine-tune of the first test
    assert helpers.mean_answer_nll(method.aug, tok, forget_records) < before
    assert any(not torch.equal(a, b) for a, b in zip(method.aug.parameters(), method.orig.parameters()))
    assert all(float(p.abs().sum()) == 0 for n, p in student.named_parameters() if "lora_B" in n)
