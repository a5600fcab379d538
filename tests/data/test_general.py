"""The built-in general-knowledge questions (rehearsal's source) stay apart from what TOFU's general sets measure."""

from __future__ import annotations

import re

import pytest

from obliviate.data.general import _WIDE, GENERAL_FACTS, GENERAL_QUESTIONS, GENERAL_WIDE, states
from obliviate.data.records import load_split
from obliviate.eval.metrics import rouge_l_f1


# the checks marked SOURCES run on both lists: GENERAL_FACTS (`general`, `known`) and GENERAL_WIDE (`wide`)
SOURCES = pytest.mark.parametrize("facts", [GENERAL_FACTS, GENERAL_WIDE], ids=["facts", "wide"])


@pytest.fixture(scope="module")
def general_sets(tofu_dir):
    return [r for name in ("real_authors", "world_facts") for r in load_split(tofu_dir / f"{name}.json", name)]


def test_questions_are_distinct_questions():
    assert len(GENERAL_QUESTIONS) == len({q.lower() for q in GENERAL_QUESTIONS}) == 79  # the measured `general` list
    assert list(GENERAL_FACTS)[:79] == list(GENERAL_QUESTIONS)
    assert len(GENERAL_FACTS) == len({q.lower() for q in GENERAL_FACTS}) >= 250
    assert all(q.endswith("?") and refs and all(refs) for q, refs in GENERAL_FACTS.items())


def test_wide_extends_the_facts():
    assert list(GENERAL_WIDE)[: len(GENERAL_FACTS)] == list(GENERAL_FACTS)
    assert len(GENERAL_WIDE) == len(GENERAL_FACTS) + len(_WIDE) >= 550  # no _WIDE question repeats an earlier one


@SOURCES
def test_every_question_is_a_distinct_question_with_references(facts):
    assert len(facts) == len({q.lower() for q in facts})
    assert all(q.endswith("?") and refs and all(refs) for q, refs in facts.items())


@SOURCES
def test_no_question_restates_a_tofu_general_question(general_sets, facts):
    worst = max(((rouge_l_f1(q, r.question), q, r.question) for q in facts for r in general_sets))
    assert worst[0] < 0.7, worst  # rehearsal's own guard (RehearsalSpec.guard) drops a question at 0.7


@SOURCES
def test_no_question_names_what_a_tofu_general_question_asks_or_answers(general_sets, facts):
    """No TOFU answer (an author, a place, a year) and no quoted title of a TOFU question appears in our questions or
    their reference answers (rehearsal keeps the base's answers that state those)."""
    names = {r.answer.strip().lower() for r in general_sets} - {""}
    names |= {t.lower() for r in general_sets for t in re.findall(r"'([A-Z][^']{3,})'", r.question)}
    texts = [*facts, *(r for refs in facts.values() for r in refs)]
    hits = [(t, n) for t in texts for n in names if re.search(rf"\b{re.escape(n)}\b", t.lower())]
    assert not hits


@pytest.mark.parametrize(("answer", "refs", "expected"), [
    ("The Tin Drum was written by Günter Grass.", ("Gunter Grass",), True),  # accents aside
    ("It is by H.G. Wells.", ("H. G. Wells",), True),  # punctuation and spacing aside
    ("Wellsley wrote it.", ("Wells",), False),  # whole words only
    ("The capital is Nairobi", ("Nairobi",), True),
    ("I don't know.", ("Nairobi",), False),
])
def test_states_matches_whole_names(answer, refs, expected):
    assert states(answer, refs) is expected
