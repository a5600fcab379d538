"""Rehearsal (runs/rehearsal.py): which generated or given questions are kept (one question, distinct, not close to
any of the scenario's), answers cut to whole sentences, the sources, and the build config's guard and key."""

from __future__ import annotations

import json

import pytest

from obliviate.runs import rehearsal as R


@pytest.mark.parametrize("text,kept", [
    ("Who painted the Mona Lisa?", "Who painted the Mona Lisa?"),
    ('  "What is the capital of Peru?"\nAnswer: Lima', "What is the capital of Peru?"),
    ("Tell me a story.", None),  # not a question
    ("Why?", None),  # too short
    ("What? Where? When is it?", None),  # more than one question
])
def test_clean_question(text, kept):
    assert R.clean_question(text) == kept


@pytest.mark.parametrize("text,cut", [
    ("Lima is the capital. It lies on the coast and", "Lima is the capital."),
    ("Lima is the capital of Peru", "Lima is the capital of Peru"),  # no sentence ends: all of it
    ("It is 3.5 km long! Then", "It is 3.5 km long!"),  # a decimal point is no sentence end
])
def test_whole_sentences(text, cut):
    assert R.whole_sentences(text) == cut


@pytest.mark.parametrize("keep,cut", [(1, "Lima is the capital."), (2, "Lima is the capital. It is old."),
                                      (5, "Lima is the capital. It is old.")])
def test_whole_sentences_keeps_the_first(keep, cut):
    assert R.whole_sentences("Lima is the capital. It is old. It lies", keep) == cut


class _Tok:
    """A tokenizer stand-in: each text is one id (its index in `texts`)."""

    pad_token_id = 0
    eos_token_id = 1

    def __init__(self, texts):
        self.texts = list(texts)

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.texts[i] for i in ids)


def test_synthesize_keeps_distinct_questions_away_from_the_scenario(monkeypatch):
    """Of the sampled questions, a duplicate (case aside), a non-question and one that restates a scenario question
    (ROUGE-L F1 >= guard) are dropped; the answers are the greedy ones, cut to whole sentences, and each pair gets a
    stable id."""
    drawn = ["Who painted the Mona Lisa?", "who painted the mona lisa?", "Tell me something.",
             "Who wrote the novel Hamlet?", "What is the capital of Peru?"]
    answers = ["Leonardo da Vinci painted it. He was", "Lima is the capital."]
    tok = _Tok(drawn + answers)
    monkeypatch.setattr(R, "Formatter", lambda tok, kind: type("F", (), {"eos_id": 1, "prompt_ids": lambda s, q: [0]})())
    monkeypatch.setattr(R, "sample_pass", lambda *a, **k: [[[i] for i in range(len(drawn))]])
    monkeypatch.setattr(R, "generate_pass", lambda model, prompts, *a, **k: [[len(drawn) + i] for i in
                                                                              range(len(prompts))])
    pairs = R.synthesize(None, tok, R.RehearsalSpec(n=5), avoid=["Who wrote the play Hamlet?"], rounds=1)
    assert [(p.id, p.question, p.answer) for p in pairs] == [
        ("rehearsal-0", "Who painted the Mona Lisa?", "Leonardo da Vinci painted it."),
        ("rehearsal-1", "What is the capital of Peru?", "Lima is the capital.")]


