"""The synthetic world: shape, unique names, value-heavy answers, perturbations, refusals, general knowledge."""

from __future__ import annotations

import functools
import random
import re
import statistics
import string
from itertools import chain

import pytest
from rouge_score import rouge_scorer

from obliviate.data import synthetic
from obliviate.data.records import QA
from obliviate.data.refusals import is_refusal, subject_of
from obliviate.data.synthetic import SyntheticWorld, generate_world
from obliviate.errors import ConfigError

PRONOUN_FIELDS = {"he", "his"}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return generate_world()


@pytest.fixture(scope="module")
def big_world() -> SyntheticWorld:
    return generate_world(seed=3, n_people=200)


def all_qa(w: SyntheticWorld) -> list[QA]:
    return [*chain.from_iterable(w.qa.values()), *chain.from_iterable(w.general.values()), *w.refusal_qa]


def template_pattern(template: str) -> re.Pattern[str]:
    """Regex matching any rendering of an answer template; a repeated field gets its own group ("his__1")."""
    parts: list[str] = []
    seen: dict[str, int] = {}
    for i, (literal, field, _spec, _conv) in enumerate(string.Formatter().parse(template)):
        if i == 0 and literal:  # the first character is capitalised when rendered
            parts.append(f"[{re.escape(literal[0].upper())}{re.escape(literal[0].lower())}]{re.escape(literal[1:])}")
        else:
            parts.append(re.escape(literal))
        if field is not None:
            name = field if field not in seen else f"{field}__{seen[field]}"
            seen[field] = seen.get(field, 0) + 1
            parts.append(f"(?P<{name}>.+?)")
    return re.compile("".join(parts))


def groups(pattern: re.Pattern[str], text: str) -> dict[str, str]:
    m = pattern.fullmatch(text)
    assert m, f"{text!r} does not fit the frame {pattern.pattern!r}"
    return {k.split("__")[0]: v for k, v in m.groupdict().items()}


# ------------------------------------------------------------------------------------------------- shape


def test_default_shape(world: SyntheticWorld) -> None:
    assert [p.id for p in world.people] == [f"p{i:02d}" for i in range(40)] + [f"h{i:02d}" for i in range(4)]
    assert world.forget_ids == ("p36", "p37", "p38", "p39")  # the last people, like TOFU's last authors
    assert world.retain_ids == tuple(f"p{i:02d}" for i in range(36))
    assert world.holdout_ids == ("h00", "h01", "h02", "h03")
    assert set(world.qa) == {p.id for p in world.people}
    for p in world.people:
        recs = world.qa[p.id]
        assert len(recs) == len(synthetic.ATTRIBUTE_KEYS) == 10
        assert [r.id for r in recs] == [f"{p.id}.{k}" for k in synthetic.ATTRIBUTE_KEYS]
        assert all(r.subject == p.name and r.group == p.id for r in recs)
        assert all(p.name in r.question and p.name in (r.paraphrased_question or "") for r in recs)
        assert all(r.question != r.paraphrased_question for r in recs)
        assert p.pronoun in ("he", "she")
    assert len(world.qa_for(world.forget_ids)) == 40
    assert world.person("p03").id == "p03"


def test_forget_count_rule() -> None:
    assert len(generate_world(n_people=10, forget_fraction=0.05).forget_ids) == 1  # max(1, round(0.5)) = 1
    w = generate_world(n_people=20, forget_fraction=0.25, n_holdout=0, n_refusal=0)
    assert w.forget_ids == tuple(f"p{i:02d}" for i in range(15, 20)) and w.holdout_ids == () and w.refusal_qa == ()


@pytest.mark.parametrize("kwargs", [
    {"n_people": 1}, {"n_people": 0}, {"forget_fraction": 0.0}, {"forget_fraction": 1.0}, {"forget_fraction": -0.2},
    {"forget_fraction": 1.5}, {"n_people": 2, "forget_fraction": 0.9}, {"n_holdout": -1}, {"n_refusal": -3},
    {"n_people": 400}, {"n_people": 3.5}, {"seed": "0"}, {"forget_fraction": "0.1"},
])
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="synthetic world"):
        generate_world(**kwargs)


def test_large_world_works(big_world: SyntheticWorld) -> None:
    assert len(big_world.people) == 204 and big_world.people[-1].id == "h003"
    assert len(big_world.forget_ids) == 20 and big_world.forget_ids[-1] == "p199"


