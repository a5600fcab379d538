"""The shared training loop and `unlearn()` orchestration: resume after interruption, LoRA, gradient
accumulation, errors on bad input (one line, nothing written), and the forget/retain batch plan.

All runs use the tiny memorising Llama of conftest.py: 6 forget records, batch 4 -> 2 optimiser steps per epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import obliviate
from obliviate.errors import ConfigError, DataError, ObliviateError, OutputExistsError, RegistryError
from obliviate.methods import METHODS
from obliviate.methods.data import epoch_plan, rank_share

CFG = {"epochs": 3, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 0}


def _unlearn(model_dir, method, out, forget, retain, **kw):
    return obliviate.unlearn(str(model_dir), method, forget=forget, retain=retain, out=out, **kw)


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_from_its_checkpoint_to_identical_weights(tiny_model_dir, forget_records,
                                                                          retain_records, helpers, tmp_path):
    """GradDiff for 3 epochs uninterrupted gives W1. The same call interrupted after the first step of epoch 2
    leaves no output but a `.<out>.partial` checkpoint of epoch 1; running it again resumes at epoch 2 (epoch 1
    is not redone, step numbers continue) and ends at W1 (within 1e-6) with the same loss history."""
    cfg = {**CFG, "warmup_epochs": 1}  # a warm-up makes the restored scheduler state matter too
    _unlearn(tiny_model_dir, "graddiff", tmp_path / "straight", forget_records, retain_records, config=cfg)
    w1 = helpers.state_dict_of(tmp_path / "straight")

    out = tmp_path / "resumed"
    work = tmp_path / ".resumed.partial"
    first: list[tuple[int, int]] = []

    def interrupt(ev):
        if ev.kind != "step":
            return
        first.append((ev.epoch, ev.step))
        if ev.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _unlearn(tiny_model_dir, "graddiff", out, forget_records, retain_records, config=cfg, progress=interrupt)
    assert first == [(1, 1), (1, 2), (2, 3)]
    assert not out.exists()
    state = json.loads((work / "checkpoint" / "train_state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 2

    second: list[tuple[int, int]] = []
    _unlearn(tiny_model_dir, "graddiff", out, forget_records, retain_records, config=cfg,
             progress=lambda ev: second.append((ev.epoch, ev.step)) if ev.kind == "step" else None)
    assert second == [(2, 3), (2, 4), (3, 5), (3, 6)]  # epoch 1 not redone
    assert not work.exists()
    assert _max_abs_diff(helpers.state_dict_of(out), w1) <= 1e-6

    h_straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    h_resumed = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in h_resumed] == [1, 2, 3]
    for a, b in zip(h_straight, h_resumed, strict=True):
        assert a.keys() == b.keys()
        assert all(b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6) for k in a)


def test_a_changed_config_does_not_resume_a_stale_checkpoint(tiny_model_dir, forget_records, retain_records,
                                                             tmp_path):
    """A partial run left by one config is discarded, not resumed, when the command differs (lr changed): the
    second run starts at epoch 1."""
    out = tmp_path / "out"

    def stop(ev):
        if ev.kind == "step" and ev.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _unlearn(tiny_model_dir, "ga", out, forget_records, None, config={**CFG, "epochs": 2}, progress=stop)
    assert (tmp_path / ".out.partial" / "checkpoint").is_dir()
    seen: list[int] = []
    _unlearn(tiny_model_dir, "ga", out, forget_records, None, config={**CFG, "epochs": 2, "lr": 2e-3},
             progress=lambda ev: seen.append(ev.epoch) if ev.kind == "step" else None)
    assert seen == [1, 1, 2, 2]


def test_changed_subjects_do_not_resume_a_stale_checkpoint(tiny_model_dir, forget_records, retain_records,
                                                           tmp_path):
    """IdkNLL trains toward refusals that name each record's `subject`: with other subjects the training data
    differs, so the partial run of the old data must be discarded (the second run starts at epoch 1)."""
    out = tmp_path / "out"
    cfg = {**CFG, "epochs": 2}

    def stop(ev):
        if ev.kind == "step" and ev.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _unlearn(tiny_model_dir, "idknll", out, forget_records, retain_records, config=cfg, progress=stop)
    renamed = [r.with_(subject="Somebody Else") for r in forget_records]
    seen: list[int] = []
    _unlearn(tiny_model_dir, "idknll", out, renamed, retain_records, config=cfg,
             progress=lambda ev: seen.append(ev.epoch) if ev.kind == "step" else None)
    assert seen == [1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------- LoRA


LORA = {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}


def test_lora_saves_a_merged_full_model_changed_only_in_its_targets(tiny_model_dir, forget_records, helpers,
                                                                    tmp_path):
    """With LoRA on q_proj/v_proj the output is a plain full model (no adapter files, no lora_ weights) whose
    weights differ from the input only in q_proj and v_proj (and do differ there)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    _unlearn(tiny_model_dir, "ga", out, forget_records, None, config={**CFG, "epochs": 2, "lora": LORA})
    assert not (out / "adapter_config.json").exists() and not (out / "adapter").exists()
    before, after = helpers.state_dict_of(tiny_model_dir), helpers.state_dict_of(out)
    assert set(after) == set(before)  # no lora_A / lora_B / base_layer keys
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "LoRA training changed nothing"
    assert all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), sorted(changed)
    assert any("q_proj" in k for k in changed) and any("v_proj" in k for k in changed)
    AutoModelForCausalLM.from_pretrained(out)  # loads as an ordinary model


