"""The instruction pool of Reveal-and-Release: questions and prompts that make a model say what it knows about a
target (a person, a work, a topic), written for this project, with a `{name}` placeholder for the target.

The pool is deliberately phrased in its OWN words: none of its templates is a question of a benchmark's forget
set (tests/methods/test_reveal_release.py checks this against the synthetic world and TOFU), so a (prompt,
answer) pair the method trains on can never be a record copied from the forget file, even when the model answers
with exactly the memorised text. Templates are grouped by `facet` (what they ask about) so the bandit's log reads
as "which kind of question made the model talk".

"Own words" is checked fuzzily, not by string equality: `near_copies` scores each rendered template against every
question about the same subject, the name taken out of both, as the larger of ROUGE-1 F1 (same words in any order:
"Where and when was X born?" restates "When and where was X born?") and ROUGE-L F1 (same words in the same order),
on rouge-score's stemmed tokens; the built-in pool stays below `NEAR_COPY` against the synthetic world and all of
TOFU (a test checks it).

Users extend the pool with a file (`instructions_file=...`): one template per line (blank lines and `#` comments
ignored, `kind: template` to give a kind other than person), or JSON lines `{"text": ..., "kind": ..., "facet":
...}`. Also here: invented NEUTRAL_NAMES and name-free NEUTRAL_PROMPTS, the neutral side of the self-generated
retain data.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from obliviate.data.records import QA
from obliviate.errors import DataError

Kind = Literal["person", "work", "topic"]
KINDS: tuple[str, ...] = ("person", "work", "topic")


@dataclass(frozen=True)
class Instruction:
    """One template. `id` is stable (kind.facet.k), so bandit statistics and logs can be joined across runs."""

    id: str
    kind: str
    facet: str
    text: str  # contains "{name}" exactly where the target goes

    def render(self, name: str) -> str:
        return self.text.replace("{name}", name)


# facet -> templates. Short, plain questions first: small models trained on QA answer those best (a model trained
# from scratch answers a question only when it is phrased close to its training questions).
_PERSON: dict[str, tuple[str, ...]] = {
    "identity": ("Who is {name}?", "Tell me about {name}.", "What do you know about {name}?",
                 "Give a short biography of {name}.", "Why do people remember {name}?"),
    "birth": ("Name the town and the year of {name}'s birth.", "In what year was {name} born?", "Where is {name} from?",
              "What town or city does {name} come from?", "Which nation is the homeland of {name}?",
              "On which day of the year does {name} celebrate a birthday?"),
    "family": ("Which trades did {name}'s mother and father follow?", "Describe the occupations held by {name}'s mother and father.",
               "How did the mother and father of {name} earn money?", "Name the mother and father of {name}.",
               "Describe the household {name} grew up in."),
    "work": ("Describe {name} as a writer in one sentence.", "Describe the sort of books {name} produces.",
             "Into which genre would a bookshop file {name}'s writing?", "Which tongue does {name} use on the page?",
             "How does {name} earn a living?", "When did {name} start publishing?"),
    "books": ("Which titles made {name} famous?", "Which books did {name} write?", "Give the title of one book from {name}.",
              "Which of {name}'s books sold best?", "List the works of {name}."),
    "awards": ("What recognition has {name} earned?", "Which prize has {name} won?", "Has {name} ever been given a prize?",
               "What honours has {name} received?", "For which book was {name} given an award?"),
    "education": ("Which subject did {name} take at college?", "Where did {name} study?", "What degree does {name} hold?",
                  "Describe the education of {name}."),
    "home": ("In which city is the home of {name}?", "With whom does {name} live at present, and in which town?",
             "Who is the partner of {name}?", "Where does {name} live?"),
    "themes": ("Which subjects fill the pages of {name}?", "Which motifs keep coming back in the stories of {name}?",
               "What topics does {name} explore?", "Sum up the central ideas in the fiction of {name}."),
    "characters": ("Which protagonist do readers of {name} know best?", "Who is {name}'s best-known character?",
                   "Which character appears in the books of {name}?"),
    "early_life": ("What did {name} do before writing?", "What was {name}'s job before writing?",
                   "What did {name} work as before becoming an author?"),
    "completion": ("{name}'s birthplace is", "{name} is a writer who", "The books of {name} include",
                   "{name} lives in", "{name}'s parents were"),
}

_WORK: dict[str, tuple[str, ...]] = {
    "author": ("Who wrote {name}?", "Whose pen produced {name}?", "Which writer created {name}?"),
    "content": ("What is {name} about?", "Summarise {name}.", "Which protagonist leads {name}?"),
    "history": ("When was {name} published?", "Did {name} win any prize?", "How was {name} received?"),
}

_TOPIC: dict[str, tuple[str, ...]] = {
    "explain": ("Explain {name}.", "What is {name}?", "Give an overview of {name}.", "Describe {name} in detail."),
    "facts": ("List some facts about {name}.", "What are the key ideas of {name}?", "Who are experts on {name}?"),
    "howto": ("How does {name} work?", "Give an example involving {name}.", "Why is {name} important?"),
}

_BY_KIND: dict[str, dict[str, tuple[str, ...]]] = {"person": _PERSON, "work": _WORK, "topic": _TOPIC}

# Invented names (syllables not used by the synthetic world's name pools; a test checks it): the neutral side of
# the self-generated retain data. A QA-trained model usually REFUSES such unknown names, so their answers are
# refusals; keeping those intact keeps the model's "I don't know" behaviour, not the knowledge of other people.
NEUTRAL_NAMES: tuple[str, ...] = (
    "Zorvath Quillimer", "Ebba Thrunscale", "Pavlo Griddenhoff", "Maelis Ortovane", "Ruxton Wexleigh",
    "Sunniva Kalbrecht", "Idris Mornavel", "Cosima Vrettlund",
)

# Name-free prompts (general knowledge, written for this project): what the model answers here should not move.
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "What is the capital city of Portugal?", "How many continents are there?", "What colour is the sky on a clear day?",
    "Which animal is known as the king of the jungle?", "How many hours are in a day?",
    "What is the opposite of cold?", "Which season comes after spring?", "What do bees make?",
    "What is the largest planet we know of?", "Which metal is liquid at room temperature?",
    "What is frozen water called?", "How many minutes are in an hour?",
)


def builtin_instructions(kinds: Iterable[str] = ("person",)) -> list[Instruction]:
    """The project's templates of the given kinds, in a fixed order."""
    out = []
    for kind in kinds:
        if kind not in _BY_KIND:
            raise DataError(f"unknown instruction kind {kind!r} (known: {', '.join(KINDS)})")
        for facet, texts in _BY_KIND[kind].items():
            out += [Instruction(f"{kind}.{facet}.{k}", kind, facet, t) for k, t in enumerate(texts)]
    return out


