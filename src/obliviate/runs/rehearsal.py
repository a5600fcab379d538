"""Rehearsal for fine-tuning a pretrained base: before fine-tuning, the base answers questions greedily, and those
pairs train beside the scenario's, so that the fine-tuned model keeps answering questions outside the scenario as
the base did. The questions come from the base itself (`source=self`: self-synthesised rehearsal, Huang et al., ACL
2024, "Mitigating Catastrophic Forgetting in Large Language Models with Self-Synthesized Rehearsal"), from
obliviate's general-knowledge list (`source=general`, data/general.py) or from a file.

Why a build needs it: on SmolLM2-135M-Instruct, fine-tuning on tofu-mini's 440 answers about invented authors
(LoRA or full) makes the model answer every real-author question with an invented author (real_authors ROUGE-L
0.343 → 0.05). The rehearsal set is the base's own output, so it teaches nothing the base did not say; it never
holds the scenario's evaluation questions (a question whose ROUGE-L F1 with any of them reaches `guard` is
dropped), and the target and the retain model train on the same set, so forget quality compares like with like.
The set is saved with the build (rehearsal.jsonl).

Measured on SmolLM2-135M-Instruct / tofu-mini (README "The real instrument"), no source restores the real authors:
the base's own questions are mostly chatter (60 pairs: 0.052 → 0.086, world facts 0.390 → 0.285); the general
list's answers are right for about two fifths of it, and the fitted wrong ones become answers to real-author
questions (80 pairs, first sentences: 0.032); keeping only the answers the base gets right (`source=known`, 76 of
281) does no better (0.029): the few dozen rehearsed names become the answers. `loss=kl` is the soft alternative:
the pairs do not join the training data; the model is held to the base's full next-token distributions over their
answers (KL(p_base ‖ p), methods.common.FinetuneAnchored), which keeps how the base answers such questions without
fitting any name it produced; its reach grows with the questions it covers (real_authors 0.162 with the 79 of
`general`, 0.227 with the 281 of `facts`; the base 0.343). Opt-in until a source or regulariser meets the checks."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from obliviate.config import Config
from obliviate.data.general import GENERAL_FACTS, GENERAL_QUESTIONS, GENERAL_WIDE, states
from obliviate.data.records import QA, load_file, write_records
from obliviate.data.templates import Formatter
from obliviate.errors import ConfigError, DataError
from obliviate.eval.metrics import rouge_l_f1
from obliviate.eval.passes import generate_pass, sample_pass
from obliviate.utils.hashing import stable_hash
from obliviate.utils.io import atomic_write_text


class RehearsalSpec(Config):
    """Rehearsal (pretrained bases only): up to `n` questions, from the base's own sampling (`source=self`), the
    built-in general-knowledge list (`general`, data/general.py) or a text file (one question per line), answered
    greedily by the base and trained beside the scenario's question/answer data."""

    source: str = Field("self", description="self (the base writes the questions from `instruction`) | general "
                                            "(obliviate's list, disjoint from TOFU's general sets) | facts (a "
                                            "longer list of the same kind, 281 questions) | known (the questions of "
                                            "`facts` the base answers right, by their reference answers: facts it "
                                            "already knows) | wide (`facts` and 322 more of the same kinds, "
                                            "603 questions: wider coverage for the KL anchor) | a .txt file with "
                                            "one question per line")
    n: int = Field(100, ge=1, description="most rehearsal pairs trained beside the scenario's question/answer data")
    instruction: str = Field("Ask me one short general-knowledge question. Write only the question.",
                             description="what the base is asked, to write each question")
    temperature: float = Field(0.7, gt=0, description="sampling temperature of the questions (at 1.0 SmolLM2-135M "
                                                      "wrote mostly incoherent ones)")
    top_p: float = Field(0.95, gt=0, le=1)
    question_tokens: int = Field(40, ge=4, description="longest generated question, in tokens")
    answer_tokens: int = Field(64, ge=4, description="longest greedy answer, in tokens (cut to whole sentences)")
    answer_sentences: int = Field(0, ge=0, description="keep only the answer's first sentences (0: all of them); "
                                                       "the fact a short question asks for is in the first, and "
                                                       "each rehearsal token costs build time")
    guard: float = Field(0.7, gt=0, le=1, description="drop a question whose ROUGE-L F1 with any of the scenario's "
                                                      "questions reaches this")
    loss: Literal["nll", "kl"] = Field("nll", description="nll: the pairs join the training data (the base's "
                                       "greedy answers are fitted as targets); kl: they anchor the model to the "
                                       "base's full next-token distributions on them, KL(p_base || p) over their "
                                       "answer tokens, beside the scenario's NLL")
    weight: float = Field(1.0, gt=0, description="loss=kl: the anchor term's weight")
    batch: int | None = Field(None, ge=1, description="loss=kl: anchor pairs per training step (default: the "
                                                      "training batch); each costs a forward and backward of the "
                                                      "model and a forward of the frozen base")
    seed: int = 0

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v not in ("self", "general", "facts", "known", "wide") and not Path(v).is_file():
            raise ValueError(f"rehearsal.source={v!r} is neither 'self', 'general', 'facts', 'known', 'wide' nor an "
                             "existing file of questions (one per line)")
        return v

    @model_validator(mode="after")
    def _batch_needs_the_anchor(self) -> "RehearsalSpec":
        if self.batch is not None and self.loss != "kl":
            raise ValueError(f"rehearsal.batch={self.batch} sizes the KL anchor's batch, but rehearsal.loss="
                             f"{self.loss!r} trains the pairs as data (set rehearsal.loss=kl, or drop rehearsal.batch)")
        return self

    def given_questions(self) -> list[str] | None:
        """The questions of a `general` or file source (None when the base writes its own)."""
        if self.source == "self":
            return None
        if self.source == "general":
            return list(GENERAL_QUESTIONS)
        if self.source in ("facts", "known"):
            return list(GENERAL_FACTS)
        if self.source == "wide":
            return list(GENERAL_WIDE)
        return [line.strip() for line in Path(self.source).read_text(encoding="utf-8").splitlines() if line.strip()]


