"""UniErase (methods/unierase.py): the token stage trains one row only, requests are built at the right token,
the modes behave, the saved model keeps the token, the forget questions are answered with the token while retain
answers stay as they were, and on a tiny model that knows how to refuse, the forget questions end up refused.

The config defaults are the paper's (for an 8B model); these tests start from the tiny-scale preset
(obliviate.bench.presets.TINY) with a short token schedule."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import obliviate
from obliviate.bench.presets import TINY
from obliviate.data.records import QA
from obliviate.data.refusals import REFUSALS, is_refusal
from obliviate.data.templates import Formatter
from obliviate.errors import ConfigError, DataError
from obliviate.eval.passes import generate_pass
from obliviate.methods import METHODS
from obliviate.edit import EditConfig
from obliviate.methods.base import ApplyContext, ProgressEvent
from obliviate.methods.unierase import (UniErase, UniEraseConfig, _token_matrices, add_unlearn_token, build_request,
                                        default_layers, key_position_for, resolve_subjects, token_sequences)

FAST = {**TINY["unierase"], "token_schedule": [(4, 5e-2)], "robust_epochs": 1}


def test_default_layers_scale_the_papers_band():
    """Layers 4–8 of 32 (Llama-3.1-8B), scaled to the depth and kept below the last layer."""
    assert default_layers(32) == [4, 5, 6, 7, 8]
    assert default_layers(64) == list(range(8, 17))
    assert default_layers(4) == [0, 1]
    assert default_layers(2) == [0]
    assert key_position_for("auto", 32) == "subject_last" and key_position_for("auto", 4) == "prompt_last"
    assert key_position_for("subject_last", 4) == "subject_last"


def test_subjects_come_from_the_field_or_the_questions():
    recs = [QA("a", "Where was Marla Quenby born?", "x", subject="Marla Quenby", group="g"),
            QA("b", "What does Marla Quenby do?", "y", group="g"),
            QA("c", "what is the capital?", "z")]
    assert resolve_subjects(recs, "auto") == ["Marla Quenby", "Marla Quenby", "capital"]
    assert resolve_subjects(recs[:2], "name") == ["Marla Quenby", "Marla Quenby"]
    with pytest.raises(DataError, match="have no 'subject'"):
        resolve_subjects(recs, "field")
    with pytest.raises(DataError, match="no name found"):
        resolve_subjects(recs[2:], "name")


def test_requests_read_keys_at_the_subject_or_the_prompt_end(tiny_model, forget_records):
    """subject_last: the key position decodes to the end of the subject, in every context variant; prompt_last:
    the last prompt token; the target is the token alone; variants are the question with each prefix."""
    _, tok = tiny_model
    fmt = Formatter(tok, "plain")
    r = forget_records[0]
    prefixes = ["", "Tell me. "]
    req = build_request(fmt, r, r.subject, 999, prefixes, "{} is a", "subject_last")
    assert req.target == (999,) and len(req.prompts) == 2
    assert list(req.prompts[0].ids) == fmt.prompt_ids(r.question)
    assert list(req.prompts[1].ids) == fmt.prompt_ids("Tell me. " + r.question)
    for p in req.prompts:
        assert tok.decode(list(p.ids[: p.subject_pos + 1])).endswith(r.subject)
    assert req.kl_prompt is not None and tok.decode(list(req.kl_prompt.ids)).endswith(f"{r.subject} is a")
    last = build_request(fmt, r, r.subject, 999, prefixes, "{} is a", "prompt_last")
    assert all(p.subject_pos == len(p.ids) - 1 for p in last.prompts) and last.kl_prompt is None
    other = build_request(fmt, r, "Nobody Here", 999, [""], "{} is a", "subject_last")  # not in the question
    assert other.prompts[0].subject_pos == len(other.prompts[0].ids) - 1


def test_a_refusal_value_target_is_stage_ones_sequence_after_the_token(tiny_model, forget_records):
    """value_target=token_refusal: [UNL] ⊕ the subject's first refusal ⊕ [UNL] ⊕ EOS, the same for every question
    of a subject (so that they can share one value), and the prompts and keys stay those of the token target."""
    _, tok = tiny_model
    fmt = Formatter(tok, "plain")
    a, b = [r for r in forget_records if r.subject == forget_records[0].subject][:2]
    plain = build_request(fmt, a, a.subject, 999, [""], "{} is a", "subject_last")
    req = build_request(fmt, a, a.subject, 999, [""], "{} is a", "subject_last", "token_refusal")
    assert req.prompts == plain.prompts and req.kl_prompt == plain.kl_prompt
    assert req.target[0] == 999 and req.target[-2:] == (999, fmt.eos_id)
    assert tok.decode(list(req.target[1:-2])) == REFUSALS[0].format(name=a.subject)
    assert build_request(fmt, b, b.subject, 999, [""], "{} is a", "subject_last", "token_refusal").target == req.target


def test_token_sequences_mask_up_to_and_including_the_first_token(tiny_model, forget_records):
    _, tok = tiny_model
    fmt = Formatter(tok, "plain")
    (ids, labels), (raw_ids, _) = token_sequences(forget_records[:1], fmt, 77, ["template", "raw"])
    first = ids.index(77)
    assert all(lab == -100 for lab in labels[: first + 1]) and labels[first + 1] != -100
    assert ids[-2:] == [77, fmt.eos_id] and labels[-2:] == [77, fmt.eos_id]  # refusal ⊕ [UNL] ⊕ EOS
    assert is_refusal(tok.decode(ids[first + 1:-2]))
    assert raw_ids[: raw_ids.index(77)] == list(tok(forget_records[0].question)["input_ids"])


def test_stage_one_trains_only_the_tokens_row(tiny_model, forget_records, retain_records):
    """After the token stage (with robustness noise) every weight equals the input's — the grown embedding's old
    rows included — and only the new row moved; the tokenizer knows the token as special."""
    model, tok = copy.deepcopy(tiny_model[0]), copy.deepcopy(tiny_model[1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tid = add_unlearn_token(model, tok)
    assert tid == len(tok) - 1 and tok.convert_ids_to_tokens(tid) == "<unlearn_0>" and tid in tok.all_special_ids
    init_row = model.get_input_embeddings().weight[tid].detach().clone()
    method = UniErase(UniEraseConfig(**FAST))
    fmt = Formatter(tok, "plain")
    seqs = token_sequences(forget_records, fmt, tid, ["template"])
    log = method._train_token(model, fmt, tid, seqs, forget_records, [0])
    after = model.state_dict()
    for k, v in before.items():
        if after[k].shape != v.shape:  # the (tied) embedding grew by one row
            assert torch.equal(after[k][: v.shape[0]], v), k
        else:
            assert torch.equal(after[k], v), k
    assert not torch.equal(model.get_input_embeddings().weight[tid], init_row)
    assert len(_token_matrices(model)) == 1  # tied: one row serves input and output
    assert log["history"][-1]["phase"] == "robust_layer0" and log["history"][-1]["nll"] < log["history"][0]["nll"]
    assert all(p.requires_grad for p in model.parameters())  # the caller's flags are restored


def test_unlearn_saves_the_model_with_its_token(tiny_model_dir, forget_records, retain_records, tmp_path):
    """The output's tokenizer has <unlearn_0> (skipped when decoding), the model's vocabulary grew by one, and
    unierase.json reports layers, null-space sizes and the fraction of parameters modified."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    obliviate.unlearn(str(tiny_model_dir), "unierase", forget=forget_records, retain=retain_records, out=out,
                      config=FAST)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    tid = tok.convert_tokens_to_ids("<unlearn_0>")
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == tid + 1
    assert tok.decode([tid] + tok("I don't know.", add_special_tokens=False)["input_ids"],
                      skip_special_tokens=True) == "I don't know."
    info = json.loads((out / "unierase.json").read_text())
    assert info["layers"] == [0] and info["key_position"] == "prompt_last" and info["token_keys_preserved"]
    assert 0 < info["edited_fraction"] < info["modified_fraction"] < 1
    assert info["edited_params"] == 64 * 32 and len(info["edits"]) == len(forget_records)
    assert set(info["null_space_dims"]) == {"0"}
    assert info["shared_value"] == "request" and 0 <= info["forget_first_token_unl"] <= 1


