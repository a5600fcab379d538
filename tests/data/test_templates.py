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