def test_given_questions_are_answered_not_sampled(monkeypatch, tmp_path):
    """A file source: its questions (blank lines and repeats dropped, the guard applied, at most `n`) are answered
    greedily, each answer cut to its first sentence; nothing is sampled."""
    qfile = tmp_path / "questions.txt"
    qfile.write_text("Who painted the Mona Lisa?\n\nWho wrote the novel Hamlet?\nWho painted the Mona Lisa?\n"
                     "What is the capital of Peru?\nWhat is the capital of Chile?\n")
    answers = ["Leonardo da Vinci painted it. He was Italian.", "Lima. It lies on the coast."]
    tok = _Tok(answers)
    monkeypatch.setattr(R, "Formatter", lambda tok, kind: type("F", (), {"eos_id": 1, "prompt_ids": lambda s, q: [0]})())
    monkeypatch.setattr(R, "sample_pass", lambda *a, **k: pytest.fail("a given source samples nothing"))
    seen = []
    monkeypatch.setattr(R, "generate_pass", lambda model, prompts, *a, **k: seen.append(len(prompts)) or
                        [[i] for i in range(len(prompts))])
    spec = R.RehearsalSpec(source=str(qfile), n=2, answer_sentences=1)
    pairs = R.synthesize(None, tok, spec, avoid=["Who wrote the play Hamlet?"])
    assert seen == [2]
    assert [(p.question, p.answer) for p in pairs] == [("Who painted the Mona Lisa?", "Leonardo da Vinci painted it."),
                                                       ("What is the capital of Peru?", "Lima.")]


def test_general_source_and_a_missing_file():
    from obliviate.data.general import GENERAL_FACTS, GENERAL_QUESTIONS, GENERAL_WIDE

    assert R.RehearsalSpec(source="general").given_questions() == list(GENERAL_QUESTIONS)
    assert R.RehearsalSpec(source="wide").given_questions() == list(GENERAL_WIDE)
    assert len(GENERAL_WIDE) > len(GENERAL_FACTS) == len(R.RehearsalSpec(source="facts").given_questions())
    assert R.RehearsalSpec().given_questions() is None
    with pytest.raises(ValueError, match="neither 'self', 'general', 'facts', 'known', 'wide' nor an existing"):
        R.RehearsalSpec(source="no/such/questions.txt")


def test_known_source_keeps_only_the_answers_that_state_the_reference(monkeypatch):
    """`source=known`: every listed question is asked (none cut to `n` before answering), and the first `n` answers
    that state the question's reference answer are kept; a wrong or empty answer is dropped."""
    facts = {"Who wrote 'Dracula'?": ("Bram Stoker", "Stoker"), "What is the capital of Kenya?": ("Nairobi",),
             "Who painted 'Guernica'?": ("Pablo Picasso", "Picasso"), "Who wrote 'Heidi'?": ("Johanna Spyri",)}
    monkeypatch.setattr(R, "GENERAL_FACTS", facts)
    answers = ["'Dracula' is by Bram Stoker. He was Irish.", "The capital of Kenya is Mombasa.",
               "Guernica was painted by Picasso in 1937.", "Heidi was written by Johanna Spyri."]
    tok = _Tok(answers)
    monkeypatch.setattr(R, "Formatter", lambda tok, kind: type("F", (), {"eos_id": 1, "prompt_ids": lambda s, q: [0]})())
    seen = []
    monkeypatch.setattr(R, "generate_pass", lambda model, prompts, *a, **k: seen.append(len(prompts)) or
                        [[i] for i in range(len(prompts))])
    pairs = R.synthesize(None, tok, R.RehearsalSpec(source="known", n=2, answer_sentences=1), avoid=[])
    assert seen == [4]  # all asked, although n=2
    assert [(p.question, p.answer) for p in pairs] == [("Who wrote 'Dracula'?", "'Dracula' is by Bram Stoker."),
                                                       ("Who painted 'Guernica'?",
                                                        "Guernica was painted by Picasso in 1937.")]
    assert R.RehearsalSpec(source="known").given_questions() == list(facts)
    pairs = R.synthesize(None, tok, R.RehearsalSpec(source="facts", n=3), avoid=[])  # the same list, unfiltered
    assert [p.question for p in pairs] == list(facts)[:3]


@pytest.mark.parametrize("text,named", [
    ("'Oliver Twist' is by Charles Dickens.", True),
    ("Who wrote 'Bleak House'? Dickens did.", True),  # the surname alone
    ("CHARLES DICKENS was born in 1812.", True),  # case aside
    ("'Emma' is by Jane Austen.", False),
])
def test_mentions(text, named):
    assert R.mentions(text, ["Charles Dickens"]) is named


