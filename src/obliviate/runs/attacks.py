"""Recovery attacks: does the forgotten knowledge come back when someone tries?

Each attack measures the forget set before and after, on the unlearned model AND on the original target, and
reports the recovery ratio = forget ROUGE-L recall after / before (how much of what was measured before the
attack is there after it; > 1 means the attack brought knowledge back). Given a control, a model that never
learned the forget set (the scenario's retain model), the attack runs on it too: what an attack gives the control
is what it teaches from nothing, so an unlearned model that ends far above the control (ROUGE-L, and above all
the answers' probability) had the knowledge hidden, not removed. The attacks:
- relearn: fine-tune for a few steps on one half of the forget set, measure the OTHER half (Hu et al. 2024:
  unlearned knowledge often returns after brief relearning on related data);
- paraphrase: ask the forget questions in other words (TOFU's paraphrased_question);
- quantize: round the weights to 8 and 4 bits (per output channel, symmetric) — rounding is known to undo small
  unlearning updates (Zhang et al. 2024);
- prefix: give the first part of each forget answer and greedily generate the rest."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from obliviate.config import Config, build_config
from obliviate.data.records import QA, Split
from obliviate.data.templates import resolve_tokenize
from obliviate.errors import DataError
from obliviate.eval import metrics as M
from obliviate.eval.runner import ModelRunner, PassProgress
from obliviate.methods.base import TrainConfig
from obliviate.methods.common import FinetuneNLL
from obliviate.methods.engine import train
from obliviate.models.loading import fingerprint, load_model_and_tokenizer
from obliviate.registry import Registry
from obliviate.runs.common import check_model, load_model, load_scenario
from obliviate.utils.io import atomic_dir, atomic_write_json, claim_output, read_json
from obliviate.utils import dist

log = logging.getLogger(__name__)


class AttackConfig(Config):
    """Attack settings. relearn: `steps` optimiser steps at `lr` (batch `batch_size`) on a `fraction` of the
    forget set (seeded split), measured on the rest. quantize: `bits` (8 and 4). prefix: `prefix_fraction` of
    each answer's tokens given. `max_new_tokens` for every generation."""

    steps: int = Field(10, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    fraction: float = Field(0.5, gt=0, lt=1)
    seed: int = 0
    bits: list[int] = Field([8, 4], min_length=1)
    prefix_fraction: float = Field(0.5, gt=0, lt=1)
    max_new_tokens: int = Field(200, ge=1)


    @field_validator("bits")
    @classmethod
    def _bits_in_range(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if not 2 <= b <= 16]
        if bad:
            raise ValueError(f"bits must lie in 2..16 (rounding to {bad[0]} bits is not a quantisation)")
        return v


def forget_scores(model, tok, records: Sequence[QA], max_new_tokens: int, questions: Sequence[str] | None = None,
                  progress: PassProgress | None = None) -> dict[str, float]:
    """Mean ROUGE-L recall of greedy answers and mean probability of the true answers."""
    qs = list(questions) if questions is not None else [r.question for r in records]
    recs = [r.with_(question=q) for r, q in zip(records, qs, strict=True)]
    runner = ModelRunner(model, tok, max_new_tokens=max_new_tokens, name="attack", progress=progress,
                         tokenize=resolve_tokenize("auto", model))
    split = Split("attack", tuple(recs))
    gens = runner.generations(split)
    stats = runner.split_stats(split)["answer"]
    return {"rougeL": float(np.mean([M.rouge_l_recall(g, r.answer) for g, r in zip(gens, recs, strict=True)])),
            "prob": float(np.mean([M.probability(s.logps) for s in stats]))}


def ratio(after: float, before: float) -> float | None:
    return None if before <= 0 else after / before


AttackFn = Callable[..., dict[str, Any]]  # (model, tok, forget, cfg, progress) -> result
ATTACKS: Registry[AttackFn] = Registry("attack")


@ATTACKS.register("relearn")
def relearn(model, tok, forget: Sequence[QA], cfg: AttackConfig, progress: PassProgress | None = None) -> dict[str, Any]:
    """Fine-tune briefly on one part of the forget set; measure the other part before and after."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(forget)).tolist()
    k = max(1, min(len(forget) - 1, round(len(forget) * cfg.fraction)))
    if len(forget) < 2:
        raise DataError("the relearning attack needs at least 2 forget items (one to train on, one to measure)")
    train_part = [forget[i] for i in sorted(order[:k])]
    held = [forget[i] for i in sorted(order[k:])]
    before = forget_scores(model, tok, held, cfg.max_new_tokens, progress=progress)
    spe = math.ceil(len(train_part) / cfg.batch_size)
    tcfg = TrainConfig(lr=cfg.lr, epochs=math.ceil(cfg.steps / spe), batch_size=cfg.batch_size, warmup_epochs=0,
                       weight_decay=0.0, seed=cfg.seed)
    with tempfile.TemporaryDirectory(prefix="obliviate-relearn-") as d:
        attacked, state = train(FinetuneNLL(tcfg), copy.deepcopy(model), tok, train_part, [], Path(d))
    after = forget_scores(attacked.eval(), tok, held, cfg.max_new_tokens, progress=progress)
    return {"before": before, "after": after, "steps": state.step, "trained_on": len(train_part),
            "measured_on": len(held)}


@ATTACKS.register("paraphrase")
def paraphrase(model, tok, forget: Sequence[QA], cfg: AttackConfig,
               progress: PassProgress | None = None) -> dict[str, Any]:
    """The forget metrics on paraphrased questions."""
    recs = [r for r in forget if r.paraphrased_question]
    if not recs:
        raise DataError("the paraphrase attack needs forget records with 'paraphrased_question' (TOFU's "
                        "forgetNN_perturbed and the synthetic scenario have them)")
    before = forget_scores(model, tok, recs, cfg.max_new_tokens, progress=progress)
    after = forget_scores(model, tok, recs, cfg.max_new_tokens, [r.paraphrased_question for r in recs], progress)
    return {"before": before, "after": after, "measured_on": len(recs)}


def quantize_weights(model, bits: int):
    """A copy with every Linear/Embedding weight rounded to `bits` (symmetric, per output channel: each row is
    scaled by its absmax / (2^(bits-1) − 1), rounded, and scaled back)."""
    q = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                w = mod.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
                w.copy_(torch.round(w / scale).clamp(-levels, levels) * scale)
    return q.eval()


@ATTACKS.register("quantize")
def quantize(model, tok, forget: Sequence[QA], cfg: AttackConfig, progress: PassProgress | None = None) -> dict[str, Any]:
    """Round the weights to 8 and 4 bits and re-evaluate the forget set."""
    before = forget_scores(model, tok, forget, cfg.max_new_tokens, progress=progress)
    per_bits = {str(b): forget_scores(quantize_weights(model, b), tok, forget, cfg.max_new_tokens, progress=progress)
                for b in cfg.bits}
    worst = max(per_bits.values(), key=lambda s: s["rougeL"])
    return {"before": before, "after": worst, "per_bits": per_bits, "measured_on": len(forget)}


@ATTACKS.register("prefix")
def prefix(model, tok, forget: Sequence[QA], cfg: AttackConfig, progress: PassProgress | None = None) -> dict[str, Any]:
    """Give the first part of each answer; measure how much of the rest the model completes (greedy)."""
    runner = ModelRunner(model, tok, max_new_tokens=cfg.max_new_tokens, name="attack", progress=progress,
                         tokenize=resolve_tokenize("auto", model))
    prompts, rests = [], []
    for r in forget:
        ids, boundary = runner.fmt.split(r.question, r.answer, eos=False)  # the model's own token boundary
        ans = ids[boundary:]
        k = max(1, int(len(ans) * cfg.prefix_fraction))
        if k >= len(ans):
            continue
        prompts.append(ids[:boundary + k])
        rests.append(tok.decode(ans[k:], skip_special_tokens=True))
    if not prompts:
        raise DataError("the prefix attack needs forget answers of at least 2 tokens")
    conts = runner.generate_ids(prompts, cfg.max_new_tokens)
    after = float(np.mean([M.rouge_l_recall(tok.decode(c, skip_special_tokens=True), rest)
                           for c, rest in zip(conts, rests, strict=True)]))
    before = forget_scores(model, tok, forget, cfg.max_new_tokens, progress=progress)
    return {"before": before, "after": {"rougeL": after}, "measured_on": len(prompts)}


def run_attack(name: str, model, tok, forget: Sequence[QA], cfg: AttackConfig,
               progress: PassProgress | None = None) -> dict[str, Any]:
    res = ATTACKS.get(name)(model, tok, forget, cfg, progress)
    res["recovery"] = ratio(res["after"]["rougeL"], res["before"]["rougeL"])
    return res


def input_model_of(model: str | os.PathLike[str]) -> str | None:
    """The model an obliviate output was unlearned from (its manifest's input model), when that is a local
    directory: the default comparison target of `obliviate attack`."""
    man = Path(model) / "manifest.json"
    try:
        name = (read_json(man).get("input_model") or {}).get("name") if man.is_file() else None
    except (ValueError, OSError, AttributeError):  # an unreadable manifest: no default target, not a crash
        return None
    if isinstance(name, str) and name and (Path(name) / "config.json").is_file():
        return name
    return None


def attack(model, scenario, name: str, *, target=None, control=None, out: str | os.PathLike[str] | None = None,
           overwrite: bool = False, config: dict[str, Any] | None = None,
           progress: PassProgress | None = None) -> dict[str, Any]:
    """Run one recovery attack on `model` and, for comparison, on the original `target` and on a `control` that
    never learned the forget set (the retain model); each a model path or (model, tokenizer) pair, default none.
    Writes `attack.json` to `out` when given. `progress(description, done, total)` follows each model pass."""
    dist.require_single_process("attack")
    ATTACKS.get(name)
    cfg = build_config(AttackConfig, config or {}, where="attack config")
    inputs = [x for x in (model, target, control) if x is not None and not isinstance(x, tuple)]
    guard = claim_output(out, overwrite, inputs=inputs) if out is not None else contextlib.nullcontext()
    with guard:
        scen = load_scenario(scenario)
        forget = list(scen.forget.records)
        roles = [(role, src) for role, src in (("unlearned", model), ("target", target), ("control", control))
                 if src is not None]
        for _, src in roles:  # a bad --target or --control fails in seconds, not after the first attack
            check_model(src)
        result: dict[str, Any] = {"attack": name, "config": cfg.model_dump()}
        for role, src in roles:  # one model in memory at a time
            m, tok, label = load_model(src, "model" if role == "unlearned" else role)
            result["model" if role == "unlearned" else f"{role}_model"] = label
            result[role] = run_attack(name, m, tok, forget, cfg, progress)
            del m, tok
        if out is not None:
            with atomic_dir(out, overwrite=True) as tmp:
                atomic_write_json(tmp / "attack.json", result)
    return result


def attack_rows(rows: list[dict[str, Any]], out: Path, scen, names: list[str], target: Path,
                say: Callable[[str], None], retain: Path | None = None) -> None:
    """bench --attacks: add `attack_<name>_after`, `attack_<name>_prob_after` and `attack_<name>_recovery` columns
    to each method's row, and to the target's and the retain model's (the control: what the attack gives a model
    that never learned the forget set)."""
    forget = list(scen.forget.records)
    cfg = AttackConfig()
    for r in rows:
        model_dir = {"target": target, "retain": retain}.get(r["name"], out / "runs" / r["name"])
        if r.get("error") or model_dir is None or not (model_dir / "config.json").is_file():
            continue
        cache = out / "attacks" / f"{r['name']}.json"
        m, tok = load_model_and_tokenizer(model_dir)
        key = {"model": fingerprint(m), "config": cfg.model_dump()}  # a rerun method or new settings: attack anew
        done = read_json(cache) if cache.is_file() else {}
        if done.get("key") != key:
            done = {"key": key}
        for a in names:
            if a not in done:
                say(f"attack {a} on {r['name']}")
                done[a] = run_attack(a, m, tok, forget, cfg)
                atomic_write_json(cache, done)
            r[f"attack_{a}_after"] = done[a]["after"]["rougeL"]
            if "prob" in done[a]["after"]:  # the prefix attack scores continuations only
                r[f"attack_{a}_prob_after"] = done[a]["after"]["prob"]
            r[f"attack_{a}_recovery"] = done[a]["recovery"]
