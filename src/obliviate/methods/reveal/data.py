"""The data Reveal-and-Release makes for itself: the round's training examples from what the model revealed, the
neutral retain data, and the utility probe."""

from __future__ import annotations

import random
from collections.abc import Sequence

from obliviate.data.instructions import NEUTRAL_NAMES, NEUTRAL_PROMPTS, Instruction
from obliviate.data.records import QA
from obliviate.data.templates import Formatter
from obliviate.eval.passes import answer_nll
from obliviate.methods.reveal.reveal import Candidate, generate


def forget_examples(cands: Sequence[Candidate], pool: list[Instruction], cross_pairs: int, rng: random.Random,
                    t: int) -> list[QA]:
    """The round's training set: each revealed answer under the prompt that drew it out, and under `cross_pairs`
    other instructions about the same target (drawn at random from the pool) [ours: a revealed answer is about the
    target whatever was asked; pairing it with several questions makes the module suppress it for the target,
    not for one phrasing — with a small model that keys on surface forms this is what reaches the question
    forms the model was trained on]."""
    out = []
    for k, c in enumerate(cands):
        out.append(QA(id=f"rr{t}:{k}", question=c.prompt, answer=c.text, subject=c.target))
        others = [i for i in pool if i.render(c.target) != c.prompt]
        for j, ins in enumerate(rng.sample(others, min(cross_pairs, len(others)))):
            out.append(QA(id=f"rr{t}:{k}:{j}", question=ins.render(c.target), answer=c.text, subject=c.target))
    return out


def neutral_records(model, tokenizer, fmt: Formatter, pool: list[Instruction], keep_names: Sequence[str], n: int,
                    max_new_tokens: int, batch_size: int, seed: int) -> list[QA]:
    """Self-generated retain data: the model's greedy answers to pool instructions about `keep_names` and the
    invented NEUTRAL_NAMES, and to the name-free NEUTRAL_PROMPTS; about `n` items. Called once, before any
    release, so the retain term anchors to the input model θ₀."""
    rng = random.Random(seed)
    names = list(dict.fromkeys([*keep_names, *NEUTRAL_NAMES]))
    per_name = max(1, (n - len(NEUTRAL_PROMPTS)) // max(1, len(names)))
    prompts = [i.render(x) for x in names for i in rng.sample(pool, min(per_name, len(pool)))] + list(NEUTRAL_PROMPTS)
    answers = generate(model, tokenizer, fmt, prompts, max_new_tokens, batch_size=batch_size)
    pairs = zip(prompts, answers, strict=True)
    return [QA(id=f"neutral:{k}", question=p, answer=a[0]) for k, (p, a) in enumerate(pairs) if a[0].strip()]


def split_probe(retain: list[QA], size: int, seed: int) -> tuple[list[QA], list[QA], bool]:
    """(probe, training retain data, held out?): a random `size` items are held out of the retain term when the
    set has at least twice that many, so the probe measures damage the retain term did not train against;
    smaller sets are shared."""
    if len(retain) < 2 * size:
        return retain[:size], retain, False
    idx = set(random.Random(seed).sample(range(len(retain)), size))
    return ([r for i, r in enumerate(retain) if i in idx], [r for i, r in enumerate(retain) if i not in idx], True)


def mean_answer_nll(model, tokenizer, fmt: Formatter, records: Sequence[QA], batch_size: int = 32) -> float:
    """The utility probe: mean over records of each record's mean answer-token NLL (answer + EOS), the
    model-pass service's `sequence_mean`; nan for no records."""
    return float(answer_nll(model, fmt.encode_qa(list(records)), "sequence_mean", pad_id=tokenizer.pad_token_id,
                            batch_size=batch_size))
