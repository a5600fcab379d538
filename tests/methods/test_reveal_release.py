"""Reveal-and-Release and forgetting by name (METHODS.md §4): the instruction pool, the bandits, the reveal scores,
the O-LoRA penalty, and end-to-end runs on the tiny Llama of conftest.py — above all, that the method never
trains on the forget data: only the target names reach it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import obliviate
from obliviate.data.instructions import (NEUTRAL_NAMES, Instruction, builtin_instructions, instruction_pool,
                                         load_instructions, near_copies, question_overlap)
from obliviate.data.records import QA
from obliviate.errors import ConfigError, DataError
from obliviate.methods.base import ProgressEvent
from obliviate.methods.reveal.bandit import UCB1, NeuralUCB
from obliviate.methods.reveal.release import orthogonality
from obliviate.methods.reveal.reveal import ArmResult, Candidate, dedup, marginal_vendi, weighted_harmonic
from obliviate.methods.reveal_release import recording_training_examples
from obliviate.runs.forget import forget_by_name

# Small and fast (the engine trains each round's LoRA module): the contract test's step size, two rounds at most,
# and the tiny-scale retain weight (obliviate.bench.presets.TINY).
FAST = {"epochs": 3, "batch_size": 4, "lr": 3e-3, "max_rounds": 2, "n_samples": 2, "retain_weight": 10.0}


# ---------------------------------------------------------------------------------------------- instruction pool


def _assert_no_near_copy(records) -> None:
    clash = near_copies(builtin_instructions(("person", "work", "topic")), records)
    assert not clash, f"pool templates restate benchmark questions: {clash[:3]}"


def test_near_copy_score_by_hand():
    """max(ROUGE-1 F1, ROUGE-L F1) on rouge-score's stemmed tokens, the name taken out of both texts."""
    assert question_overlap(["a", "b", "c"], ["c", "b", "a"]) == 1.0  # same words, any order: ROUGE-1
    assert question_overlap(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == pytest.approx(0.5)  # 2 of 4 each side
    assert question_overlap(["a", "b"], ["a", "b", "c", "d"]) == pytest.approx(2 * 2 / 6)
    assert question_overlap([], ["a"]) == 0.0
    recs = [QA(id="q", question="When and where was Ann Lee born?", answer="x", subject="Ann Lee")]
    hits = near_copies([Instruction("t.0", "person", "birth", "Where and when was {name} born?"),
                        Instruction("t.1", "person", "home", "Which town does {name} call home?")], recs)
    assert [(s, t) for s, t, _ in hits] == [(1.0, "Where and when was Ann Lee born?")]


def test_near_copy_score_matches_rouge_score():
    """The pool guard's own ROUGE-1 / ROUGE-L (pre-tokenised, for speed over thousands of pairs) agrees with
    rouge-score's scorer on real question pairs."""
    from rouge_score import rouge_scorer

    from obliviate.data.instructions import _tokens

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    pairs = [("Where and when was born?", "When and where was born?"),
             ("What genre is known for writing?", "Which genres did the author write in, and why?"),
             ("What awards has received for the novels?", "Has won any literary awards for writing?"),
             ("Which town does call home?", "In which city was born, and what did the parents do?")]
    for a, b in pairs:
        ref = scorer.score(b, a)
        want = max(ref["rouge1"].fmeasure, ref["rougeL"].fmeasure)
        assert question_overlap(_tokens(a), _tokens(b)) == pytest.approx(want), (a, b)


def test_pool_never_restates_a_benchmark_question(forget_records, retain_records, tofu_dir_or_none):
    """No rendered template restates (near_copies: ROUGE-1 or ROUGE-L F1 >= 0.7, names out) a question the benchmark
    models were trained or evaluated on, so a (prompt, answer) pair the method trains on is never a forget record
    in other words, even when the model answers with exactly the memorised text: the synthetic world (every person),
    the test model's records, and TOFU's forget10 and retain90 questions when the data is present."""
    from obliviate.data.synthetic import generate_world

    _assert_no_near_copy([q for qs in generate_world().qa.values() for q in qs])
    _assert_no_near_copy(forget_records + retain_records)
    if tofu_dir_or_none is None:
        return  # TOFU files absent: the synthetic and tiny checks above still ran
    scen = obliviate.load_scenario("tofu", data=str(tofu_dir_or_none), forget_split="forget10")
    _assert_no_near_copy(list(scen.forget.records) + list(scen.retain.records))


def test_neutral_names_are_unknown_to_the_synthetic_world():
    from obliviate.data.synthetic import generate_world

    known = {part for p in generate_world(n_people=40, n_refusal=40).people for part in p.name.split()}
    assert not known & {part for n in NEUTRAL_NAMES for part in n.split()}


def test_instruction_file_extends_the_pool(tmp_path):
    f = tmp_path / "extra.txt"
    f.write_text("# my templates\nWhat car does {name} drive?\n\nwork: Who illustrated {name}?\n"
                 '{"text": "Which school did {name} attend?", "facet": "school"}\n')
    extra = load_instructions(f)
    assert [(i.kind, i.facet, i.text) for i in extra] == [
        ("person", "user", "What car does {name} drive?"), ("work", "user", "Who illustrated {name}?"),
        ("person", "school", "Which school did {name} attend?")]
    pool = instruction_pool(["person"], f)
    assert len(pool) == len(builtin_instructions(["person"])) + 2  # the work template is not of the kind asked
    assert pool[-1].render("Ada Byron") == "Which school did Ada Byron attend?"


@pytest.mark.parametrize(("text", "needle"), [("What car does she drive?", "line 2: the template has no {name}"),
                                              ("Where did {name} meet {partner}?", "line 2: unknown placeholder")])
def test_instruction_file_errors_name_the_line(tmp_path, text, needle):
    f = tmp_path / "bad.txt"
    f.write_text(f"# header\n{text}\n")
    with pytest.raises(DataError, match=needle.replace("{", r"\{").replace("}", r"\}")):
        load_instructions(f)


# ---------------------------------------------------------------------------------------------- bandits and scores


def test_ucb1_pulls_every_arm_once_then_exploits():
    b = UCB1(4, c=0.1, seed=0)
    first = b.select(4)
    assert sorted(first) == [0, 1, 2, 3]
    for a in first:
        b.update(a, [0.1, 0.9, 0.2, 0.3][a])
    assert b.select(1) == [1]
    b.new_round()  # discount 1: nothing forgotten
    assert b.counts.sum() == 4


def test_ucb1_discount_forgets_old_rewards():
    b = UCB1(2, c=0.0, discount=0.5)
    b.update(0, 1.0)
    b.new_round()
    assert b.counts[0] == 0.5 and b.sums[0] == 0.5


def test_neural_ucb_learns_which_features_pay():
    """Reward = first feature; after a few observations the network (ν = 0: no exploration) ranks the arm with
    the largest first feature first."""
    x = np.array([[0.1, 1.0], [0.9, 0.0], [0.5, 0.5], [0.2, 0.3]], dtype=np.float32)
    b = NeuralUCB(x, hidden=16, nu=0.0, steps=300, lr=3e-2, seed=0)
    for a in range(4):
        b.update(a, float(x[a, 0]))
    b.fit()
    assert b.select(1) == [1]


def test_agreement_rouge_l_f1_by_hand():
    """The agreement score is the evaluation's ROUGE-L (rouge-score, stemmed), as F1."""
    from obliviate.eval.metrics import rouge_l_f1

    # "born in lisbon" vs "she was born in lisbon portugal": LCS 3, P = 3/3, R = 3/6 -> F1 = 2·1·0.5/1.5 = 2/3
    assert rouge_l_f1("Born in Lisbon.", "She was born in Lisbon, Portugal") == pytest.approx(2 / 3)
    assert rouge_l_f1("She was born in Lisbon, Portugal", "Born in Lisbon.") == pytest.approx(2 / 3)
    # stemming: writes/wrote differ, novels/novel and dragons/dragon match; LCS "she novel about dragon" = 4 of
    # 5 and 7 words -> F1 = 2·(4/5)(4/7)/(4/5 + 4/7) = 2/3
    assert rouge_l_f1("She writes novels about dragons.", "She wrote a novel about a dragon.") == pytest.approx(2 / 3)
    assert rouge_l_f1("", "x") == 0.0


def test_weighted_harmonic_by_hand():
    # 1 / (0.5/0.5 + 0.5/1.0) = 1 / 1.5
    assert weighted_harmonic(0.5, 1.0, 0.5) == pytest.approx(1 / 1.5)
    assert weighted_harmonic(0.0, 1.0, 0.5) == 0.0


def test_marginal_vendi_credits_only_the_first_of_two_identical_arms():
    """Two arms revealing the same text: the more relevant gets Vendi({x})/1 = 1, the other gains nothing; an arm
    with an unrelated answer adds (Vendi of 2 orthogonal items = 2) − 1 = 1."""
    a = ArmResult(0, relevance=0.9, greedy=["born in lisbon portugal"])
    b = ArmResult(1, relevance=0.5, greedy=["born in lisbon portugal"])
    c = ArmResult(2, relevance=0.7, greedy=["writes epic fantasy novels"])
    marginal_vendi([a, b, c], "tfidf")
    assert a.diversity == pytest.approx(1.0)
    assert c.diversity == pytest.approx(1.0, abs=1e-6)
    assert b.diversity == pytest.approx(0.0, abs=1e-6)


def test_dedup_keeps_each_prompt_pairing_and_caps_fairly():
    c = [Candidate("A", 0, "q1 A", "Born in Lisbon.", 0.9, True),
         Candidate("A", 0, "q1 A", "born in lisbon", 0.5, False),
         Candidate("A", 1, "q2 A", "Born in Lisbon.", 0.8, True), Candidate("A", 2, "q3 A", "A poet.", 0.7, True),
         Candidate("B", 0, "q1 B", "Born in Graz.", 0.2, True)]
    out = dedup(c, 1.0, "tfidf")
    assert [(x.prompt, x.confidence) for x in out] == [("q1 A", 0.9), ("q2 A", 0.8), ("q3 A", 0.7), ("q1 B", 0.2)]
    capped = dedup(c, 1.0, "tfidf", cap=2)
    assert {x.target for x in capped} == {"A", "B"}  # the targets take turns: B is not starved


def test_orthogonality_penalty_by_hand():
    """A_prev = [1 0 0]; A_new rows e1, e2 -> A_prev·A_newᵀ = [1 0], ‖·‖² = 1; two earlier modules: 1 + 4."""
    new = {"m": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])}
    assert float(orthogonality(new, {"m": [torch.tensor([[1.0, 0.0, 0.0]])]})) == pytest.approx(1.0)
    prev = {"m": [torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])]}
    assert float(orthogonality(new, prev)) == pytest.approx(5.0)
    assert float(orthogonality(new, {"m": [torch.tensor([[0.0, 0.0, 3.0]])]})) == 0.0


