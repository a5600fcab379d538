"""Self-synthesised rehearsal (runs/rehearsal.py): which generated questions are kept (one question, distinct, not
close to any of the scenario's), answers cut to whole sentences, and the build config's guard."""

from __future__ import annotations

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


def test_rehearsal_needs_a_pretrained_base():
    from obliviate.errors import ConfigError
    from obliviate.runs.build import build_config_for

    with pytest.raises(ConfigError, match="pretrained base"):
        build_config_for("tofu-mini", {"rehearsal": {"n": 10}})
    assert build_config_for("tofu-mini", {"base": "smollm2-135m", "rehearsal": {"n": 10}}).rehearsal.n == 10


def test_rehearsal_enters_the_build_key_only_when_set(tmp_path):
    """A build with rehearsal is another build; one without keeps the key it had before the option existed (the
    key of a config without the field)."""
    from obliviate.data.scenarios import get_scenario
    from obliviate.runs import build as B
    from obliviate.utils.hashing import stable_hash

    (tmp_path / "config.json").write_text("{}")  # a model directory as a base (no weights: nothing to hash)
    scen = get_scenario("synthetic")
    plain = B.build_config_for("synthetic", {"base": str(tmp_path)})
    rehearsed = B.build_config_for("synthetic", {"base": str(tmp_path), "rehearsal": {"n": 10}})
    key = B.build_key(plain, scen)
    sets = B.training_sets(plain, scen)
    before = stable_hash([B.BUILD_FORMAT, B.base_identity(plain),
                          plain.model_dump(exclude={"parallel", "scenario_options", "model", "rehearsal"}),
                          *([(r.question, r.answer) for r in sets[m].records] for m in ("target", "retain"))])
    assert key == before
    assert B.build_key(rehearsed, scen) != key