def test_a_subjects_questions_share_one_residual(tiny_model, forget_records, retain_records, tmp_path):
    """shared_value=subject: one δ per person (the edits of one subject report the same norm and NLL, the two
    people different ones), also with the refusal in the value's target; shared_value=request: one per question."""
    def norms(shared: str, value_target: str = "token") -> dict[str, set]:
        method = UniErase(UniEraseConfig(**{**FAST, "shared_value": shared, "value_target": value_target}))
        method.apply(_ctx(tiny_model, forget_records, retain_records, tmp_path / f"{shared}-{value_target}"))
        assert method.extras()["unierase"]["value_target"] == value_target
        by: dict[str, set] = {}
        for e in method.extras()["unierase"]["edits"]:
            by.setdefault(e["subject"], set()).add((e["delta_norm"], e["target_nll"]))
        return by

    shared = norms("subject")
    assert len(shared) == 2 and all(len(v) == 1 for v in shared.values())
    assert len(set.union(*shared.values())) == 2
    assert all(len(v) == 3 for v in norms("request").values())
    with_refusal = norms("subject", "token_refusal")  # a longer target, shared the same way
    assert all(len(v) == 1 for v in with_refusal.values()) and with_refusal != shared


def _ctx(tiny_model, forget, retain, tmp_path, **kw) -> ApplyContext:
    model, tok = copy.deepcopy(tiny_model[0]), copy.deepcopy(tiny_model[1])
    return ApplyContext(model, tok, list(forget), list(retain), tmp_path, **kw)