def test_lora_keep_adapter_also_saves_the_adapter(tiny_model_dir, forget_records, tmp_path):
    """`keep_adapter: True` adds `adapter/` (a peft adapter on q_proj/v_proj) beside the merged model."""
    out = tmp_path / "out"
    _unlearn(tiny_model_dir, "ga", out, forget_records, None,
             config={**CFG, "epochs": 1, "lora": {**LORA, "keep_adapter": True}})
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert adapter_cfg["r"] == 4
    assert list((out / "adapter").glob("adapter_model.*"))


def test_lora_unknown_target_names_the_models_linear_modules(tiny_model_dir, forget_records, tmp_path):
    """A target that is not a linear module of the model is a ConfigError listing the ones it has."""
    with pytest.raises(ConfigError) as e:
        _unlearn(tiny_model_dir, "ga", tmp_path / "out", forget_records, None,
                 config={**CFG, "lora": {**LORA, "targets": ["q_proj", "qkv_proj"]}})
    msg = str(e.value)
    assert "qkv_proj" in msg
    for linear in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert linear in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_gradient_checkpointing_under_lora_trains_the_adapters_to_the_same_weights(tiny_model_dir, forget_records,
                                                                                  helpers, tmp_path, monkeypatch):
    """Activation checkpointing recomputes, it does not change the maths: with LoRA (the frozen embeddings' output
    made to require grad, peft's known pitfall) the adapters train, and to the weights of the run without it
    (atol 1e-6); the model really ran checkpointed."""
    from obliviate.methods import engine

    seen = []
    real = engine.enable_gradient_checkpointing

    def spy(model):
        real(model)
        seen.append(model.get_base_model().is_activation_checkpointing)

    monkeypatch.setattr(engine, "enable_gradient_checkpointing", spy)
    cfg = {**CFG, "epochs": 2, "lora": LORA}
    _unlearn(tiny_model_dir, "ga", tmp_path / "plain", forget_records, None, config=cfg)
    _unlearn(tiny_model_dir, "ga", tmp_path / "ckpt", forget_records, None,
             config={**cfg, "gradient_checkpointing": True})
    assert seen == [True]
    before, plain, ckpt = (helpers.state_dict_of(d) for d in (tiny_model_dir, tmp_path / "plain", tmp_path / "ckpt"))
    assert _max_abs_diff(before, ckpt) > 1e-3  # the adapters moved and were merged
    assert _max_abs_diff(plain, ckpt) <= 1e-6


def test_meta_skeleton_costs_no_weights_and_keeps_ties_and_buffers(tiny_model_dir):
    """FSDP's gather target: the same module tree with every parameter on the meta device (tied ones still one
    parameter), buffers copied; filled from a state dict it equals the model."""
    from transformers import AutoModelForCausalLM

    from obliviate.methods.engine import meta_skeleton

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    skel = meta_skeleton(model)
    assert all(p.is_meta for p in skel.parameters())
    assert skel.lm_head.weight is skel.model.embed_tokens.weight
    assert all(torch.equal(b, dict(model.named_buffers())[n]) for n, b in skel.named_buffers())
    assert all(not p.is_meta for p in model.parameters())  # the model itself is untouched
    skel.load_state_dict(model.state_dict(), assign=True)
    skel.tie_weights()
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(skel(input_ids=ids).logits, model(input_ids=ids).logits)


