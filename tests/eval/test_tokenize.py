"""Tokenisation is a property of the model: a tiny Llama trained with prompt and answer tokenised separately scores
its answers far better that way than jointly (and the other way round), evaluation picks the mode up from what
obliviate recorded beside the model (build.json, manifest.json), an explicit setting wins, and `unlearn` trains in
the recorded mode and records it in its manifest."""

from __future__ import annotations

import json

import pytest
import torch

from obliviate.data.templates import Formatter
from obliviate.eval.suite import EvalConfig, evaluate_runner, make_runner

METRICS = ["forget_prob", "exact_memorization"]


def _train(model, tok, records, tokenize: str, steps: int = 80):
    """Full-batch AdamW on the records' answers (labels of `tokenize` mode), as the builder fine-tunes."""
    from obliviate.eval.passes import answer_nll
    from obliviate.utils.tensors import pad_batch

    enc = Formatter(tok, "plain", tokenize=tokenize).encode_qa(list(records))
    ids, mask, labels = pad_batch([e.input_ids for e in enc], tok.pad_token_id, labels=[e.labels for e in enc])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = answer_nll(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, "token_mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(scenario, tiny_models):
    """(model trained separately, model trained jointly, tokenizer), both from the same initial weights."""
    import copy

    model, _, tok = tiny_models
    torch.manual_seed(0)
    return (_train(copy.deepcopy(model), tok, scenario.forget.records, "separate"),
            _train(copy.deepcopy(model), tok, scenario.forget.records, "joint"), tok)


def _prob(model, tok, scenario, **cfg) -> tuple[float, str]:
    c = EvalConfig(metrics=METRICS, cache=False, **cfg)
    res = evaluate_runner(make_runner(model, tok, c, "m"), scenario, c)
    return res.summary["forget_prob"], res.meta["tokenize"]


def test_the_tokenizer_merges_across_the_template_space(scenario, tiny_models):
    """Precondition of the test below: on these answers the joint string's tokens differ from the separate ids."""
    tok = tiny_models[2]
    r = scenario.forget.records[0]
    assert (Formatter(tok, "plain", tokenize="joint").encode(r.question, r.answer).input_ids
            != Formatter(tok, "plain", tokenize="separate").encode(r.question, r.answer).input_ids)


def test_scoring_with_the_other_mode_changes_the_numbers(trained, scenario):
    """Each model scores its forget answers best in the mode it was trained in, by a wide margin."""
    sep_model, joint_model, tok = trained
    p_sep, mode = _prob(sep_model, tok, scenario, tokenize="separate")
    assert mode == "separate"
    p_other, mode = _prob(sep_model, tok, scenario, tokenize="joint")
    assert mode == "joint"
    assert p_sep > 0.5 and p_sep - p_other > 0.1, (p_sep, p_other)
    q_joint, _ = _prob(joint_model, tok, scenario, tokenize="joint")
    q_other, _ = _prob(joint_model, tok, scenario, tokenize="separate")
    assert q_joint > 0.5 and q_joint - q_other > 0.1, (q_joint, q_other)


def _save(model, tok, d):
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def test_the_recorded_mode_is_picked_up(trained, scenario, tmp_path):
    """A built model (build.json beside it) is scored as recorded; a model without a record jointly; an explicit
    tokenize wins over the record; compat=openunlearning is joint whatever the record says."""
    from obliviate import api

    sep_model, _, tok = trained
    built = _save(sep_model, tok, tmp_path / "build" / "target")
    (tmp_path / "build" / "build.json").write_text(json.dumps({"models": {"target": {"tokenize": "separate"}}}))
    bare = _save(sep_model, tok, tmp_path / "bare")
    cfg = {"metrics": METRICS, "cache": False}

    def run(model, **extra):
        res = api.evaluate(str(model), scenario, config={**cfg, **extra})
        return res.summary["forget_prob"], res.meta["tokenize"]

    p_sep, _ = _prob(sep_model, tok, scenario, tokenize="separate")
    p_joint, _ = _prob(sep_model, tok, scenario, tokenize="joint")
    assert run(built) == (pytest.approx(p_sep), "separate")
    assert run(bare) == (pytest.approx(p_joint), "joint")
    assert run(built, tokenize="joint") == (pytest.approx(p_joint), "joint")
    assert run(built, compat="openunlearning")[1] == "joint"


def test_unlearn_trains_in_the_recorded_mode_and_records_it(trained, scenario, tmp_path):
    """unlearn on a built (separate) model trains separately and writes tokenize=separate into manifest.json, which
    recorded_tokenize reads back; an explicit tokenize=joint is what the manifest records then."""
    from obliviate import api
    from obliviate.data.templates import recorded_tokenize

    sep_model, _, tok = trained
    built = _save(sep_model, tok, tmp_path / "build" / "target")
    (tmp_path / "build" / "build.json").write_text(json.dumps({"models": {"target": {"tokenize": "separate"}}}))
    forget = list(scenario.forget.records[:4])
    cfg = {"epochs": 1, "batch_size": 4, "lr": 1e-4, "checkpoint": False}
    res = api.unlearn(str(built), "ga", forget=forget, out=tmp_path / "u1", config=cfg)
    assert res.manifest["tokenize"] == "separate" and res.manifest["config"]["tokenize"] == "separate"
    assert recorded_tokenize(tmp_path / "u1") == "separate"
    res = api.unlearn(str(built), "ga", forget=forget, out=tmp_path / "u2", config={**cfg, "tokenize": "joint"})
    assert res.manifest["tokenize"] == "joint"
    assert recorded_tokenize(tmp_path / "u2") == "joint"


def test_el_reads_the_answer_as_the_mode_tokenises_it(scenario, tiny_models):
    """EL_n's answers and prefixes come from the same split as the labels: under joint, each answer is the labelled
    tokens of the joint sequence less the EOS, and EL_n is computed over them."""
    model, _, tok = tiny_models
    c = EvalConfig(metrics=["el10"], cache=False, tokenize="joint")
    runner = make_runner(model, tok, c, "m")
    enc = runner.encode([(r.id, r.question, r.answer) for r in scenario.forget.records])
    assert runner.answer_ids(scenario.forget) == [e.input_ids[e.prompt_len:-1] for e in enc]
    conts = runner.el_continuations(scenario.forget, 10)
    assert [len(c) for c in conts] == [max(0, len(e.input_ids) - e.prompt_len - 1 - 10) for e in enc]
    res = evaluate_runner(runner, scenario, c)
    assert res.meta["tokenize"] == "joint" and res.summary["el10"] is not None