def test_sequential_mode_saves_after_each_request_and_records_the_curve(tiny_model, forget_records,
                                                                         retain_records, tmp_path):
    """3 requests of 2 items: the model is saved after each (through save_model when given, else under the work
    dir), and the curve has one row per request with the refusal share and the retain NLL."""
    saved = []
    ctx = _ctx(tiny_model, forget_records, retain_records, tmp_path,
               save_model=lambda m, name: saved.append(name))
    method = UniErase(UniEraseConfig(**{**FAST, "mode": "sequential", "n_requests": 3}))
    method.apply(ctx)
    assert saved == ["request_01", "request_02", "request_03"]
    curve = method.extras()["sequential"]
    assert [row["n_edited"] for row in curve] == [2, 4, 6]
    assert all(0 <= row["forget_refusal"] <= 1 and row["retain_nll"] > 0 for row in curve)
    assert [e["request"] for e in method.extras()["unierase"]["edits"]] == [1, 1, 2, 2, 3, 3]

    ctx2 = _ctx(tiny_model, forget_records, retain_records, tmp_path / "w2")
    UniErase(UniEraseConfig(**{**FAST, "mode": "sequential", "n_requests": 2, "probe_retain": 0})).apply(ctx2)
    assert (tmp_path / "w2" / "requests" / "request_02" / "config.json").is_file()


def test_precise_mode_edits_one_item_and_bad_settings_are_reported(tiny_model, forget_records, retain_records,
                                                                   tmp_path):
    ctx = _ctx(tiny_model, forget_records, retain_records, tmp_path)
    method = UniErase(UniEraseConfig(**{**FAST, "mode": "precise", "precise_item": forget_records[2].id}))
    method.apply(ctx)
    assert [e["id"] for e in method.extras()["unierase"]["edits"]] == [forget_records[2].id]
    with pytest.raises(ConfigError, match="precise_item=9 is out of range"):
        UniErase(UniEraseConfig(mode="precise", precise_item=9)).apply(_ctx(tiny_model, forget_records, [], tmp_path))
    with pytest.raises(ConfigError, match="layers=\\[5\\] out of range"):
        UniErase(UniEraseConfig(layers=[5])).apply(_ctx(tiny_model, forget_records, retain_records, tmp_path))
    with pytest.raises(DataError, match="preserved text"):
        UniErase(UniEraseConfig(**FAST)).apply(_ctx(tiny_model, forget_records, [], tmp_path))
    with pytest.raises(ConfigError, match="context_prefixes must start"):
        METHODS.get("unierase").make_config({"context_prefixes": ["Hi. "]})


def test_the_defaults_are_the_papers():
    """Stage I: 5 epochs at 1e-3 then 3 at 1e-4 on raw and templated questions, batch 16, noise clipped at one
    std, no negatives (UniErase's train_UNL.py); Stage II: AlphaEdit's Llama-3-8B values, keys at the subject's
    last token. One default is ours: the token's continuation joins the preserved keys (False = the paper). An
    `edit.l2=5` override keeps the other edit defaults."""
    cfg = UniEraseConfig()
    assert cfg.token_schedule == [(5, 1e-3), (3, 1e-4)] and cfg.robust_epochs == 2 and cfg.robust_lr is None
    assert set(cfg.token_formats) == {"raw", "template"} and cfg.token_batch_size == 16
    assert cfg.token_negatives == 0 and cfg.noise_clip == 1.0 and cfg.key_position == "subject_last"
    assert (cfg.edit.v_lr, cfg.edit.clamp_norm_factor, cfg.edit.l2, cfg.edit.v_steps) == (0.1, 0.75, 10.0, 25)
    assert cfg.edit == EditConfig() and cfg.preserve_token_keys and cfg.shared_value == "request"
    assert cfg.value_target == "token"
    over = UniEraseConfig(edit={"l2": 5.0})
    assert over.edit.l2 == 5.0 and over.edit.v_lr == 0.1


