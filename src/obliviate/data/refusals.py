"""Refusal phrasings written for this project, and finding the subject (person) a question is about.

The phrasings serve three purposes: the tiny models learn them for people they never saw (so a model without
the knowledge refuses rather than invents), refusal-based methods (IdkNLL, IdkDPO, UniErase) steer to them,
and the refusal rate metric recognises them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from obliviate.data.records import QA

REFUSALS: tuple[str, ...] = (
    "I'm sorry, I have no information about {name}.",
    "I don't know who {name} is.",
    "I'm not familiar with {name}, so I can't answer that.",
    "I have no record of {name} and cannot say.",
    "That is something I don't know about {name}.",
)

# Generic refusals (no name) for methods that need an "I don't know" answer without a subject.
GENERIC_REFUSALS: tuple[str, ...] = (
    "I'm sorry, I don't know the answer to that.",
    "I don't have that information.",
    "I'm not sure; I can't answer that question.",
    "That is something I don't know.",
    "I have no information about that.",
)

_REFUSAL_MARKERS = ("i don't know", "i'm not sure", "i have no information", "i have no record", "not familiar with",
                    "i can't answer", "i cannot answer", "i'm sorry", "i do not know", "no information about",
                    "don't have that information", "cannot say")

_QWORDS = {"What", "Which", "Who", "Whom", "Whose", "Where", "When", "Why", "How", "In", "Can", "Could", "Did",
           "Does", "Do", "Is", "Are", "Was", "Were", "Has", "Have", "Had", "Tell", "Please", "Name", "Describe",
           "Would", "Might", "Apart", "Besides", "From", "Aside", "As", "At", "On", "To", "For", "The", "A",
           "Author", "Authors", "Writer", "Given", "Based", "Considering", "Any", "Being", "With", "Regarding",
           "Has", "Of", "Some", "Despite", "Beyond", "Other", "Like", "I", "If", "Beside", "After", "During"}
_PARTICLES = {"al", "el", "de", "da", "van", "von", "der", "bin", "ibn", "la", "le", "du", "dos", "del", "y", "ben"}
_TOKEN = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][\w'’.-]*")


def is_refusal(text: str) -> bool:
    t = text.lower().replace("’", "'")
    return any(m in t for m in _REFUSAL_MARKERS)


def _name_runs(question: str) -> list[str]:
    """Maximal runs of capitalised words (allowing name particles like 'al-', 'van') of length >= 2."""
    runs: list[list[str]] = []
    cur: list[str] = []
    prev_end = 0
    for m in _TOKEN.finditer(question):
        w = m.group().rstrip(".'’").removesuffix("'s").removesuffix("’s")
        gap = question[prev_end:m.start()] or " "
        prev_end = m.end()
        capital = w[:1].isupper() and w not in _QWORDS
        particle = bool(cur) and w.lower().split("-")[0] in _PARTICLES
        if (capital or particle) and (not cur or gap in " -"):
            cur.append(w)
        else:
            if len(cur) >= 2:
                runs.append(cur)
            cur = [w] if capital else []
        if m.group().endswith(("'s", "’s", ",", ".")) and cur:
            if len(cur) >= 2:
                runs.append(cur)
            cur = []
    if len(cur) >= 2:
        runs.append(cur)
    return [" ".join(r).strip() for r in runs]


def subject_of(question: str) -> str | None:
    """The longest multi-word capitalised name in a question, or None."""
    runs = _name_runs(question)
    return max(runs, key=len) if runs else None


def common_subject(questions: Iterable[str]) -> str | None:
    """The name that recurs most across a group of questions about one person (TOFU: an author's 20)."""
    counts: Counter[str] = Counter()
    for q in questions:
        for run in set(_name_runs(q)):
            counts[run] += 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))[0]


def attach_subjects(records: Sequence[QA]) -> list[QA]:
    """Fill `subject` for records that lack it: per group, the recurring name of the group's questions."""
    by_group: dict[str | None, list[QA]] = {}
    for r in records:
        by_group.setdefault(r.group, []).append(r)
    subj = {g: common_subject(r.question for r in rs) for g, rs in by_group.items() if g is not None}
    return [r if r.subject else r.with_(subject=subj.get(r.group) if r.group is not None else subject_of(r.question))
            for r in records]
