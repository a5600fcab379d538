"""REVEAL: ask the model about the targets, score what it says, keep what it knows.

For a pulled instruction i and target name n the model answers the prompt i(n) once greedily and `n_samples`
times with temperature sampling. Per (i, n):

- confidence c = exp(mean log p) of the greedy answer's tokens under the model itself (its certainty);
- agreement  a = mean ROUGE-L F1 (rouge-score with stemming, the evaluation's ROUGE) between each sampled answer
  and the greedy one (a model that knows says the same thing when sampled; one that improvises does not);
- mention    m = 1 if the answer names the target in full, 0.5 for part of the name, else 0;
- relevance  r = (w_c·c + w_a·a + w_m·m) / (w_c + w_a + w_m), and r = 0 for a refusal or an empty answer.

An instruction's relevance is the mean over targets. Its diversity is its marginal Vendi gain: arms are taken in
order of relevance and each adds its (non-refused) greedy answers to the round's set S; diversity =
(Vendi(S ∪ G) − Vendi(S)) / |G| clipped to [0, 1], so a second question that only re-reveals a known fact earns
~0 (METHODS.md §4: diversity is the Vendi score of the round's responses). The reward is the weighted harmonic
mean 1 / (w/r + (1−w)/d) (0 if either is 0).

Every answer (greedy and sampled) of the kept arms becomes a candidate forget example; candidates that are
refusals, empty, or below `min_confidence` are filtered, and duplicates (the same prompt with the same normalised
answer, or an answer to the same prompt within `dedup_similarity` TF-IDF cosine) dropped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from obliviate.data.refusals import is_refusal
from obliviate.data.templates import Formatter
from obliviate.eval.metrics import rouge_l_f1
from obliviate.eval.passes import generate_pass, logprob_pass, sample_pass
from obliviate.utils.embed import embed, vendi_score

_WORDS = re.compile(r"[a-z0-9]+")


@dataclass
class Candidate:
    target: str
    arm: int
    prompt: str
    text: str
    confidence: float
    greedy: bool


@dataclass
class ArmResult:
    """One pulled instruction: its scores and the candidates it produced (after filtering)."""

    arm: int
    relevance: float
    diversity: float = 0.0
    reward: float = 0.0
    greedy: list[str] = field(default_factory=list)  # non-refused greedy answers, one per target at most
    candidates: list[Candidate] = field(default_factory=list)
    refused: int = 0


# ------------------------------------------------------------------------------------------------ generation


def generate(model, tokenizer, fmt: Formatter, prompts: Sequence[str], max_new_tokens: int, *, samples: int = 0,
             temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32) -> list[list[str]]:
    """Per prompt: the greedy answer (samples = 0) or `samples` sampled answers, decoded and stripped (the
    model-pass service's `generate_pass` / `sample_pass` on the formatted prompts). Seed torch's RNG before calling
    for reproducible samples."""
    ids = [fmt.prompt_ids(p) for p in prompts]
    pad = tokenizer.pad_token_id
    if samples:
        outs = sample_pass(model, ids, pad, fmt.eos_id, max_new_tokens, samples, temperature=temperature, top_p=top_p,
                           batch_size=batch_size)
    else:
        outs = [[o] for o in generate_pass(model, ids, pad, fmt.eos_id, max_new_tokens, batch_size)]
    return [[tokenizer.decode(t, skip_special_tokens=True).strip() for t in o] for o in outs]


@torch.no_grad()
def confidences(model, tokenizer, fmt: Formatter, pairs: Sequence[tuple[str, str]],
                batch_size: int = 32) -> list[float]:
    """exp(mean token log-prob) of each answer given its prompt (0 for an empty answer)."""
    keep = [i for i, (_, a) in enumerate(pairs) if a]
    out = [0.0] * len(pairs)
    if not keep:
        return out
    enc = fmt.encode_many([(str(i), pairs[i][0], pairs[i][1]) for i in keep], eos=False)
    stats = logprob_pass(model, enc, tokenizer.pad_token_id, batch_size)
    for i, st in zip(keep, stats, strict=True):
        out[i] = float(np.exp(st.logps.mean())) if len(st.logps) else 0.0
    return out


# ------------------------------------------------------------------------------------------------ scores


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def mention(text: str, name: str) -> float:
    t = text.lower()
    if name.lower() in t:
        return 1.0
    parts = [w for w in _words(name) if len(w) >= 3]
    return 0.5 if any(re.search(rf"\b{re.escape(w)}\b", t) for w in parts) else 0.0


def weighted_harmonic(r: float, d: float, w: float) -> float:
    """1 / (w/r + (1−w)/d): the reward of METHODS.md §4 (0 when either part is 0)."""
    if r <= 0 or d <= 0:
        return 0.0
    return 1.0 / (w / r + (1 - w) / d)


def marginal_vendi(arms: list[ArmResult], backend: str) -> None:
    """Set each arm's diversity: its greedy answers' marginal Vendi gain per answer, arms taken in order of
    relevance (so of two arms revealing the same fact, the more confident one gets the credit)."""
    texts = [t for a in arms for t in a.greedy]
    if not texts:
        return
    emb, _ = embed(texts, backend)  # (n, d), rows L2-normalised
    pos, spans = 0, {}
    for a in arms:
        spans[a.arm] = (pos, pos + len(a.greedy))
        pos += len(a.greedy)
    chosen: list[int] = []
    base = 0.0
    for a in sorted(arms, key=lambda a: -a.relevance):
        s, e = spans[a.arm]
        if e == s:
            a.diversity = 0.0
            continue
        rows = chosen + list(range(s, e))
        score = vendi_score(emb[rows])
        a.diversity = float(np.clip((score - base) / (e - s), 0.0, 1.0))
        chosen, base = rows, score


def normalise(text: str) -> str:
    return " ".join(_words(text))


def dedup(cands: list[Candidate], threshold: float, backend: str, cap: int | None = None) -> list[Candidate]:
    """Drop exact duplicates (same prompt, same normalised answer), then near-duplicates (cosine ≥ threshold)
    among the answers to the same prompt, keeping the more confident of each pair. The same answer to DIFFERENT
    prompts is kept: each pairing teaches forgetting under another phrasing. With `cap`, keep at most that many,
    taking the targets in turn (most confident first) so no target is starved."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for c in sorted(cands, key=lambda c: -c.confidence):
        key = (c.prompt, normalise(c.text))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    if threshold < 1.0 and len(unique) > 1:
        emb, _ = embed([c.text for c in unique], backend)
        kept: list[int] = []
        for i, c in enumerate(unique):
            if all(unique[j].prompt != c.prompt or float(emb[i] @ emb[j]) < threshold for j in kept):
                kept.append(i)
        unique = [unique[i] for i in kept]
    if cap is None or len(unique) <= cap:
        return unique
    by_target: dict[str, list[Candidate]] = {}
    for c in unique:
        by_target.setdefault(c.target, []).append(c)
    out: list[Candidate] = []
    while len(out) < cap:
        for lst in by_target.values():
            if lst and len(out) < cap:
                out.append(lst.pop(0))
    return out


@dataclass(frozen=True)
class RevealSettings:
    """The parts of the method's config REVEAL reads (see ReRelConfig for their meaning)."""

    n_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    min_confidence: float
    dedup_similarity: float
    w_confidence: float
    w_agreement: float
    w_mention: float
    relevance_weight: float
    embedder: str
    batch_size: int


def pull(model, tokenizer, fmt: Formatter, prompts: dict[int, list[tuple[str, str]]],
         s: RevealSettings) -> list[ArmResult]:
    """Pull the given arms: `prompts[arm]` = [(target, prompt text)]. Returns each arm's scores and candidates."""
    flat = [(arm, target, p) for arm, items in prompts.items() for target, p in items]
    texts = [p for _, _, p in flat]
    greedy = [g[0] for g in generate(model, tokenizer, fmt, texts, s.max_new_tokens, batch_size=s.batch_size)]
    sampled = generate(model, tokenizer, fmt, texts, s.max_new_tokens, samples=s.n_samples,
                       temperature=s.temperature, top_p=s.top_p, batch_size=s.batch_size) if s.n_samples else \
        [[] for _ in texts]
    pairs = [(p, g) for p, g in zip(texts, greedy, strict=True)]
    pairs += [(p, x) for p, xs in zip(texts, sampled, strict=True) for x in xs]
    conf = confidences(model, tokenizer, fmt, pairs, s.batch_size)
    g_conf, s_conf = conf[: len(texts)], conf[len(texts):]
    wsum = max(s.w_confidence + s.w_agreement + s.w_mention, 1e-12)
    results: dict[int, ArmResult] = {arm: ArmResult(arm, 0.0) for arm in prompts}
    rels: dict[int, list[float]] = {arm: [] for arm in prompts}
    k = 0
    for (arm, target, p), g, gc, xs in zip(flat, greedy, g_conf, sampled, strict=True):
        res = results[arm]
        xc, k = s_conf[k:k + len(xs)], k + len(xs)
        if not g.strip() or is_refusal(g):
            res.refused += 1
            rels[arm].append(0.0)
        else:
            agree = float(np.mean([rouge_l_f1(x, g) for x in xs])) if xs else 1.0
            rel = (s.w_confidence * gc + s.w_agreement * agree + s.w_mention * mention(g, target)) / wsum
            rels[arm].append(rel)
            res.greedy.append(g)
        for text, c, is_greedy in [(g, gc, True), *[(x, cx, False) for x, cx in zip(xs, xc, strict=True)]]:
            if text.strip() and not is_refusal(text) and c >= s.min_confidence:
                res.candidates.append(Candidate(target, arm, p, text, c, is_greedy))
    arms = list(results.values())
    for a in arms:
        a.relevance = float(np.mean(rels[a.arm])) if rels[a.arm] else 0.0
    marginal_vendi(arms, s.embedder)
    for a in arms:
        a.reward = weighted_harmonic(a.relevance, a.diversity, s.relevance_weight)
    return arms