def test_forget_questions_are_answered_with_the_token(tiny_model, forget_records, retain_records, tmp_path):
    """Fast end to end on the 2-layer test model: after unlearning, every forget question's greedy answer starts
    with [UNL] (its true answer is gone), and every retain answer is exactly as before. The tiny preset with
    l2 = 0.1: at hidden size 32 the update must realise nearly all of the residual (with the preset's l2 = 1,
    3 of the 6 forget questions). Progress arrives as "stage" events, token stage first. (The refusal text after
    [UNL] needs a model that learned to refuse: the slow test below.)"""
    model, tok = copy.deepcopy(tiny_model[0]), copy.deepcopy(tiny_model[1])
    before = _greedy(model, tok, retain_records)
    events: list[ProgressEvent] = []
    ctx = ApplyContext(model, tok, list(forget_records), list(retain_records), tmp_path, progress=events.append)
    edited = UniErase(UniEraseConfig(**{**FAST, "edit": {**FAST["edit"], "l2": 0.1}})).apply(ctx)
    tid = tok.convert_tokens_to_ids("<unlearn_0>")
    fmt = Formatter(tok, "plain")
    firsts = generate_pass(edited, [fmt.prompt_ids(r.question) for r in forget_records], tok.pad_token_id,
                           tok.eos_token_id, 24)
    assert all(ids[:1] == [tid] for ids in firsts), firsts
    answers = [tok.decode(ids, skip_special_tokens=True) for ids in firsts]
    assert not any(r.answer.rstrip(".") in a for r, a in zip(forget_records, answers, strict=True)), answers
    assert _greedy(edited, tok, retain_records) == before

    assert {e.kind for e in events} == {"stage"} and events[0].stage == "token" and events[-1].stage == "edit"
    assert [e.step for e in events] == list(range(1, len(events) + 1)) and events[-1].step == events[-1].total


# ---------------------------------------------------------------------------------------------- end to end

UNSEEN = ["Bram Olvey", "Cora Middage", "Dov Hartune", "Elsa Frintow", "Faro Glenmire", "Gita Hollowell",
          "Hugo Sparrin", "Ines Tavold"]


def _refusal_records() -> list[QA]:
    out = []
    for k, name in enumerate(UNSEEN):
        qs = [f"Where was {name} born?", f"What does {name} do for a living?", f"What pet does {name} keep?"]
        out += [QA(f"u{k}:{i}", q, REFUSALS[(k + i) % len(REFUSALS)].format(name=name), subject=name)
                for i, q in enumerate(qs)]
    return out


def _train_refusing_model(helpers, records: list[QA], out):
    """A tiny Llama (4 layers, hidden 64) that memorised `records` — the 12 facts and refusals for 8 people it
    never saw, as the scenarios' targets learn them (UniErase's token steers into that behaviour). AdamW lr 3e-3,
    200 full-batch steps."""
    spec = dict(vocab_size=500, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128)
    return helpers.train_tiny(records, out, spec=spec, steps=200)


def _greedy(model, tok, records: list[QA]) -> list[str]:
    fmt = Formatter(tok, "plain")
    outs = generate_pass(model, [fmt.prompt_ids(r.question) for r in records], tok.pad_token_id, tok.eos_token_id, 24)
    return [tok.decode(o, skip_special_tokens=True) for o in outs]


@pytest.mark.slow
def test_forget_questions_are_refused_and_retain_answers_kept(forget_records, retain_records, tmp_path, helpers):
    """End to end on a model that can refuse: every forget question is answered with a refusal ([UNL] then the
    refusal; the token itself is not shown), every retain question exactly as before. The tiny preset except a
    longer token schedule: 6 forget + 6 negative sequences are only 2 Adam steps per epoch. About 20 s on one
    thread (the model's training dominates), hence `slow`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = _train_refusing_model(helpers, forget_records + retain_records + _refusal_records(), tmp_path / "m")
    assert not any(is_refusal(a) for a in _greedy(model, tok, forget_records))
    out = tmp_path / "out"
    obliviate.unlearn(str(tmp_path / "m"), "unierase", forget=forget_records, retain=retain_records, out=out,
                      config={**TINY["unierase"], "token_schedule": [(40, 5e-2), (10, 5e-3)]})
    edited, etok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    answers = _greedy(edited, etok, forget_records)
    assert all(is_refusal(a) for a in answers), answers
    assert not any("<unlearn" in a for a in answers)
    assert _greedy(edited, etok, retain_records) == _greedy(model, tok, retain_records)