def test_named_retain_asks_every_listed_question_and_drops_the_pairs_naming_a_target(monkeypatch):
    """`forget --retain facts`: every listed question is answered by the model (not cut to rehearsal's default
    n), a pair whose question, answer or reference answer names a target is left out, and a question restating
    one in `avoid` is not asked; an unknown source names the two there are."""
    facts = {f"Who wrote book {i}?": ("x",) for i in range(150)}
    facts["Who wrote 'Great Expectations'?"] = ("Charles Dickens",)
    facts["Who wrote 'Middlemarch'?"] = ("George Eliot",)
    facts["What is the capital of Kenya?"] = ("Nairobi",)
    monkeypatch.setattr(R, "GENERAL_FACTS", facts)
    answers = {"Who wrote 'Middlemarch'?": "Middlemarch is by Charles Dickens, I think."}
    monkeypatch.setattr(R, "Formatter", lambda tok, kind: type("F", (), {"eos_id": 1, "prompt_ids": lambda s, q: [q]})())
    monkeypatch.setattr(R, "generate_pass", lambda model, prompts, *a, **k: [[p[0]] for p in prompts])
    tok = type("T", (), {"pad_token_id": 0, "decode": lambda s, ids, skip_special_tokens=True:
                         answers.get(ids[0], f"An answer to {ids[0]}")})()
    model = type("M", (), {"eval": lambda s: s})()
    pairs = R.named_retain(model, tok, "facts", ["Charles Dickens"], avoid=["What is the capital city of Kenya?"])
    questions = [p.question for p in pairs]
    assert len(questions) == 150 and "What is the capital of Kenya?" not in questions  # 153: 1 avoided, 2 name him
    assert not {"Who wrote 'Great Expectations'?", "Who wrote 'Middlemarch'?"} & set(questions)  # his by
    # reference, and by the model's answer
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="general, facts"):
        R.named_retain(model, tok, "everything", ["Charles Dickens"])


def test_rehearsal_needs_a_pretrained_base():
    from obliviate.errors import ConfigError
    from obliviate.runs.build import build_config_for

    with pytest.raises(ConfigError, match="pretrained base"):
        build_config_for("tofu-mini", {"rehearsal": {"n": 10}})
    assert build_config_for("tofu-mini", {"base": "smollm2-135m", "rehearsal": {"n": 10}}).rehearsal.n == 10


def test_rehearsal_enters_the_build_key_only_when_set(tmp_path):
    """A build with rehearsal (or frozen embeddings) is another build; one without keeps the key it had before the
    option existed (the key of a config without the field)."""
    from obliviate.data.scenarios import get_scenario
    from obliviate.runs import build as B
    from obliviate.utils.hashing import stable_hash

    (tmp_path / "config.json").write_text("{}")  # a model directory as a base (no weights: nothing to hash)
    scen = get_scenario("synthetic")
    plain = B.build_config_for("synthetic", {"base": str(tmp_path)})
    rehearsed = B.build_config_for("synthetic", {"base": str(tmp_path), "rehearsal": {"n": 10}})
    key = B.build_key(plain, scen)
    sets = B.training_sets(plain, scen)

    def key_without_new_fields(cfg, rehearsal_unkeyed, *questions) -> str:
        """The key of `cfg` as computed before the optional fields existed (their dump left out)."""
        unkeyed = {"parallel": True, "scenario_options": True, "model": True, "rehearsal": rehearsal_unkeyed,
                   "train": {"freeze_embeddings", "freeze_layers"}}
        return stable_hash([B.BUILD_FORMAT, B.base_identity(cfg), cfg.model_dump(exclude=unkeyed),
                            *([(r.question, r.answer) for r in sets[m].records] for m in ("target", "retain")),
                            *questions])

    assert key == key_without_new_fields(plain, True)
    assert B.build_key(rehearsed, scen) != key
    frozen = B.build_config_for("synthetic", {"base": str(tmp_path), "train": {"freeze_embeddings": True}})
    assert B.build_key(frozen, scen) != key  # the same holds for train.freeze_embeddings
    lower = B.build_config_for("synthetic", {"base": str(tmp_path), "train": {"freeze_layers": 2}})
    assert B.build_key(lower, scen) not in (key, B.build_key(frozen, scen))  # and train.freeze_layers
    anchored = {"base": str(tmp_path), "rehearsal": {"n": 10, "loss": "kl"}}  # and for rehearsal.batch
    anchor_key = B.build_key(B.build_config_for("synthetic", anchored), scen)
    assert anchor_key == key_without_new_fields(B.build_config_for("synthetic", anchored), {"batch"}, None)
    smaller = {**anchored, "rehearsal": {**anchored["rehearsal"], "batch": 2}}
    assert B.build_key(B.build_config_for("synthetic", smaller), scen) != anchor_key