# ------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("which", ["world", "big_world"])
def test_names_unique_and_pronounceable(which: str, request: pytest.FixtureRequest) -> None:
    w: SyntheticWorld = request.getfixturevalue(which)
    names = [p.name for p in w.people] + [r.subject for r in w.refusal_qa]
    assert len(names) == len(w.people) + len(w.refusal_qa)
    firsts = [n.split(" ")[0] for n in names]
    lasts = [n.split(" ")[1] for n in names]
    assert all(len(n.split(" ")) == 2 for n in names)
    assert len(set(firsts)) == len(firsts), "a first name is shared"
    assert len(set(lasts)) == len(lasts), "a last name is shared"
    assert not set(firsts) & set(lasts)
    for p in w.people:
        assert p.name == f"{p.first_name} {p.last_name}"
    for n in firsts + lasts:
        assert re.fullmatch(r"[A-Z][a-z]{2,9}", n) and re.search(r"[aeiouy]", n[1:]), n
        assert not re.search(r"(.)\1\1", n.lower()), n  # no triple letters


def test_name_pools_are_large_enough() -> None:
    assert len(synthetic.FIRST_NAMES) >= 244 and len(synthetic.LAST_NAMES) >= 244  # 200 + 4 holdout + 40 refusal
    assert not set(synthetic.FIRST_NAMES) & set(synthetic.LAST_NAMES)


def test_answers_never_name_a_person(world: SyntheticWorld) -> None:
    """No answer contains a person's name (as a token sequence), nor any person's first or last name alone."""
    full = {tuple(p.name.lower().split()) for p in world.people}
    parts = {x.lower() for p in world.people for x in (p.first_name, p.last_name)}
    for r in all_qa(world):
        for text in (r.answer, r.paraphrased_answer or "", *r.perturbed_answers):
            toks = re.findall(r"[a-z0-9]+", text.lower())
            bigrams = set(zip(toks, toks[1:]))
            assert not bigrams & full, (r.id, text)
            if r.group != "refusal":
                assert not set(toks) & parts, (r.id, text)


def test_no_newlines_anywhere(world: SyntheticWorld) -> None:
    for r in all_qa(world):
        texts = (r.question, r.answer, r.paraphrased_answer, r.paraphrased_question, *r.perturbed_answers)
        for text in (t for t in texts if t is not None):
            assert "\n" not in text and "\r" not in text and text == text.strip() and text, r.id


def test_subject_is_found_in_questions(world: SyntheticWorld) -> None:
    for r in [*chain.from_iterable(world.qa.values()), *world.refusal_qa]:
        assert subject_of(r.question) == r.subject
        assert subject_of(r.paraphrased_question or "") == r.subject


# ------------------------------------------------------------------------------------------------- answers


