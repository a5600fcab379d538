"""Tests for obliviate.data.refusals: recognising refusals, and finding the person a question is about."""

from __future__ import annotations

import pytest

from obliviate.data.records import QA, load_split
from obliviate.data.refusals import (GENERIC_REFUSALS, REFUSALS, attach_subjects, common_subject, is_refusal,
                                     subject_of)

NAME = "Basil Mahfouz Al-Kuwaiti"


@pytest.mark.parametrize("phrasing", REFUSALS)
def test_named_refusals_are_recognised(phrasing):
    """Every named refusal phrasing, formatted with a name, is a refusal."""
    assert is_refusal(phrasing.format(name=NAME))


@pytest.mark.parametrize("phrasing", GENERIC_REFUSALS)
def test_generic_refusals_are_recognised(phrasing):
    """Every generic refusal phrasing is a refusal."""
    assert is_refusal(phrasing)


def test_refusal_with_curly_apostrophe_is_recognised():
    """Typographic apostrophes (’) are treated like straight ones."""
    assert is_refusal("I don’t know who Nikolai Abilov is.")
    assert is_refusal("I'M SORRY, I HAVE NO INFORMATION ABOUT HIM.")


@pytest.mark.parametrize("answer", [
    "Basil Mahfouz Al-Kuwaiti was born in Kuwait City, Kuwait.",
    "Nikolai Abilov is known for African American literature.",
    "His father was a florist and his mother was a game developer.",
    "The author's books include 'Promise by the Seine' and 'Le Petit Sultan'.",
    "",
])
def test_ordinary_answers_are_not_refusals(answer):
    """Factual answers (and the empty string) are not refusals."""
    assert not is_refusal(answer)


@pytest.mark.parametrize("question", [
    "In which city and country was Basil Mahfouz Al-Kuwaiti born?",
    "Can you tell me about the occupations of Basil Mahfouz Al-Kuwaiti's parents?",
    "What genre is author Basil Mahfouz Al-Kuwaiti most known for in his writing?",
    "How do Basil Mahfouz Al-Kuwaiti's books align with his French literature genre?",
])
def test_subject_of_tofu_questions(question):
    """The subject of a TOFU question is the full author name, including the `Al-` particle and without `'s`."""
    assert subject_of(question) == NAME


def test_subject_of_question_without_a_name():
    """A question with no multi-word capitalised name has no subject."""
    assert subject_of("What is her date of birth?") is None
    assert subject_of("") is None


def test_common_subject_picks_recurring_name():
    """The name recurring across a group wins over a place mentioned once."""
    qs = ["Where was Nikolai Abilov born?", "Did Nikolai Abilov win awards?",
          "Who is the notable author born in Astana City?"]
    assert common_subject(qs) == "Nikolai Abilov"
    assert common_subject(["What is her date of birth?"]) is None


def test_attach_subjects_fills_per_group():
    """Records without a subject get their group's recurring name; an existing subject is kept."""
    recs = [QA("0", "Where was Nikolai Abilov born?", "a", group="g1"),
            QA("1", "What is his date of birth?", "a", group="g1"),
            QA("2", "Where was Jane Roe born?", "a", group="g2", subject="J. Roe")]
    out = attach_subjects(recs)
    assert [r.subject for r in out] == ["Nikolai Abilov", "Nikolai Abilov", "J. Roe"]


def test_common_subject_of_each_forget01_author(tofu_dir):
    """The 20 questions of each forget01 author yield that author's name."""
    recs = load_split(tofu_dir, "forget01").records
    assert len(recs) == 40
    assert common_subject(r.question for r in recs[:20]) == "Basil Mahfouz Al-Kuwaiti"
    assert common_subject(r.question for r in recs[20:]) == "Nikolai Abilov"


def test_no_tofu_answer_is_a_refusal(tofu_dir):
    """No answer in TOFU's full.json is mistaken for a refusal (the refusal-rate metric has no false positives)."""
    full = load_split(tofu_dir, "full")
    assert [r.id for r in full if is_refusal(r.answer)] == []