def test_probe_is_held_out_of_the_retain_term_when_the_set_is_large_enough():
    from obliviate.methods.reveal.data import split_probe

    recs = [QA(f"r{i}", f"q{i}", f"a{i}") for i in range(10)]
    probe, train, held = split_probe(recs, 4, seed=0)
    assert held and len(probe) == 4 and len(train) == 6 and not {r.id for r in probe} & {r.id for r in train}
    probe, train, held = split_probe(recs, 6, seed=0)  # fewer than 2 × 6: shared
    assert not held and probe == recs[:6] and train == recs


def test_config_errors_list_every_problem():
    from obliviate.runs.unlearn import resolve_method

    with pytest.raises(ConfigError, match=r"retain=term.*keep_arms=9 exceeds pulls_per_round=4"):
        resolve_method("reveal_release", {"loss": "graddiff", "retain": "none", "keep_arms": 9, "pulls_per_round": 4})


# ---------------------------------------------------------------------------------------------- end to end


def _canary(records: list[QA]) -> list[QA]:
    """The forget records with every answer replaced by a string no model can produce unprompted."""
    return [r.with_(answer=f"zqx canary {k} xqz") for k, r in enumerate(records)]


def test_trains_only_on_self_generated_data_and_forgets(tiny_model_dir, forget_records, retain_records, base_nll,
                                                        helpers, tmp_path):
    """Through `unlearn()`: every example a module trained on is absent from the forget file (no question of it,
    no (question, answer) pair of it), the canary answers planted in the records handed to the method never show
    up (only the names are read), and yet the real forget answers' NLL rises by more than the retain answers'.
    The per-round log holds scores and counts but no revealed text; progress arrives as one "round" event per
    round, after that round's modules' "step" events (marked with the round)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    events: list[ProgressEvent] = []
    with recording_training_examples() as seen:
        obliviate.unlearn(str(tiny_model_dir), "reveal_release", forget=_canary(forget_records),
                          retain=retain_records, out=out, config=FAST, progress=events.append)
    forget_pairs = {(r.question, r.answer) for r in forget_records}
    forget_questions = {r.question for r in forget_records}
    trained = [r for role, r in seen if role == "forget"]
    assert trained, "no self-generated forget example was trained on"
    assert all((r.question, r.answer) not in forget_pairs and r.question not in forget_questions for _, r in seen)
    assert not any("canary" in r.answer or "canary" in r.question for _, r in seen)
    assert {r.subject for r in trained} <= {r.subject for r in forget_records}

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    d_forget = helpers.mean_answer_nll(model, tok, forget_records) - base_nll["forget"]
    d_retain = helpers.mean_answer_nll(model, tok, retain_records) - base_nll["retain"]
    assert d_forget > 1.0 and d_forget > d_retain, (d_forget, d_retain)

    log = json.loads((out / "reveal_release.json").read_text())
    assert log["n_targets"] == 2 and "targets" not in log and log["rounds_released"] >= 1  # names: --keep-revealed
    for row in log["rounds"]:
        assert {"round", "reward", "n_revealed", "probe_nll"} <= set(row)
        assert all(math.isfinite(row[k]) for k in ("reward", "probe_nll"))
    assert not (out / "revealed.json").exists()
    rounds = [e for e in events if e.kind == "round"]
    assert [(e.round, e.rounds, e.reward, e.n_revealed) for e in rounds] == [
        (r["round"], FAST["max_rounds"], r["reward"], r["n_revealed"]) for r in log["rounds"]]
    assert all(e.released == bool(r.get("released")) for e, r in zip(rounds, log["rounds"], strict=True))
    steps = [e for e in events if e.kind == "step"]
    assert steps and {e.round for e in steps} <= {e.round for e in rounds}
    texts = " ".join(p.read_text() for p in out.glob("*.json"))
    assert not any(fact in texts for fact in ("Tollin Bay", "Dunmarrow", "glassblower", "clockmaker"))
    assert not any(name in texts for name in ("Marla Quenby", "Osric Vantreel"))  # the ledger holds salted hashes


def test_other_options_run(tiny_model_dir, forget_records, helpers, base_nll, tmp_path):
    """NeuralUCB, the GA loss, a separate retain module on self-generated neutral data (no retain set given), and
    keeping a round that overshoots the utility probe (GA at this step size collapses the tiny model; the default
    `on_utility_stop=revert` would drop the module)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    cfg = {**FAST, "max_rounds": 1, "bandit": "neural", "loss": "ga", "retain": "module", "retain_epochs": 1,
           "warm_start": False, "pulls_per_round": 12, "keep_arms": 12, "on_utility_stop": "keep"}
    with recording_training_examples() as seen:
        obliviate.unlearn(str(tiny_model_dir), "reveal_release", forget=forget_records, out=out, config=cfg)
    retained = [r for role, r in seen if role == "retain"]
    assert retained and all(r.id.startswith("neutral:") for r in retained)
    log = json.loads((out / "reveal_release.json").read_text())
    assert log["retain_source"] == "self" and log["probe"]["source"] == "self"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert helpers.mean_answer_nll(model, AutoTokenizer.from_pretrained(out), forget_records) > base_nll["forget"] + 0.1


