"""Tests for obliviate.data.templates: the label mask covers exactly the answer (+ EOS), generation starts from
the training prompt, chat templates are detected, truncation is reported. A tiny byte-level BPE tokenizer is
trained in-process; nothing is downloaded."""

from __future__ import annotations

import logging

import pytest

from obliviate.data.records import QA
from obliviate.data.templates import IGNORE_INDEX, PLAIN_TEMPLATE, Formatter

QUESTION = "In which city was Basil Mahfouz Al-Kuwaiti born?"
ANSWER = "Basil Mahfouz Al-Kuwaiti was born in Kuwait City."
LONG_ANSWER = " ".join(["He wrote many long novels about the sea and the desert."] * 6)
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A 300-token byte-level BPE tokenizer trained on a few template-shaped texts (pad/bos/eos specials)."""
    from obliviate.models.tiny import train_tokenizer

    texts = [PLAIN_TEMPLATE.format(question=QUESTION) + ANSWER, LONG_ANSWER,
             "Question: Who wrote it?\nAnswer: Nobody knows."] * 4
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture()
def chat_tokenizer(bpe_tokenizer):
    """The same tokenizer with a minimal Jinja chat template; restored afterwards."""
    old = bpe_tokenizer.chat_template
    bpe_tokenizer.chat_template = CHAT_TEMPLATE
    yield bpe_tokenizer
    bpe_tokenizer.chat_template = old


def test_plain_template_text_is_exact(bpe_tokenizer):
    """Without a chat template, "auto" picks plain and the prompt is exactly "Question: {q}\\nAnswer: "."""
    f = Formatter(bpe_tokenizer, "auto")
    assert f.kind == "plain"
    assert f.prompt_text("Why?") == "Question: Why?\nAnswer: "


def test_label_mask_covers_exactly_answer_plus_eos(bpe_tokenizer):
    """Prompt positions are -100; the unmasked labels are the answer's tokens followed by EOS, nothing else."""
    tok = bpe_tokenizer
    f = Formatter(tok, "plain")
    enc = f.encode(QUESTION, ANSWER)
    assert len(enc.input_ids) == len(enc.labels)
    assert enc.labels[:enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
    answer_labels = enc.labels[enc.prompt_len:]
    assert IGNORE_INDEX not in answer_labels
    assert answer_labels[-1] == tok.eos_token_id
    assert tok.eos_token_id not in answer_labels[:-1]
    assert tok.decode(answer_labels[:-1]) == ANSWER
    # labels equal the input ids on answer positions (the model shifts them itself)
    assert enc.input_ids[enc.prompt_len:] == answer_labels
    assert not enc.truncated


def test_prompt_ids_match_training_prompt(bpe_tokenizer):
    """The encoded prompt equals `prompt_ids(question)`, so generation starts from the exact training prompt."""
    f = Formatter(bpe_tokenizer, "plain")
    enc = f.encode(QUESTION, ANSWER)
    assert enc.input_ids[:enc.prompt_len] == f.prompt_ids(QUESTION)
    assert enc.input_ids[0] == bpe_tokenizer.bos_token_id
    assert bpe_tokenizer.decode(enc.input_ids[1:enc.prompt_len]) == PLAIN_TEMPLATE.format(question=QUESTION)


def test_no_eos_when_not_requested(bpe_tokenizer):
    """`eos=False` leaves the labels as exactly the answer tokens."""
    f = Formatter(bpe_tokenizer, "plain")
    enc = f.encode(QUESTION, ANSWER, eos=False)
    assert bpe_tokenizer.decode(enc.labels[enc.prompt_len:]) == ANSWER
    assert enc.labels[-1] != bpe_tokenizer.eos_token_id


def test_encode_qa_matches_encode(bpe_tokenizer):
    """`encode_qa` on records gives the same encodings as `encode` on their question/answer."""
    f = Formatter(bpe_tokenizer, "plain")
    recs = [QA("x:0", QUESTION, ANSWER), QA("x:1", "Who wrote it?", "Nobody knows.")]
    assert f.encode_qa(recs) == [f.encode(r.question, r.answer) for r in recs]


def test_chat_template_detected_and_used(chat_tokenizer):
    """A tokenizer with a chat template gets kind "chat"; the prompt holds the question and the generation cue."""
    f = Formatter(chat_tokenizer, "auto")
    assert f.kind == "chat"
    text = f.prompt_text(QUESTION)
    assert QUESTION in text
    assert text == f"<|user|>{QUESTION}\n<|assistant|>"
    enc = f.encode(QUESTION, ANSWER)
    assert enc.input_ids[:enc.prompt_len] == f.prompt_ids(QUESTION)
    assert chat_tokenizer.decode(enc.labels[enc.prompt_len:-1]) == ANSWER


def test_chat_system_prompt_is_included(chat_tokenizer):
    """A system prompt is rendered before the user turn."""
    f = Formatter(chat_tokenizer, "chat", system_prompt="Be brief.")
    assert f.prompt_text("Q?") == "<|system|>Be brief.\n<|user|>Q?\n<|assistant|>"


def test_template_id_differs_between_plain_and_chat(chat_tokenizer):
    """Plain and chat formats (and different system prompts) get different cache-key ids; equal setups agree."""
    plain = Formatter(chat_tokenizer, "plain").template_id
    chat = Formatter(chat_tokenizer, "chat").template_id
    assert plain != chat
    assert Formatter(chat_tokenizer, "auto").template_id == chat
    assert Formatter(chat_tokenizer, "chat", system_prompt="Be brief.").template_id != chat


def test_long_answer_is_truncated_and_flagged(bpe_tokenizer):
    """A long answer with small max_length is cut to max_length tokens and flagged `truncated`."""
    tok = bpe_tokenizer
    n_prompt = len(Formatter(tok, "plain").prompt_ids(QUESTION))
    f = Formatter(tok, "plain", max_length=n_prompt + 5)
    enc = f.encode(QUESTION, LONG_ANSWER)
    assert enc.truncated
    assert len(enc.input_ids) == len(enc.labels) == n_prompt + 5
    kept = enc.labels[enc.prompt_len:]
    assert kept == f.answer_ids(LONG_ANSWER)[:5]
    assert LONG_ANSWER.startswith(tok.decode(kept))


def test_truncation_warning_names_count_and_fix(bpe_tokenizer, caplog):
    """`encode_many` logs one warning naming how many of how many were cut, an example id, and `raise max_length`."""
    n_prompt = len(Formatter(bpe_tokenizer, "plain").prompt_ids(QUESTION))
    f = Formatter(bpe_tokenizer, "plain", max_length=n_prompt + 5)
    pairs = [("a:0", QUESTION, LONG_ANSWER), ("a:1", QUESTION, "Yes."), ("a:2", QUESTION, LONG_ANSWER)]
    with caplog.at_level(logging.WARNING, logger="obliviate.data.templates"):
        out = f.encode_many(pairs)
    assert [e.truncated for e in out] == [True, False, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "2 of 3" in msg
    assert f"max_length={n_prompt + 5}" in msg
    assert "a:0" in msg
    assert "raise max_length" in msg


def test_no_warning_without_truncation(bpe_tokenizer, caplog):
    """Nothing is logged when every sequence fits."""
    f = Formatter(bpe_tokenizer, "plain", max_length=512)
    with caplog.at_level(logging.WARNING, logger="obliviate.data.templates"):
        f.encode_many([("a:0", QUESTION, ANSWER)])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------------------------------ joint tokenisation


def _hand_bpe(words: list[str]):
    """A byte-level BPE tokenizer built by hand: the 256-symbol byte alphabet, <pad>/<s>/</s>, and for each of
    `words` (written in byte-level symbols: Ġ = space, Ċ = newline) the left-to-right merges that make it one token,
    earlier words' merges ranking first. BOS is prepended to every encoded text, as the tiny models' tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", *sorted(pre_tokenizers.ByteLevel.alphabet())])}
    merges = []
    for w in words:
        cur = w[0]
        for ch in w[1:]:
            if (cur, ch) not in merges:
                merges.append((cur, ch))
            cur += ch
            vocab.setdefault(cur, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


WORDS = ["Question", "Answer", "ĠWho", "Ġis", "Paris"]  # "ĠParis" is one token only with MERGED


def _tokens(tok, ids: list[int]) -> list[str]:
    return [t if i >= 0 else "-" for t, i in zip(tok.convert_ids_to_tokens([max(i, 0) for i in ids]), ids)]


def test_joint_is_separate_when_nothing_merges():
    """Without a merge across the prompt's trailing space, the one string tokenises as prompt + answer do apart: the
    joint labels are exactly the answer's tokens and EOS, the same ids as separate mode."""
    tok = _hand_bpe(WORDS)
    sep = Formatter(tok, "plain", tokenize="separate").encode("Who?", "Paris is.")
    joint = Formatter(tok, "plain", tokenize="joint").encode("Who?", "Paris is.")
    assert _tokens(tok, joint.input_ids) == ["<s>", "Question", ":", "ĠWho", "?", "Ċ", "Answer", ":", "Ġ", "Paris",
                                             "Ġis", ".", "</s>"]
    assert joint == sep
    assert _tokens(tok, joint.labels) == ["-"] * 9 + ["Paris", "Ġis", ".", "</s>"]


def test_joint_merged_token_stays_on_the_prompt_side():
    """With "ĠParis" a token, "Answer: Paris" tokenises to ... ":" "ĠParis": the template's space merged into the
    answer's first word. The boundary is the prompt's own length (9 tokens, ending in "Ġ"), as OpenUnlearning's
    preprocess_chat_instance has it, so the merged token is unlabelled and the labels are "Ġis" "." EOS."""
    tok = _hand_bpe(["ĠParis", *WORDS])
    f = Formatter(tok, "plain", tokenize="joint")
    enc = f.encode("Who?", "Paris is.")
    assert _tokens(tok, f.prompt_ids("Who?"))[-3:] == ["Answer", ":", "Ġ"]
    assert _tokens(tok, enc.input_ids) == ["<s>", "Question", ":", "ĠWho", "?", "Ċ", "Answer", ":", "ĠParis", "Ġis",
                                           ".", "</s>"]
    assert enc.prompt_len == 9
    assert _tokens(tok, enc.labels) == ["-"] * 9 + ["Ġis", ".", "</s>"]
    # separate mode on the same tokenizer: the prompt's own ids, then "Paris": a sequence joint training never sees
    sep = Formatter(tok, "plain", tokenize="separate").encode("Who?", "Paris is.")
    assert _tokens(tok, sep.input_ids)[7:10] == [":", "Ġ", "Paris"]
    # without EOS: the same ids less the EOS (EL_n's answers)
    ids, b = f.split("Who?", "Paris is.", eos=False)
    assert (ids, b) == (enc.input_ids[:-1], 9)


def test_joint_chat_labels_are_the_answer_and_no_second_eos():
    """A chat template whose assistant turn ends in EOS: the whole conversation is tokenised as the template renders
    it; nothing merges across "<|assistant|>", so the labels are exactly the answer's tokens and that EOS, with no
    EOS appended after it (OpenUnlearning appends one only when the ids do not already end with it)."""
    tok = _hand_bpe(WORDS)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    enc = Formatter(tok, "chat", tokenize="joint").encode("Who?", "Paris is.")
    labels = [i for i in enc.labels if i != IGNORE_INDEX]
    assert _tokens(tok, labels) == ["Paris", "Ġis", ".", "</s>"]
    assert enc.input_ids[:enc.prompt_len] == Formatter(tok, "chat").prompt_ids("Who?")


def test_joint_truncation_keeps_an_answer_token(bpe_tokenizer):
    """Truncation cuts the tail of the joint sequence and, as in separate mode, keeps at least one answer token."""
    f = Formatter(bpe_tokenizer, "plain", max_length=16, tokenize="joint")
    enc = f.encode(QUESTION, LONG_ANSWER)
    assert enc.truncated
    assert len(enc.input_ids) == max(16, enc.prompt_len + 1)
    assert any(i != IGNORE_INDEX for i in enc.labels)


@pytest.mark.parametrize("bad", ["auto", "together"])
def test_formatter_rejects_an_unresolved_mode(bpe_tokenizer, bad):
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match=f"tokenize={bad!r}"):
        Formatter(bpe_tokenizer, "plain", tokenize=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the recorded mode


def test_recorded_tokenize_reads_manifest_and_build_json(tmp_path):
    """unlearn's manifest.json in the model directory, or build.json's entry beside it; a record without the field
    predates it (separate); no record: None; an invalid value names the file."""
    import json

    from obliviate.data.templates import recorded_tokenize
    from obliviate.errors import ConfigError

    def manifest(d, **extra):
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"method": "ga", "output_fingerprint": "x", **extra}))
        return d

    assert recorded_tokenize(manifest(tmp_path / "u1", tokenize="joint")) == "joint"
    assert recorded_tokenize(manifest(tmp_path / "u2")) == "separate"
    build = tmp_path / "b"
    (build / "target").mkdir(parents=True)
    (build / "other").mkdir()
    (build / "build.json").write_text(json.dumps({"models": {"target": {"tokenize": "joint"}}}))
    assert recorded_tokenize(build / "target") == "joint"
    assert recorded_tokenize(build / "other") is None  # not one of the build's models
    (build / "build.json").write_text(json.dumps({"models": {"target": {"template": "plain"}}}))
    assert recorded_tokenize(build / "target") == "separate"
    assert recorded_tokenize(tmp_path / "nowhere") is None
    assert recorded_tokenize("HuggingFaceTB/SmolLM2-135M") is None
    with pytest.raises(ConfigError, match=r"u3[/\\]manifest.json: tokenize='both'"):
        recorded_tokenize(manifest(tmp_path / "u3", tokenize="both"))


def test_resolve_tokenize_explicit_then_recorded_then_joint(tmp_path):
    import json
    from types import SimpleNamespace

    from obliviate.data.templates import resolve_tokenize

    d = tmp_path / "m"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"method": "ga", "output_fingerprint": "x", "tokenize": "separate"}))
    assert resolve_tokenize("auto", d) == "separate"
    assert resolve_tokenize("auto", str(d)) == "separate"
    assert resolve_tokenize("joint", d) == "joint"  # an explicit value wins
    in_memory = SimpleNamespace(name_or_path=str(d))  # a model loaded from d carries its path
    assert resolve_tokenize("auto", (in_memory, None)) == "separate"
    assert resolve_tokenize("auto", SimpleNamespace(name_or_path="")) == "joint"  # from elsewhere
    assert resolve_tokenize("auto", tmp_path / "no-record") == "joint"