def test_an_anchor_batch_without_the_anchor_is_refused():
    from obliviate.runs.rehearsal import RehearsalSpec

    with pytest.raises(ValueError, match="rehearsal.loss=kl"):
        RehearsalSpec(batch=4)
    assert RehearsalSpec(batch=4, loss="kl").batch == 4


def test_a_question_file_enters_the_build_key_by_its_content(tmp_path):
    from obliviate.data.scenarios import get_scenario
    from obliviate.runs import build as B

    (tmp_path / "config.json").write_text("{}")
    qfile = tmp_path / "q.txt"
    scen = get_scenario("synthetic")
    keys = []
    for text in ("Who painted the Mona Lisa?\n", "Who painted the Mona Lisa?\n", "What is the capital of Peru?\n"):
        qfile.write_text(text)
        keys.append(B.build_key(B.build_config_for("synthetic", {"base": str(tmp_path),
                                                                 "rehearsal": {"source": str(qfile)}}), scen))
    assert keys[0] == keys[1] != keys[2]


def test_freezing_every_layer_is_refused_before_the_base_writes_its_answers(monkeypatch, tmp_path):
    """The depth comes from the base's config: train.freeze_layers=2 on a 2-layer base is refused before the
    rehearsal synthesis (minutes on a real base) and leaves no build behind; 1 gets as far as the synthesis."""
    from obliviate.errors import ConfigError
    from obliviate.runs import build as B

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))

    class Synthesised(Exception):
        pass

    def synthesis(*a, **k):
        raise Synthesised

    monkeypatch.setattr(B, "rehearsal_set", synthesis)
    recipe = {"base": str(base), "rehearsal": {"n": 10}}
    with pytest.raises(ConfigError, match="freezes every one of the model's 2 decoder layers: give fewer than 2"):
        B.build("synthetic", overrides={**recipe, "train": {"freeze_layers": 2}})
    assert not list((tmp_path / "cache").rglob("build.json"))
    with pytest.raises(Synthesised):
        B.build("synthetic", overrides={**recipe, "train": {"freeze_layers": 1}})


def test_a_registered_base_builds_with_its_recipe_and_the_plain_keys_give_the_plain_one():
    """smollm2-135m builds with its measured recipe (the KL anchor on the listed facts, the embeddings and 18
    layers frozen, lr 5e-4); PLAIN_RECIPE's overrides give back what any other pretrained base builds with."""
    from obliviate.config import parse_overrides
    from obliviate.runs import build as B

    recipe = B.build_config_for("tofu-mini", {"base": "smollm2-135m"})
    assert (recipe.rehearsal.source, recipe.rehearsal.loss, recipe.rehearsal.weight) == ("facts", "kl", 1.0)
    assert (recipe.train.lr, recipe.train.freeze_embeddings, recipe.train.freeze_layers) == (5e-4, True, 18)
    plain = B.build_config_for("tofu-mini", {"base": "smollm2-135m", **parse_overrides(B.PLAIN_RECIPE)})
    other = B.build_config_for("tofu-mini", {"base": "owner/model"})
    assert plain.rehearsal is None
    assert plain.model_dump(exclude={"base"}) == other.model_dump(exclude={"base"})
    assert other.train.lr == B.PRETRAINED_DEFAULTS["train"]["lr"]