def test_forget_by_name_keeps_revealed_text_only_when_asked(tiny_model_dir, tmp_path):
    cfg = {**FAST, "max_rounds": 1, "warm_start": False, "pulls_per_round": 8, "keep_arms": 8, "n_samples": 1}
    plain = forget_by_name(str(tiny_model_dir), ["Marla Quenby"], tmp_path / "plain", config=cfg)
    assert (plain.out / "model.safetensors").is_file() and (plain.out / "reveal_release.json").is_file()
    assert plain.manifest["method"] == "reveal_release" and plain.manifest["config"]["keep_revealed"] is False
    assert not (plain.out / "revealed.json").exists()

    kept = forget_by_name(str(tiny_model_dir), ["Marla Quenby"], tmp_path / "kept", config=cfg, keep_revealed=True)
    revealed = json.loads((kept.out / "revealed.json").read_text())
    assert revealed and all(r["target"] == "Marla Quenby" and "Marla Quenby" in r["prompt"] for r in revealed)


def test_a_round_over_the_utility_budget_is_dropped(tiny_model_dir, helpers, tmp_path):
    """With a budget no module can meet, every shrunken scale fails the probe: the round is dropped, the rounds
    stop after it, and no weight changes — so no model is written (NothingToForget, saying the utility budget
    stopped it) and the attempt is recorded in the ledger alone. (No retain term: it would train toward the
    probe.)"""
    from obliviate.errors import NothingToForget
    from obliviate.runs import ledger

    cfg = {**FAST, "max_rounds": 2, "warm_start": False, "pulls_per_round": 6, "keep_arms": 6, "n_samples": 1,
           "min_reward": 0.0, "max_probe_increase": 1e-9, "retain": "none"}
    events = []
    with pytest.raises(NothingToForget, match="utility budget"):
        forget_by_name(str(tiny_model_dir), ["Marla Quenby"], tmp_path / "o", config=cfg, progress=events.append)
    rounds = [e for e in events if e.kind == "round"]
    assert len(rounds) == 1 and rounds[0].released is False and rounds[0].n_revealed > 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ledger.jsonl"]
    (rec,) = ledger.read(tmp_path / "o")
    assert rec["outcome"] == "nothing_changed" and rec["output_model"] is None


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"targets": ["Marla Quenby"], "method": "npo"}, "trains on the forget data itself"),
    ({"targets": ["", "Marla Quenby"]}, "non-empty target names"),
    ({"targets": []}, "non-empty target names"),
])
def test_forget_by_name_user_errors(tiny_model_dir, tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        forget_by_name(str(tiny_model_dir), out=tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()
