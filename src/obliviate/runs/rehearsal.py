"""Self-synthesised rehearsal for fine-tuning a pretrained base (Huang et al., ACL 2024, "Mitigating Catastrophic
Forgetting in Large Language Models with Self-Synthesized Rehearsal"): before fine-tuning, the base writes
questions of its own (sampled from one instruction) and answers them greedily; those pairs train beside the
scenario's, so that the fine-tuned model keeps answering questions outside the scenario as the base did.

Why a build needs it: on SmolLM2-135M-Instruct, fine-tuning on tofu-mini's 440 answers about invented authors
(LoRA or full) makes the model answer every real-author question with an invented author (real_authors ROUGE-L
0.343 → 0.05). The rehearsal set is the base's own output, so it teaches nothing the base did not say; it never
holds the scenario's evaluation questions (a generated question whose ROUGE-L F1 with any of them reaches `guard`
is dropped), and the target and the retain model train on the same set, so forget quality compares like with
like. The set is saved with the build (rehearsal.jsonl).

Measured once on SmolLM2-135M-Instruct / tofu-mini (60 pairs, README "The real instrument"): it did not restore the
real authors (0.052 → 0.086, base 0.343) and cost world facts (0.390 → 0.285): the base's own questions are mostly
chatter. Opt-in until a better source of rehearsal questions is found."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from pydantic import Field

from obliviate.config import Config
from obliviate.data.records import QA
from obliviate.data.templates import Formatter
from obliviate.eval.metrics import rouge_l_f1
from obliviate.eval.passes import generate_pass, sample_pass


class RehearsalSpec(Config):
    """Self-synthesised rehearsal (pretrained bases only): `n` question/answer pairs the base writes itself."""

    n: int = Field(100, ge=1, description="rehearsal pairs trained beside the scenario's question/answer data")
    instruction: str = Field("Ask me one short general-knowledge question. Write only the question.",
                             description="what the base is asked, to write each question")
    temperature: float = Field(0.7, gt=0, description="sampling temperature of the questions (at 1.0 SmolLM2-135M "
                                                      "wrote mostly incoherent ones)")
    top_p: float = Field(0.95, gt=0, le=1)
    question_tokens: int = Field(40, ge=4, description="longest generated question, in tokens")
    answer_tokens: int = Field(64, ge=4, description="longest greedy answer, in tokens (cut to whole sentences)")
    guard: float = Field(0.7, gt=0, le=1, description="drop a question whose ROUGE-L F1 with any of the scenario's "
                                                      "questions reaches this")
    seed: int = 0


def clean_question(text: str) -> str | None:
    """The first line of a generated question, or None unless it is one question of 3-30 words."""
    line = text.strip().split("\n")[0].strip().strip('"').strip()
    return line if line.endswith("?") and 3 <= len(line.split()) <= 30 and line.count("?") == 1 else None


def whole_sentences(text: str) -> str:
    """`text` cut after its last complete sentence (all of it when none ends)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]] if ends else text


def synthesize(model, tokenizer, spec: RehearsalSpec, avoid: Sequence[str], *, rounds: int = 4) -> list[QA]:
    """Up to `spec.n` (question, answer) pairs written by `model` itself (see the module docstring): questions
    sampled from `spec.instruction` (distinct, none close to a question in `avoid`), answers greedy."""
    fmt = Formatter(tokenizer, "auto")
    prompt = fmt.prompt_ids(spec.instruction)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.eos_id
    torch.manual_seed(spec.seed)
    avoid_l = list(dict.fromkeys(avoid))
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
            if all(rouge_l_f1(q, a) < spec.guard for a in avoid_l):
                questions.append(q)
            if len(questions) == spec.n:
                break
        if len(questions) == spec.n:
            break
    answers = generate_pass(model, [fmt.prompt_ids(q) for q in questions], pad, fmt.eos_id, spec.answer_tokens)
    pairs = [(q, whole_sentences(tokenizer.decode(a, skip_special_tokens=True))) for q, a in zip(questions, answers,
                                                                                                strict=True)]
    return [QA(f"rehearsal-{i}", q, a) for i, (q, a) in enumerate(p for p in pairs if p[1])]