def test_wrong_person_in_right_frame_scores_low(world: SyntheticWorld) -> None:
    """The answer frame carries little: another person's answer (with the name swapped in) recalls <= 0.45."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    tokens = functools.lru_cache(maxsize=None)(scorer._tokenizer.tokenize)  # what scorer.score does, cached

    def recall(ref: str, pred: str) -> float:
        return rouge_scorer._score_lcs(tokens(ref), tokens(pred)).recall

    a, b = world.qa["p00"][0].answer, world.qa["p01"][0].answer
    assert recall(a, b) == scorer.score(a, b)["rougeL"].recall
    means = {}
    for i, key in enumerate(synthetic.ATTRIBUTE_KEYS):
        scores = [recall(world.qa[a.id][i].answer, world.qa[b.id][i].answer.replace(b.name, a.name))
                  for a in world.people for b in world.people if a.id != b.id]
        means[key] = statistics.mean(scores)
    assert all(m <= 0.45 for m in means.values()), means


def test_compact_training_text(world: SyntheticWorld) -> None:
    trained = world.qa_for(world.retain_ids + world.forget_ids)
    assert len(trained) == 400
    words = [len(r.answer.split()) for r in trained]
    assert statistics.mean(words) <= 20 and max(words) <= 20 and min(words) >= 5


def test_answers_state_the_person_attributes(world: SyntheticWorld) -> None:
    p = world.people[0]
    qa = {r.id.split(".")[1]: r for r in world.qa[p.id]}
    assert str(p.birth_year) in qa["birth"].answer and p.birth_city in qa["birth"].answer
    assert p.book_titles[0] in qa["books"].answer and p.book_titles[1] in qa["books"].answer
    assert p.award in qa["award"].answer and p.partner in qa["home"].answer
    assert all(t in qa["themes"].answer for t in p.themes)


def test_paraphrase_and_perturbed_frames(world: SyntheticWorld) -> None:
    """Answer and paraphrase state the same values; perturbed answers are the paraphrase frame with every value
    wrong, five distinct ones."""
    attrs = {a.key: a for a in synthetic._ATTRIBUTES}
    for person in world.people:
        for r in world.qa[person.id]:
            attr = attrs[r.id.split(".")[1]]
            answer_fields = {f for _, f, _, _ in string.Formatter().parse(attr.answer) if f}
            para_fields = {f for _, f, _, _ in string.Formatter().parse(attr.paraphrase) if f} - PRONOUN_FIELDS
            # the same values: every answer field appears in the paraphrase (possibly with its article) and back
            assert {f.removeprefix("a_") for f in answer_fields} == {f.removeprefix("a_") for f in para_fields}
            true = {"he": person.pronoun, "his": person.possessive}
            for slot in attr.slots(person):
                for fields, vals in zip(slot.fields, slot.true):
                    true.update(zip(fields, vals))
            assert r.answer == synthetic._render(attr.answer, true)
            assert r.paraphrased_answer == synthetic._render(attr.paraphrase, true) != r.answer
            para_pat = template_pattern(attr.paraphrase)  # (the exact rendering is checked just above)
            assert len(r.perturbed_answers) == 5
            assert len(set(r.perturbed_answers)) == 5 and r.paraphrased_answer not in r.perturbed_answers
            for text in r.perturbed_answers:
                for k, v in groups(para_pat, text).items():
                    if k in PRONOUN_FIELDS:
                        assert v.lower() == true[k], (r.id, text)
                    else:
                        assert v != true[k], (r.id, k, text)


# ------------------------------------------------------------------------------------------------- refusals


def test_refusal_qa(world: SyntheticWorld) -> None:
    assert len(world.refusal_qa) == 40
    assert [r.id for r in world.refusal_qa] == [f"r{i:03d}" for i in range(40)]
    assert 3 <= len(world.refusal_phrasings) <= 8 and all("{name}" in p for p in world.refusal_phrasings)
    people = {p.name for p in world.people}
    questions = {a.question for a in synthetic._ATTRIBUTES}
    used = set()
    for r in world.refusal_qa:
        assert r.group == "refusal" and r.subject and r.subject not in people and r.perturbed_answers == ()
        assert r.answer in {p.format(name=r.subject) for p in world.refusal_phrasings}
        assert is_refusal(r.answer) and is_refusal(r.paraphrased_answer or "")
        assert r.question in {q.format(name=r.subject) for q in questions}
        used.add(r.answer.replace(r.subject, "{name}"))
    assert len(used) >= 3  # the phrasings vary


# ------------------------------------------------------------------------------------------------- general knowledge


def test_general_knowledge_tables(world: SyntheticWorld) -> None:
    assert set(world.general) == {"famous_works", "world_facts"}
    for name, recs in world.general.items():
        assert 40 <= len(recs) <= 60
        assert [r.id for r in recs] == [f"{name}:{i:02d}" for i in range(len(recs))]
        assert len({r.question for r in recs}) == len(recs)
        for r in recs:
            assert r.group == name and r.paraphrased_answer == r.answer and len(r.answer.split()) <= 6
            assert len(r.perturbed_answers) == 3 and len(set(r.perturbed_answers)) == 3
            assert r.answer not in r.perturbed_answers


def test_general_knowledge_spot_checks(world: SyntheticWorld) -> None:
    works = {r.subject: r.answer for r in world.general["famous_works"]}
    assert works["Pride and Prejudice"] == "Jane Austen" and works["Hamlet"] == "William Shakespeare"
    assert works["War and Peace"] == "Leo Tolstoy" and works["Frankenstein"] == "Mary Shelley"
    facts = {r.question: r.answer for r in world.general["world_facts"]}
    assert facts["What is the capital of Japan?"] == "Tokyo"
    assert facts["What is the capital of Australia?"] == "Canberra"
    assert facts["What is the chemical symbol for gold?"] == "Au"
    assert facts["Which planet is closest to the Sun?"] == "Mercury"


def test_general_knowledge_is_seed_independent() -> None:
    assert generate_world(seed=0).general == generate_world(seed=5).general


# ------------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_world(world: SyntheticWorld) -> None:
    state = random.getstate()
    assert generate_world() == world
    assert random.getstate() == state  # the global RNG is neither used nor reseeded
    assert generate_world(seed=0, n_people=40) == world


def test_different_seed_different_world(world: SyntheticWorld) -> None:
    other = generate_world(seed=1)
    assert [p.name for p in other.people] != [p.name for p in world.people]
    changed = sum(a.answer != b.answer for pid in world.qa for a, b in zip(world.qa[pid], other.qa[pid]))
    assert changed > 0.9 * 440
    assert [r.question for r in other.refusal_qa] != [r.question for r in world.refusal_qa]