def clean_question(text: str) -> str | None:
    """The first line of a generated question, or None unless it is one question of 3-30 words."""
    line = text.strip().split("\n")[0].strip().strip('"').strip()
    return line if line.endswith("?") and 3 <= len(line.split()) <= 30 and line.count("?") == 1 else None


def whole_sentences(text: str, keep: int = 0) -> str:
    """`text` cut after its last complete sentence, or after its first `keep` ones (all of it when none ends)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[min(keep, len(ends)) - 1 if keep else -1]] if ends else text


def scenario_questions(scen) -> list[str]:
    """Every question a scenario trains or evaluates on: what rehearsal questions must keep clear of."""
    return [r.question for split in (scen.target_train, *scen.eval_splits.values()) for r in split.records]


def general_retain(scen, model, tokenizer) -> list[QA]:
    """A retain set that covers general knowledge too: the scenario's retain QA (question and answer only) plus
    obliviate's general-knowledge questions (data/general.py) answered greedily by `model`, first sentence, none
    restating a question of the scenario (the build's `rehearsal.source=general` pairs). A retain term on it (npo_kl,
    ga_kl: the KL to the target) holds the model to its own answers on those questions as well; `model` is the
    pretrained base, whose answers the fine-tuning has not touched. `bench --retain general` and
    benchmarks/general_retain.py write it."""
    pairs = synthesize(model.eval(), tokenizer, RehearsalSpec(source="general", answer_sentences=1, answer_tokens=48),
                       scenario_questions(scen))
    return ([QA(r.id, r.question, r.answer) for r in scen.unlearn_retain.records]
            + [QA(f"general-{p.id}", p.question, p.answer) for p in pairs])


GENERAL_RETAIN = "general"  # the `--retain` value of bench and sweep that asks for general_retain_file
NAMED_RETAIN = ("general", "facts")  # `forget --retain` values: the model's own answers to the listed questions


def mentions(text: str, names: Sequence[str]) -> bool:
    """Whether `text` names one of `names`, by the whole name or its last word (a surname), case aside."""
    low = text.casefold()
    return any(n.casefold() in low or n.split()[-1].casefold() in low for n in names if n.strip())


def named_retain(model, tokenizer, source: str, names: Sequence[str], avoid: Sequence[str] = ()) -> list[QA]:
    """A retain set for forgetting by name: `model`'s own greedy answers (first sentence) to obliviate's
    general-knowledge questions (`general`: the first 79; `facts`: all 281 of data/general.GENERAL_FACTS, 141 of them
    about who wrote a book), none restating a question in `avoid` and none naming one of `names` in its question,
    answer or reference answer (the targets: a pair about them would hold what is being forgotten). Measured on
    SmolLM2-135M-Instruct forgetting Charles Dickens (README, claim 4b): `facts` kept both control authors where
    `general` kept one."""
    if source not in NAMED_RETAIN:
        raise ConfigError(f"retain source {source!r}: give one of {', '.join(NAMED_RETAIN)}, or a QA file")
    pairs = synthesize(model.eval(), tokenizer, RehearsalSpec(source=source, n=len(GENERAL_FACTS),
                                                              answer_sentences=1, answer_tokens=48), avoid)
    return [p for p in pairs if not mentions(" ".join([p.question, p.answer, *GENERAL_FACTS.get(p.question, ())]),
                                             names)]


def check_general_retain(base: str) -> None:
    """`--retain general` needs a pretrained base: it answers the questions."""
    if base == "tiny":
        raise ConfigError("--retain general: the tiny base is trained from scratch and knows no general facts to "
                          "keep; give a pretrained --base (e.g. smollm2-135m), or a retain file")


def check_retain(retain: str | os.PathLike[str] | None, base: str) -> str | None:
    """`--retain` of bench and sweep, checked before any work: None, "general" (a pretrained base), or a readable,
    non-empty QA file (returned as an absolute path: jobs and presets are used from elsewhere)."""
    if retain is None:
        return None
    if str(retain) == GENERAL_RETAIN:
        check_general_retain(base)
        return GENERAL_RETAIN
    p = Path(retain)
    if not p.is_file():
        raise DataError(f"--retain {retain}: no such file; give a QA file (.json/.jsonl: question, answer per item), "
                        "or 'general' (with a pretrained --base)")
    if not load_file(p):
        raise DataError(f"--retain {retain}: the file holds no QA items; give a non-empty retain set")
    return str(p.resolve())


def general_retain_file(out: Path, scen, base: str, say: Callable[[str], None]) -> str:
    """OUT/retain-general.jsonl: general_retain(scen) answered by `base`, written once and reused (a benchmark's or
    a sweep's every run trains on the same set); written again when OUT's copy came from another base or retain
    set (OUT/retain-general.key says which)."""
    from obliviate.models.bases import resolve_base
    from obliviate.models.loading import load_model_and_tokenizer

    f, key_file = out / "retain-general.jsonl", out / "retain-general.key"
    key = stable_hash([base, scen.unlearn_retain.digest, list(GENERAL_QUESTIONS)])
    if f.is_file() and key_file.is_file() and key_file.read_text() == key:
        return str(f)
    if f.is_file():
        say(f"{f.name} here was written for another base or retain set: writing it again")
    say(f"retain set: the scenario's, plus the general-knowledge questions answered by {base}")
    write_records(f, general_retain(scen, *load_model_and_tokenizer(resolve_base(base))))
    atomic_write_text(key_file, key)
    return str(f)


def synthesize(model, tokenizer, spec: RehearsalSpec, avoid: Sequence[str], *, rounds: int = 4) -> list[QA]:
    """Up to `spec.n` (question, answer) pairs answered by `model` itself (see the module docstring): the questions
    given (`spec.source`) or sampled from `spec.instruction`, distinct and none close to a question in `avoid`;
    the answers greedy. With `source=known` every listed question is asked and the first `spec.n` answers that
    state the question's reference answer are kept (data/general.states): facts the base already knows."""
    fmt = Formatter(tokenizer, "auto")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.eos_id
    avoid_l = list(dict.fromkeys(avoid))
    given = spec.given_questions()
    known = spec.source == "known"
    questions = (_sampled_questions(model, tokenizer, fmt, pad, spec, avoid_l, rounds) if given is None else
                 [q for q in dict.fromkeys(given) if _clear_of(q, avoid_l, spec.guard)][:None if known else spec.n])
    answers = generate_pass(model, [fmt.prompt_ids(q) for q in questions], pad, fmt.eos_id, spec.answer_tokens)
    pairs = [(q, whole_sentences(tokenizer.decode(a, skip_special_tokens=True), spec.answer_sentences))
             for q, a in zip(questions, answers, strict=True)]
    if known:
        pairs = [(q, a) for q, a in pairs if states(a, GENERAL_FACTS[q])][:spec.n]
    return [QA(f"rehearsal-{i}", q, a) for i, (q, a) in enumerate(p for p in pairs if p[1])]


def _clear_of(question: str, avoid: Sequence[str], guard: float) -> bool:
    """Whether `question` restates none of `avoid` (ROUGE-L F1 below `guard` with each)."""
    return all(rouge_l_f1(question, a) < guard for a in avoid)


def _sampled_questions(model, tokenizer, fmt: Formatter, pad: int, spec: RehearsalSpec, avoid: list[str],
                       rounds: int) -> list[str]:
    """Up to `spec.n` distinct questions the base writes from `spec.instruction`, none close to one in `avoid`."""
    prompt = fmt.prompt_ids(spec.instruction)
    torch.manual_seed(spec.seed)
    questions: list[str] = []
    seen: set[str] = set()
    for _ in range(rounds):
        draws = sample_pass(model, [prompt], pad, fmt.eos_id, spec.question_tokens, 2 * spec.n,
                            temperature=spec.temperature, top_p=spec.top_p, batch_size=2 * spec.n)[0]
        for ids in draws:
            q = clean_question(tokenizer.decode(ids, skip_special_tokens=True))
            if q is None or q.lower() in seen:
                continue
            seen.add(q.lower())
            if _clear_of(q, avoid, spec.guard):
                questions.append(q)
            if len(questions) == spec.n:
                break
        if len(questions) == spec.n:
            break
    return questions