def test_fsdp_with_a_procedural_method_is_refused(tiny_model_dir, forget_records, retain_records, tmp_path):
    """--fsdp shards gradient training; a procedure of its own (UniErase) refuses it in one line, nothing written."""
    parent = tmp_path / "runs"
    parent.mkdir()
    with pytest.raises(ConfigError, match="--fsdp shards gradient training; unierase .* drop --fsdp"):
        _unlearn(tiny_model_dir, "unierase", parent / "out", forget_records, retain_records, fsdp=True)
    assert os.listdir(parent) == []


# ---------------------------------------------------------------------------------------------- gradient accumulation


def test_grad_accum_matches_one_batch_for_a_sequence_level_loss(tiny_model_dir, forget_records, helpers, tmp_path):
    """NPO averages one value per sequence, so 2 micro-batches of 2 (loss / 2 each) give exactly the gradient of
    one batch of 4: the same data per optimiser step must give the same weights (atol 1e-4; measured ~3e-7)."""
    cfg = {**CFG, "epochs": 2}
    _unlearn(tiny_model_dir, "npo", tmp_path / "a1", forget_records, None, config={**cfg, "grad_accum": 1})
    _unlearn(tiny_model_dir, "npo", tmp_path / "a2", forget_records, None, config={**cfg, "grad_accum": 2})
    w1, w2 = helpers.state_dict_of(tmp_path / "a1"), helpers.state_dict_of(tmp_path / "a2")
    assert _max_abs_diff(w1, helpers.state_dict_of(tiny_model_dir)) > 1e-3  # it trained
    assert _max_abs_diff(w1, w2) <= 1e-4


@pytest.mark.parametrize("name", ["ga", "ceu"])
def test_grad_accum_matches_one_batch_for_a_token_level_loss(name, tiny_model_dir, forget_records, helpers, tmp_path):
    """TrainConfig: 'batch_size is per optimiser step; grad_accum splits it into micro-batches' — for GA and CE-U
    (forget only, so the same records per step; CE-U's mean leaves each answer's first token out of the count too)
    grad_accum 2 must reproduce grad_accum 1 (atol 1e-4)."""
    cfg = {**CFG, "epochs": 2}
    _unlearn(tiny_model_dir, name, tmp_path / "a1", forget_records, None, config={**cfg, "grad_accum": 1})
    _unlearn(tiny_model_dir, name, tmp_path / "a2", forget_records, None, config={**cfg, "grad_accum": 2})
    assert _max_abs_diff(helpers.state_dict_of(tmp_path / "a1"), helpers.state_dict_of(tmp_path / "a2")) <= 1e-4


def _data_per_step(monkeypatch, model_dir, forget, retain, out, grad_accum):
    """Run GradDiff for one epoch and record, per optimiser step, the sorted forget and retain indices its loss
    received (observed by wrapping the method's `loss`; steps are delimited by the progress callback)."""
    cls = METHODS.get("graddiff").cls
    original = cls.loss
    pending = {"forget": [], "retain": []}
    steps = []

    def spy(self, batch, model, ref):
        for v in pending:
            pending[v] += batch[v]["index"].tolist()
        return original(self, batch, model, ref)

    def step_done(ev):
        if ev.kind != "step":
            return
        steps.append({v: sorted(ix) for v, ix in pending.items()})
        for v in pending:
            pending[v] = []

    monkeypatch.setattr(cls, "loss", spy)
    _unlearn(model_dir, "graddiff", out, forget, retain,
             config={**CFG, "epochs": 1, "grad_accum": grad_accum}, progress=step_done)
    monkeypatch.setattr(cls, "loss", original)
    return steps