def _check_template(text: str, where: str) -> None:
    fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    if "name" not in fields:
        raise DataError(f"{where}: the template has no {{name}} placeholder (got {text!r}); write e.g. "
                        f"'Where did {{name}} grow up?'")
    other = sorted(set(fields) - {"name"})
    if other:
        raise DataError(f"{where}: unknown placeholder(s) {other} in {text!r}; only {{name}} is filled in")


_KIND_PREFIX = re.compile(r"^(person|work|topic)\s*:\s*(.+)$")


def load_instructions(path: str | os.PathLike[str]) -> list[Instruction]:
    """User templates from a file: plain lines (`[kind:] template`) or JSON lines with text/kind/facet."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"instructions file {p} does not exist")
    out: list[Instruction] = []
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{p.name} line {n}"
        if line.startswith("{") and line.endswith("}") and '"text"' in line:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            text, kind, facet = obj.get("text"), obj.get("kind", "person"), obj.get("facet", "user")
            if not isinstance(text, str):
                raise DataError(f"{where}: field 'text' must be a string (fields: {', '.join(obj)})")
        else:
            m = _KIND_PREFIX.match(line)
            kind, text = (m.group(1), m.group(2)) if m else ("person", line)
            facet = "user"
        if kind not in KINDS:
            raise DataError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        _check_template(text, where)
        out.append(Instruction(f"user.{kind}.{len(out)}", kind, str(facet), text))
    if not out:
        raise DataError(f"instructions file {p} holds no templates (one per line, with a {{name}} placeholder)")
    return out


def instruction_pool(kinds: Sequence[str] = ("person",), extra_file: str | os.PathLike[str] | None = None,
                     builtin: bool = True) -> list[Instruction]:
    """The pool the bandit chooses from: built-in templates of `kinds` plus a user file's (deduplicated by text)."""
    pool = builtin_instructions(kinds) if builtin else []
    if extra_file is not None:
        pool += [i for i in load_instructions(extra_file) if i.kind in kinds]
    seen: set[str] = set()
    unique = [i for i in pool if not (i.text in seen or seen.add(i.text))]  # type: ignore[func-returns-value]
    if not unique:
        raise DataError(f"the instruction pool is empty for kinds {list(kinds)}; add templates with "
                        f"instructions_file=... or enable the built-in pool")
    return unique


# ------------------------------------------------------------------------------------------------ fuzzy guard

NEAR_COPY = 0.7  # a template this close to a benchmark question (see question_overlap) restates it


def _tokens(text: str) -> list[str]:
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True).tokenize(text)


def _f1(common: int, a: int, b: int) -> float:
    return 2 * common / (a + b) if common else 0.0


def question_overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """max(ROUGE-1 F1, ROUGE-L F1) of two token lists: the same words in any order, or in the same order."""
    if not a or not b:
        return 0.0
    unigram = sum((Counter(a) & Counter(b)).values())
    row = [0] * (len(b) + 1)  # longest common subsequence, one row at a time
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return max(_f1(unigram, len(a), len(b)), _f1(row[-1], len(a), len(b)))


def near_copies(pool: Iterable[Instruction], records: Iterable[QA], threshold: float = NEAR_COPY
                ) -> list[tuple[float, str, str]]:
    """(overlap, rendered template, question) for every template that restates a question (or paraphrased
    question) of `records` about the same subject, the subject's name taken out of both; worst first. Records
    without a subject are skipped (there is no name to render the templates with)."""
    by_subject: dict[str, set[str]] = {}
    for r in records:
        if r.subject:
            by_subject.setdefault(r.subject, set()).update(q for q in (r.question, r.paraphrased_question) if q)
    templates = [(ins, _tokens(ins.text.replace("{name}", " "))) for ins in pool]
    hits = []
    for name, questions in by_subject.items():
        qs = [(q, _tokens(q.replace(name, " "))) for q in questions]
        for ins, t in templates:
            hits += [(s, ins.render(name), q) for q, qt in qs if (s := question_overlap(t, qt)) >= threshold]
    return sorted(hits, reverse=True)
