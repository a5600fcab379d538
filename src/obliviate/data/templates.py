"""Prompt templating and tokenisation with the prompt masked out of the labels.

Prompt and answer are tokenised SEPARATELY and their ids concatenated: with byte-level BPE a prompt that ends
in a space tokenises differently alone than inside prompt+answer, which would shift the label mask by a token
(METHODS.md, "Prompt/answer token boundary"). Generation starts from exactly the prompt ids used in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from obliviate.data.records import QA
from obliviate.errors import ConfigError, ModelError
from obliviate.utils.hashing import stable_hash

IGNORE_INDEX = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer: "
log = logging.getLogger(__name__)

TemplateKind = Literal["auto", "plain", "chat"]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt positions
    prompt_len: int
    truncated: bool


@dataclass
class TruncationReport:
    total: int = 0
    truncated: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, item_id: str) -> None:
        self.truncated += 1
        if len(self.examples) < 5:
            self.examples.append(item_id)

    def message(self, max_length: int) -> str | None:
        if not self.truncated:
            return None
        return (f"{self.truncated} of {self.total} sequences were longer than max_length={max_length} and were "
                f"truncated (e.g. {', '.join(self.examples)}); raise max_length to keep them whole")


class Formatter:
    """Turns (question, answer) into token ids with a plain template or the tokenizer's chat template."""

    def __init__(self, tokenizer, template: TemplateKind = "auto", max_length: int = 512,
                 system_prompt: str | None = None) -> None:
        self.tok = tokenizer
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "auto":
            template = "chat" if has_chat else "plain"
        if template == "chat" and not has_chat:
            raise ConfigError("template=chat, but this model's tokenizer has no chat template; use template=plain "
                              "(or template=auto, which picks the chat template only when there is one)")
        if template not in ("plain", "chat"):
            raise ConfigError(f"template={template!r}: expected auto, plain or chat")
        self.kind = template
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ModelError("the model's tokenizer has no end-of-sequence token (eos_token); set one in its "
                             "tokenizer_config.json")

    @property
    def template_id(self) -> str:
        """Identifies the exact prompt format, for cache keys."""
        chat = getattr(self.tok, "chat_template", None) if self.kind == "chat" else None
        return stable_hash([self.kind, PLAIN_TEMPLATE, chat, self.system_prompt, self.max_length], 12)

    def prompt_text(self, question: str) -> str:
        if self.kind == "plain":
            return PLAIN_TEMPLATE.format(question=question)
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, question: str) -> list[int]:
        text = self.prompt_text(question)
        # The plain template gets the tokenizer's own BOS handling; chat templates already contain their BOS.
        return list(self.tok(text, add_special_tokens=self.kind == "plain")["input_ids"])

    def answer_ids(self, answer: str, eos: bool = True) -> list[int]:
        ids = list(self.tok(answer, add_special_tokens=False)["input_ids"])
        return ids + [self.eos_id] if eos else ids

    def encode(self, question: str, answer: str, eos: bool = True) -> Encoded:
        p = self.prompt_ids(question)
        a = self.answer_ids(answer, eos=eos)
        truncated = len(p) + len(a) > self.max_length
        if truncated:
            keep = max(self.max_length - len(p), 1)  # always keep at least one answer token to score
            a = a[:keep]
        ids = p + a
        return Encoded(ids, [IGNORE_INDEX] * len(p) + a, len(p), truncated)

    def encode_many(self, pairs: list[tuple[str, str, str]], eos: bool = True) -> list[Encoded]:
        """Encode (item_id, question, answer) triples; logs one warning if any were truncated."""
        report = TruncationReport(total=len(pairs))
        out = []
        for item_id, q, a in pairs:
            enc = self.encode(q, a, eos=eos)
            if enc.truncated:
                report.note(item_id)
            out.append(enc)
        msg = report.message(self.max_length)
        if msg:
            log.warning(msg)
        return out

    def encode_qa(self, records: list[QA], eos: bool = True) -> list[Encoded]:
        return self.encode_many([(r.id, r.question, r.answer) for r in records], eos=eos)