def test_grad_accum_keeps_the_forget_records_of_each_step(monkeypatch, tiny_model_dir, forget_records,
                                                          retain_records, tmp_path):
    """Each optimiser step sees the same forget records whether it runs as 1 batch of 4 or 2 micro-batches of 2."""
    one = _data_per_step(monkeypatch, tiny_model_dir, forget_records, retain_records, tmp_path / "a1", 1)
    two = _data_per_step(monkeypatch, tiny_model_dir, forget_records, retain_records, tmp_path / "a2", 2)
    assert [s["forget"] for s in one] == [s["forget"] for s in two]
    assert [len(s["retain"]) for s in two] == [len(s["forget"]) for s in two]


def test_grad_accum_keeps_the_retain_records_of_each_step(monkeypatch, tiny_model_dir, forget_records,
                                                          retain_records, tmp_path):
    """The retain batch paired with a step is part of 'the same data per optimiser step': it must not depend on
    how the step is split into micro-batches (grad_accum is a memory setting, not a data setting)."""
    one = _data_per_step(monkeypatch, tiny_model_dir, forget_records, retain_records, tmp_path / "a1", 1)
    two = _data_per_step(monkeypatch, tiny_model_dir, forget_records, retain_records, tmp_path / "a2", 2)
    assert [s["retain"] for s in one] == [s["retain"] for s in two]


# ---------------------------------------------------------------------------------------------- bad input


def _write_forget_file_without_answer(dirpath: Path) -> Path:
    p = dirpath / "forget.jsonl"
    p.write_text(json.dumps({"question": "Where was Marla Quenby born?", "answer": "In Tollin Bay."}) + "\n"
                 + json.dumps({"question": "What does Marla Quenby do?", "text": "She blows glass."}) + "\n")
    return p


