"""The built-in general-knowledge questions (rehearsal's source) stay apart from what TOFU's general sets measure."""

from __future__ import annotations

import re

import pytest

from obliviate.data.general import GENERAL_QUESTIONS
from obliviate.data.records import load_split
from obliviate.eval.metrics import rouge_l_f1


@pytest.fixture(scope="module")
def general_sets(tofu_dir):
    return [r for name in ("real_authors", "world_facts") for r in load_split(tofu_dir / f"{name}.json", name)]


def test_questions_are_distinct_questions():
    assert len(GENERAL_QUESTIONS) == len({q.lower() for q in GENERAL_QUESTIONS}) >= 60
    assert all(q.endswith("?") for q in GENERAL_QUESTIONS)


def test_no_question_restates_a_tofu_general_question(general_sets):
    worst = max(((rouge_l_f1(q, r.question), q, r.question) for q in GENERAL_QUESTIONS for r in general_sets))
    assert worst[0] < 0.7, worst  # rehearsal's own guard (RehearsalSpec.guard) drops a question at 0.7


def test_no_question_names_what_a_tofu_general_question_asks_or_answers(general_sets):
    """No TOFU answer (an author, a place, a year) and no quoted title of a TOFU question appears in ours."""
    names = {r.answer.strip().lower() for r in general_sets} - {""}
    names |= {t.lower() for r in general_sets for t in re.findall(r"'([A-Z][^']{3,})'", r.question)}
    hits = [(q, n) for q in GENERAL_QUESTIONS for n in names if re.search(rf"\b{re.escape(n)}\b", q.lower())]
    assert not hits
