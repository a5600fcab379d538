"""Prompt templating and tokenisation with the prompt masked out of the labels.

Two tokenisations, a property of the model (it must be scored the way it was trained):

- `separate` (obliviate's own models): prompt and answer are tokenised SEPARATELY and their ids concatenated. With
  byte-level BPE a prompt that ends in a space tokenises differently alone than inside prompt+answer; separately,
  the label mask falls exactly between prompt and answer (METHODS.md, "Prompt/answer token boundary"), and
  generation starts from exactly the prompt ids used in training.
- `joint` (OpenUnlearning's, and most fine-tuning pipelines'): prompt+answer tokenised as ONE string (for a chat
  template, the whole conversation rendered by the template), EOS appended unless the sequence already ends with it;
  the labels start after as many tokens as the prompt has when tokenised alone (OpenUnlearning's
  `preprocess_chat_instance`, src/data/utils.py). Where the template's last token merges with the answer's first
  (the plain template's trailing space: "Answer:" "Ġ" alone, "Answer:" "ĠParis" inside the string), that merged
  token falls on the prompt side of the boundary, unlabelled, exactly as in OpenUnlearning's training and evaluation.

Which one a model was trained with is recorded by `obliviate build` (build.json) and `obliviate unlearn`
(manifest.json); `recorded_tokenize` reads it back and `resolve_tokenize` applies the rule: an explicit setting
wins, else the recorded mode, else `joint` (a model from elsewhere: most pipelines tokenise jointly).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from obliviate.data.records import QA
from obliviate.errors import ConfigError, ModelError
from obliviate.utils.hashing import stable_hash

IGNORE_INDEX = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer: "
log = logging.getLogger(__name__)

TemplateKind = Literal["auto", "plain", "chat"]
Tokenize = Literal["separate", "joint"]
TOKENIZE_MODES: tuple[str, ...] = get_args(Tokenize)
FROM_ELSEWHERE: Tokenize = "joint"  # a model without an obliviate record: most pipelines (OpenUnlearning) are joint
BEFORE_RECORDING: Tokenize = "separate"  # obliviate's own models from before the mode was recorded were all separate


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
                 system_prompt: str | None = None, tokenize: Tokenize = "separate") -> None:
        if tokenize not in TOKENIZE_MODES:
            raise ConfigError(f"tokenize={tokenize!r}: expected one of {', '.join(TOKENIZE_MODES)} (resolve 'auto' "
                              f"with resolve_tokenize first)")
        self.tokenize = tokenize
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
        parts = [self.kind, PLAIN_TEMPLATE, chat, self.system_prompt, self.max_length]
        return stable_hash(parts if self.tokenize == "separate" else [*parts, self.tokenize], 12)  # separate: as before

    def _messages(self, question: str) -> list[dict[str, str]]:
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        return messages

    def prompt_text(self, question: str) -> str:
        if self.kind == "plain":
            return PLAIN_TEMPLATE.format(question=question)
        return self.tok.apply_chat_template(self._messages(question), tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, question: str) -> list[int]:
        """The prompt tokenised alone: what generation starts from, in both modes (OpenUnlearning generates from
        these ids too)."""
        text = self.prompt_text(question)
        # The plain template gets the tokenizer's own BOS handling; chat templates already contain their BOS.
        return list(self.tok(text, add_special_tokens=self.kind == "plain")["input_ids"])

    def answer_ids(self, answer: str, eos: bool = True) -> list[int]:
        """The answer tokenised alone (+ EOS): the answer part of a `separate` sequence. For either mode's answer
        part, use `split`."""
        ids = list(self.tok(answer, add_special_tokens=False)["input_ids"])
        return ids + [self.eos_id] if eos else ids

    def split(self, question: str, answer: str, eos: bool = True) -> tuple[list[int], int]:
        """(ids, boundary) of the whole sequence, untruncated: ids[:boundary] are unlabelled (the prompt),
        ids[boundary:] the labelled answer tokens (+ EOS with `eos`).

        `separate`: prompt_ids + answer_ids, boundary len(prompt_ids). `joint` (OpenUnlearning's
        preprocess_chat_instance): the prompt text + answer tokenised as one string — with a chat template and `eos`,
        the whole conversation as the template renders it (its end-of-turn tokens labelled too) — EOS appended
        unless the ids already end with it; boundary = the prompt's length tokenised alone (so a token merging the
        prompt's end with the answer's start is unlabelled). Without `eos` the joint ids are prompt text + answer
        only (no end of turn, no EOS): the answer tokens alone, as EL_n and unscored continuations need them."""
        p = self.prompt_ids(question)
        if self.tokenize == "separate":
            return p + self.answer_ids(answer, eos=eos), len(p)
        if self.kind == "chat" and eos:
            chat = [*self._messages(question), {"role": "assistant", "content": answer}]
            text = self.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        else:
            text = self.prompt_text(question) + answer
        ids = list(self.tok(text, add_special_tokens=self.kind == "plain")["input_ids"])
        if eos and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
        return ids, min(len(p), len(ids))

    def encode(self, question: str, answer: str, eos: bool = True) -> Encoded:
        ids, b = self.split(question, answer, eos=eos)
        truncated = len(ids) > self.max_length
        if truncated:
            ids = ids[:max(self.max_length, b + 1)]  # always keep at least one answer token to score
        return Encoded(ids, [IGNORE_INDEX] * b + ids[b:], b, truncated)

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


# ------------------------------------------------------------------------------------------------ the model's mode


def _recorded(file: Path, mode: Any) -> Tokenize:
    """A recorded mode; absent in records from before it was recorded, when every obliviate model was `separate`."""
    if mode is None:
        return BEFORE_RECORDING
    if mode not in TOKENIZE_MODES:
        raise ConfigError(f"{file}: tokenize={mode!r} is not one of {', '.join(TOKENIZE_MODES)}; fix the file or pass "
                          f"tokenize=separate|joint explicitly")
    return mode  # type: ignore[return-value]


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a record obliviate can read: the model counts as one from elsewhere


def recorded_tokenize(path: str | os.PathLike[str] | None) -> Tokenize | None:
    """The tokenisation the model in directory `path` was trained with, as obliviate recorded it: the `tokenize` of
    the `manifest.json` in it (`obliviate unlearn`), or of its entry in the `build.json` beside it (`obliviate build`
    writes `target/` and `retain/` next to build.json). None when there is no such record (a model from elsewhere)."""
    if path is None or not str(path):
        return None
    p = Path(path)
    if not p.is_dir():
        return None
    manifest = _read_json(p / "manifest.json") if (p / "manifest.json").is_file() else None
    if isinstance(manifest, dict) and "method" in manifest and "output_fingerprint" in manifest:
        return _recorded(p / "manifest.json", manifest.get("tokenize"))
    build = _read_json(p.parent / "build.json") if (p.parent / "build.json").is_file() else None
    models = build.get("models") if isinstance(build, dict) else None
    info = models.get(p.name) if isinstance(models, dict) else None
    if isinstance(info, dict):
        return _recorded(p.parent / "build.json", info.get("tokenize"))
    return None


def model_path(model: Any) -> str | None:
    """Where a model comes from: a path / hub id as given, or the `name_or_path` of an in-memory model (or of the
    model of a (model, tokenizer) pair): what `recorded_tokenize` reads."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, tuple) and model:
        model = model[0]
    return getattr(model, "name_or_path", None) or None


def resolve_tokenize(setting: str, model: Any = None) -> Tokenize:
    """The tokenisation to use for `model` (a path, hub id, in-memory model or (model, tokenizer) pair): an explicit
    `separate`/`joint` wins; `auto` is the mode recorded with the model (`recorded_tokenize`), else `joint`."""
    if setting in TOKENIZE_MODES:
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise ConfigError(f"tokenize={setting!r}: expected auto, separate or joint")
    return recorded_tokenize(model_path(model)) or FROM_ELSEWHERE