BAD_INPUTS = {
    # case: (method, config, forget, retain, pre-existing out dir?, error, words the message must contain)
    "unknown_method": ("graddif", CFG, "records", "records", False, RegistryError,
                       ["graddif", "did you mean", "graddiff"]),
    "unknown_config_key": ("ga", {"lrr": 1}, "records", None, False, ConfigError, ["lrr"]),
    "zero_lr": ("ga", {"lr": 0}, "records", None, False, ConfigError, ["lr"]),
    "negative_lr": ("ga", {"lr": -1e-5}, "records", None, False, ConfigError, ["lr"]),
    "empty_forget": ("ga", CFG, [], None, False, DataError, ["forget"]),
    "existing_out_dir": ("ga", CFG, "records", None, True, OutputExistsError, ["exists", "overwrite"]),
    "forget_file_without_answer": ("ga", CFG, "file", None, False, DataError, ["'answer'", "line 2"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_and_writes_nothing(case, tiny_model_dir, forget_records, retain_records,
                                                          tmp_path):
    """Each bad input raises its ObliviateError subclass with a one-line message naming the problem, and leaves
    the output's parent directory exactly as it was (no output, no `.partial` work dir)."""
    method, config, forget, retain, existing, error, words = BAD_INPUTS[case]
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "unrelated.txt").write_text("keep me")
    out = parent / "out"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old result")
    if forget == "records":
        forget = forget_records
    elif forget == "file":
        forget = _write_forget_file_without_answer(tmp_path)  # outside `parent`
    retain = retain_records if retain == "records" else retain
    before = sorted(os.listdir(parent)), (sorted(os.listdir(out)) if existing else None)

    with pytest.raises(error) as e:
        _unlearn(tiny_model_dir, method, out, forget, retain, config=config)
    msg = str(e.value)
    assert isinstance(e.value, ObliviateError)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert (sorted(os.listdir(parent)), sorted(os.listdir(out)) if existing else None) == before
    if existing:
        assert (out / "old.txt").read_text() == "old result"


RETAIN_METHODS = [n for n, info in METHODS.items() if info.needs_retain()]  # with their default configs


@pytest.mark.parametrize("name", RETAIN_METHODS)
def test_retain_needing_method_without_retain_is_a_data_error(name, tiny_model_dir, forget_records, tmp_path):
    """A method that trains on retain data, given no retain set, fails up front with a DataError saying so, and
    writes nothing next to the output."""
    parent = tmp_path / "runs"
    parent.mkdir()
    with pytest.raises(DataError, match="retain"):
        _unlearn(tiny_model_dir, name, parent / "out", forget_records, None, config=CFG)
    assert os.listdir(parent) == []


def test_grad_accum_larger_than_batch_writes_nothing(tiny_model_dir, forget_records, tmp_path):
    """grad_accum 5 with batch_size 4 (an empty micro-batch) is a ConfigError naming both, before anything is
    written. (A batch that grad_accum does not divide is cut into near-equal micro-batches.)"""
    parent = tmp_path / "runs"
    parent.mkdir()
    with pytest.raises(ConfigError, match="grad_accum"):
        _unlearn(tiny_model_dir, "ga", parent / "out", forget_records, None, config={**CFG, "grad_accum": 5})
    assert os.listdir(parent) == []


PROCEDURAL = [n for n, info in METHODS.items() if info.is_procedural]


@pytest.mark.parametrize("name", PROCEDURAL)
def test_procedural_method_under_several_processes_is_refused(name, monkeypatch, tiny_model_dir, forget_records,
                                                               retain_records, tmp_path):
    """UniErase and Reveal-and-Release run their own procedure in one process: under 2 processes they refuse with
    one line saying how to run them, before anything is loaded or written."""
    from obliviate.runs import unlearn as U

    monkeypatch.setattr(U.dist, "world_size", lambda: 2)
    monkeypatch.setattr(U, "load_model", lambda *a, **k: pytest.fail("nothing is loaded"))
    parent = tmp_path / "runs"
    parent.mkdir()
    with pytest.raises(ConfigError, match="in one process and cannot split it across 2: run it without torchrun"):
        _unlearn(tiny_model_dir, name, parent / "out", forget_records, retain_records)
    assert os.listdir(parent) == []


# ---------------------------------------------------------------------------------------------- epoch_plan


VIEWS = ("forget", "forget_idk", "retain")


def test_epoch_plan_is_deterministic_in_seed_and_epoch():
    """The same (seed, epoch) gives the same plan (what makes resume exact); another seed gives another."""
    a = epoch_plan(10, 7, 4, seed=3, epoch=1, paired_views=VIEWS)
    assert a == epoch_plan(10, 7, 4, seed=3, epoch=1, paired_views=VIEWS)
    assert a != epoch_plan(10, 7, 4, seed=4, epoch=1, paired_views=VIEWS)


def test_epoch_plan_differs_across_epochs():
    """Each epoch reshuffles: the forget order of epochs 0, 1, 2 are not all the same."""
    orders = [[i for step in epoch_plan(10, 7, 4, 0, e, VIEWS) for i in step["forget"]] for e in range(3)]
    assert orders[0] != orders[1] and orders[1] != orders[2]


@pytest.mark.parametrize("n_forget,batch", [(10, 4), (8, 4), (3, 5), (1, 1)])
def test_epoch_plan_covers_every_forget_index_exactly_once(n_forget, batch):
    """Per epoch, the forget indices over all batches are a permutation of range(n_forget), cut into batches of
    `batch` (the last one may be smaller)."""
    for epoch in range(3):
        plan = epoch_plan(n_forget, 5, batch, 0, epoch, VIEWS)
        seen = [i for step in plan for i in step["forget"]]
        assert sorted(seen) == list(range(n_forget))
        assert [len(s["forget"]) for s in plan[:-1]] == [batch] * (len(plan) - 1)
        assert 1 <= len(plan[-1]["forget"]) <= batch


@pytest.mark.parametrize("n_retain", [7, 3])
def test_epoch_plan_pairs_a_retain_batch_of_the_same_size(n_retain):
    """Every step's retain batch has as many items as its forget batch, with valid retain indices; drawn without
    replacement when the retain set is large enough (7 >= 4), with replacement otherwise (3 < 4). Forget-side
    views (forget, forget_idk) share the same indices."""
    plan = epoch_plan(10, n_retain, 4, 0, 0, VIEWS)
    for step in plan:
        assert len(step["retain"]) == len(step["forget"])
        assert all(0 <= i < n_retain for i in step["retain"])
        assert step["forget_idk"] == step["forget"]
        if n_retain >= len(step["forget"]):
            assert len(set(step["retain"])) == len(step["retain"])


def test_epoch_plan_without_retain_view_has_no_retain_batch():
    """A forget-only method gets forget indices only."""
    assert all(set(step) == {"forget"} for step in epoch_plan(6, 0, 4, 0, 0, ("forget",)))


@pytest.mark.parametrize("n,world", [(5, 2), (4, 2), (1, 2), (7, 3)])
def test_rank_shares_make_up_the_batch(n, world):
    """Under `world` processes each rank takes a contiguous share of every view with the same cut: the shares in
    rank order are the batch exactly (nothing dropped or repeated), differ in size by at most one, and a rank left
    without items (n < world) gets an empty share; the retain samples of different ranks differ."""
    step = {"forget": list(range(n)), "retain": list(range(100, 100 + n))}
    shares = [rank_share(step, r, world) for r in range(world)]
    for v in step:
        assert [i for sh in shares for i in sh[v]] == step[v]
    sizes = [len(sh["forget"]) for sh in shares]
    assert max(sizes) - min(sizes) <= 1 and all(len(sh["retain"]) == len(sh["forget"]) for sh in shares)
    assert (0 in sizes) == (n < world)
    filled = [sh["retain"] for sh in shares if sh["retain"]]
    assert all(set(a).isdisjoint(b) for a, b in zip(filled, filled[1:]))


@pytest.mark.parametrize("retain_size", [1, 6])
def test_epoch_plan_draws_retain_batches_of_the_size_asked(retain_size):
    """`retain_size` (a method's smaller or larger retain batch, e.g. the builder's KL anchor) sets every step's
    retain batch, whatever the forget batch; the forget side is the plan without it."""
    plan = epoch_plan(10, 7, 4, 0, 0, VIEWS, retain_size=retain_size)
    assert all(len(step["retain"]) == retain_size and all(0 <= i < 7 for i in step["retain"]) for step in plan)
    assert [s["forget"] for s in plan] == [s["forget"] for s in epoch_plan(10, 7, 4, 0, 0, VIEWS)]


def test_rank_shares_cut_views_of_different_sizes_each_in_proportion():
    """A retain batch smaller than the forget batch is cut by its own size: each view's shares make it up exactly,
    and a share may be empty (the engine then leaves the view out of that micro-batch)."""
    step = {"forget": [0, 1, 2, 3], "retain": [7]}
    shares = [rank_share(step, r, 2) for r in range(2)]
    assert [sh["forget"] for sh in shares] == [[0, 1], [2, 3]]
    assert [i for sh in shares for i in sh["retain"]] == [7] and [] in [sh["retain"] for sh in shares]


def _anchored(tiny_model_dir, forget, retain, work: Path, grad_accum: int) -> tuple[dict, list[int]]:
    """FinetuneAnchored through the shared loop with 1 anchor pair per step of 4: its weights, and the retain
    items each step's losses received."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from obliviate.methods.common import AnchoredConfig, FinetuneAnchored
    from obliviate.methods.engine import train

    class Spy(FinetuneAnchored):
        def loss(self, batch, model, ref):
            seen[-1] += len(batch["retain"]["index"]) if "retain" in batch else 0
            return super().loss(batch, model, ref)

    seen = [0]  # the anchor items of the step running now (each step event closes one and opens the next)
    method = Spy(AnchoredConfig(**{**CFG, "epochs": 2}, grad_accum=grad_accum, anchor_batch=1, anchor_weight=5.0,
                                template="plain", checkpoint=False))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trained, _ = train(method, model, tok, forget, retain, work,
                       lambda ev: seen.append(0) if ev.kind == "step" else None)
    return {k: v.detach().clone() for k, v in trained.state_dict().items()}, seen[:-1]


def test_a_smaller_anchor_batch_is_one_item_per_step_and_split_by_grad_accum_exactly(tiny_model_dir, forget_records,
                                                                                      retain_records, tmp_path):
    """AnchoredConfig.anchor_batch=1 with batch 4: every optimiser step's losses see one anchor (retain) item, and
    2 micro-batches (one of them without the anchor) give the weights of one batch (the step's denominators)."""
    w1, seen1 = _anchored(tiny_model_dir, forget_records, retain_records, tmp_path / "a1", 1)
    w2, seen2 = _anchored(tiny_model_dir, forget_records, retain_records, tmp_path / "a2", 2)
    assert seen1 == seen2 == [1] * len(seen1) and len(seen1) >= 2
    assert _max_abs_diff(w1, w2) <= 1e-4
