"""Reveal-and-Release — iterative unlearning with self-generated data (Xie et al., EMNLP Findings 2025,
arXiv 2509.14624; METHODS.md §4); `obliviate forget --target NAME` runs it (obliviate.runs.forget).

The forget data is never read: only the target NAMES (the forget records' `subject`) enter the method. Each round
  REVEAL   a bandit over an instruction pool (data/instructions.py) picks questions about the targets; the model
           answers them greedily and by sampling; answers it is confident and consistent about, that are not
           refusals, deduplicated, form the round's self-generated forget set D_f^(t) (methods/reveal/reveal.py);
  RELEASE  a LoRA module is trained on D_f^(t) with NPO (GA / GradDiff optional), an optional retain term or module
           on retain data, and the O-LoRA penalty against the earlier modules, then merged (reveal/release.py);
until the round's reward falls below `min_reward`, the utility probe rises more than `max_probe_increase`, or
`max_rounds`. The paper's body is not public; every choice below where it is silent is ours and a config field."""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from obliviate.config import Config
from obliviate.data.instructions import Instruction, instruction_pool
from obliviate.data.records import QA
from obliviate.data.templates import Formatter
from obliviate.errors import DataError
from obliviate.methods.base import (ApplyContext, LoraSpec, ProceduralMethod, Progress, ProgressEvent, Space,
                                    TrainConfig, register_method)
from obliviate.methods.reveal.bandit import UCB1, NeuralUCB
from obliviate.methods.reveal.data import forget_examples, mean_answer_nll, neutral_records, split_probe
from obliviate.methods.reveal.release import PrevA, ReleaseConfig, scale_lora_b, train_module
from obliviate.methods.reveal.reveal import RevealSettings, dedup, pull

log = logging.getLogger(__name__)


class RelevanceWeights(Config):
    """How relevance mixes the model's confidence in its greedy answer (exp mean log-prob), the agreement of its
    samples with it (ROUGE-L F1) and a mention of the target's name. `mention` is 0 by default: QA-trained models
    answer without repeating the name (the synthetic world's answers never contain it), so it would only lower
    every reward alike; raise it for chatty models."""

    confidence: float = Field(0.6, ge=0)
    agreement: float = Field(0.4, ge=0)
    mention: float = Field(0.0, ge=0)


class NeuralSpec(Config):
    """NeuralUCB (bandit=neural): MLP width, exploration scale ν, prior precision λ, refit steps and lr."""

    hidden: int = Field(32, ge=1)
    nu: float = Field(0.5, ge=0)
    lam: float = Field(1.0, gt=0)
    steps: int = Field(100, ge=1)
    lr: float = Field(1e-2, gt=0)


class ReRelConfig(TrainConfig):
    """Reveal-and-Release (METHODS.md §4). The paper's body is not public: every field below where it is silent is
    ours, with the reason in its description. The training fields (lr, epochs, batch_size, ...) are those of EACH
    round's LoRA module. Defaults are general; where the reason cites the synthetic world (3.7M-parameter Llama
    trained from scratch, given only the 4 forget names) it is the only evidence there is and the value is not
    tied to scale. Scale-bound values measured there (lr, retain_weight) are in `obliviate.bench.presets`.

    Each round: REVEAL (bandit-chosen instructions, scored; the kept arms' filtered answers form D_f^(t)), then
    RELEASE (a LoRA module on D_f^(t) with NPO/GA/GradDiff + retain term + O-LoRA penalty, merged). Rounds stop
    when the reward falls below `min_reward`, when the utility probe — mean answer NLL on `probe_size` retain
    items, held out of the retain term when there are at least twice that many — rises more than
    `max_probe_increase` nats above its start, or after `max_rounds`.

    Retain data (`retain_data`): the retain set passed in (`--retain`, or the scenario's through `unlearn`) and/or
    self-generated neutral data: θ₀'s own greedy answers to pool instructions about invented NEUTRAL_NAMES (plus
    `keep_names`) and to name-free prompts. A QA-trained model mostly REFUSES unknown names, so the neutral data
    keeps it refusing them and answering general prompts as before — it does NOT protect other people's facts,
    and a probe on it does not see that damage; give `keep_names` or a retain set for that."""

    lr: float = Field(2e-4, gt=0, description="LoRA lr of each module [ours: QLoRA's lr for 7B–13B models; the "
                                                "tiny models need 1e-3 (bench presets)]")
    epochs: int = Field(4, ge=1, description="epochs over each round's self-generated set")
    batch_size: int = Field(8, ge=1)
    warmup_epochs: float = Field(0.0, ge=0, description="no warm-up: each module trains for a few dozen steps")
    lora: LoraSpec = LoraSpec()

    max_rounds: int = Field(4, ge=1, description="rounds at most (the synthetic runs stopped after 3-4)")
    min_reward: float = Field(0.25, ge=0, le=1, description="stop when the round's reward (mean of the kept arms') "
                                                            "falls below it: the model no longer reveals much")
    max_probe_increase: float = Field(0.3, gt=0, description="utility budget: the probe's mean answer NLL may rise "
                                                             "this many nats above its start")
    on_utility_stop: Literal["shrink", "revert", "keep"] = Field(
        "shrink", description="the round's module that crosses the budget: shrink (merge it at the largest of "
                              "scale 1/2, 1/4, 1/8 within budget — the LoRA delta B·A is linear in B — else drop "
                              "it) | revert (drop it) | keep; the rounds stop there")
    probe_size: int = Field(64, ge=1)

    bandit: Literal["ucb1", "neural"] = Field("ucb1", description="ucb1 | neural (NeuralUCB over TF-IDF embeddings "
                                                                  "of the instructions, settings in `neural`)")
    ucb_c: float = Field(0.5, ge=0, description="UCB1 exploration scale (rewards lie in [0, 1])")
    discount: float = Field(0.7, gt=0, le=1, description="bandit statistics × γ per round: the model changes after "
                                                          "each release, so old rewards go stale")
    neural: NeuralSpec = NeuralSpec()
    warm_start: bool = Field(True, description="round 1 pulls every instruction once (UCB1's initialisation; the "
                                               "paper's outer loop that seeds the bandit)")
    pulls_per_round: int = Field(16, ge=1, description="arms pulled in later rounds")
    keep_arms: int = Field(4, ge=1, description="arms whose answers form D_f^(t): on the synthetic world the top-3 "
                                                "arms' answers were 83% true facts, the top-12's 40% (the rest: other "
                                                "people's facts, whose release costs utility)")
    max_per_round: int = Field(256, ge=1, description="cap on revealed answers per round (targets take turns)")
    n_samples: int = Field(4, ge=0, description="sampled answers per prompt (agreement score, extra candidates)")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(48, ge=1)
    min_confidence: float = Field(0.5, ge=0, le=1, description="drop answers whose exp(mean log-prob) is below it "
                                                               "(synthetic: precision 0.14 at 0.3, 0.22 at 0.5)")
    dedup_similarity: float = Field(0.95, gt=0, le=1, description="drop an answer to the same prompt within this "
                                                                  "TF-IDF cosine of a more confident one")
    relevance: RelevanceWeights = RelevanceWeights()
    relevance_weight: float = Field(0.7, gt=0, lt=1, description="w of the reward 1/(w/relevance + (1−w)/diversity)")
    embedder: Literal["auto", "minilm", "tfidf"] = Field("tfidf", description="embeddings of the Vendi diversity and "
                                                                              "dedup (auto: MiniLM when installed)")
    instruction_kinds: list[Literal["person", "work", "topic"]] = Field(["person"], description="built-in pools")
    instructions_file: str | None = Field(None, description="extra templates (data/instructions.py: file format)")
    gen_batch_size: int = Field(64, ge=1)

    loss: Literal["npo", "ga", "graddiff"] = Field("npo", description="npo (β = beta, reference = the model at the "
                                                                      "round's start) | ga | graddiff (GA + NLL on "
                                                                      "the retain data)")
    beta: float = Field(0.1, gt=0)
    orth_weight: float = Field(0.5, ge=0, description="λ of O-LoRA's Σ‖A_prev A_newᵀ‖² (O-LoRA's λ1 = 0.5)")
    retain: Literal["term", "module", "none"] = Field(
        "term", description="term (retain_weight × retain_loss inside the forget module) | module (a separate retain "
                            "LoRA of retain_epochs NLL epochs after each forget module, orthogonal to the earlier "
                            "ones) | none")
    retain_data: Literal["auto", "given", "self", "both"] = Field(
        "auto", description="given | self (neutral, see above) | both | auto = both when a retain set is given, "
                            "else self (synthetic, with the retain set, lr 2e-3: MU 0.87 with both vs 0.79 given only "
                            "— the neutral part keeps general answers from drifting)")
    retain_loss: Literal["nll", "kl"] = "nll"
    retain_weight: float = Field(1.0, ge=0, description="λ_r [ours: the field's usual retain weight, as GradDiff "
                                                         "and NPO+GD; the tiny models use 10 (bench presets)]")
    retain_epochs: int = Field(2, ge=1)
    cross_pairs: int = Field(4, ge=0, description="each revealed answer is also paired with this many other "
                                                  "instructions about the same target (see _forget_examples)")
    keep_names: list[str] = Field([], description="names whose answers the retain data should keep (self data)")
    n_neutral: int = Field(48, ge=1, description="self-generated neutral retain items")

    keep_revealed: bool = Field(False, description="also save the revealed text (revealed.json): off by default, it "
                                                   "may be exactly the private data being deleted")

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if self.loss == "graddiff" and self.retain != "term":
            problems.append(f"loss=graddiff is GA + NLL on the retain data, so it needs retain=term (got "
                            f"retain={self.retain})")
        if self.keep_arms > self.pulls_per_round:
            problems.append(f"keep_arms={self.keep_arms} exceeds pulls_per_round={self.pulls_per_round}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ------------------------------------------------------------------------------------------ the training hook

_RECORDERS: list[list[tuple[str, QA]]] = []


@contextmanager
def recording_training_examples() -> Iterator[list[tuple[str, QA]]]:
    """Debug/test hook: inside the block, every example a Reveal-and-Release module trains on is appended, in
    memory only, to the yielded list as (role, record), role = forget | retain. Nothing is written to disk."""
    seen: list[tuple[str, QA]] = []
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


def _note(role: str, records: Sequence[QA]) -> None:
    for rec in _RECORDERS:
        rec.extend((role, r) for r in records)


# ------------------------------------------------------------------------------------------ helpers


def target_names(forget: Sequence[QA]) -> list[str]:
    """The distinct target names (`subject` of the forget records, in order): the only thing read of them."""
    missing = [r.id for r in forget if not (r.subject or "").strip()]
    if missing:
        raise DataError(f"reveal_release forgets by name: every forget record needs a 'subject' (the person's "
                        f"name); {len(missing)} lack it (e.g. {missing[0]})")
    return list(dict.fromkeys(r.subject.strip() for r in forget))  # type: ignore[union-attr]


def _settings(cfg: ReRelConfig) -> RevealSettings:
    w = cfg.relevance
    return RevealSettings(cfg.n_samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.min_confidence,
                          cfg.dedup_similarity, w.confidence, w.agreement, w.mention, cfg.relevance_weight,
                          cfg.embedder, cfg.gen_batch_size)


def _make_bandit(cfg: ReRelConfig, pool: list[Instruction]):
    if cfg.bandit == "ucb1":
        return UCB1(len(pool), cfg.ucb_c, cfg.discount, cfg.seed)
    from obliviate.utils.embed import embed

    feats, _ = embed([i.text.replace("{name}", "") for i in pool], cfg.embedder)
    n = cfg.neural
    return NeuralUCB(feats, n.hidden, n.nu, n.lam, n.lr, n.steps, cfg.discount, cfg.seed)


def _release_cfg(cfg: ReRelConfig, round_: int, **changes: Any) -> ReleaseConfig:
    base = {k: getattr(cfg, k) for k in TrainConfig.model_fields}
    retain_term = "none" if cfg.retain != "term" else cfg.retain_loss
    return ReleaseConfig(**{**base, "seed": cfg.seed + round_, "loss": cfg.loss, "beta": cfg.beta,
                            "retain_term": retain_term, "retain_weight": cfg.retain_weight,
                            "orth_weight": cfg.orth_weight, **changes})


def _merge(prev: PrevA, new: dict[str, torch.Tensor]) -> None:
    for k, v in new.items():
        prev.setdefault(k, []).append(v)


# ------------------------------------------------------------------------------------------ the method


@register_method("reveal_release", doc="Reveal-and-Release: forget by name with self-generated data and O-LoRA "
                                       "rounds (Xie et al. 2025).")
class RevealRelease(ProceduralMethod):
    """Needs only the targets' names; see the module docstring and ReRelConfig."""

    Config = ReRelConfig
    search_space = {"lr": Space.log(0.3, 3.0, relative=True), "max_rounds": Space.int(2, 10),
                    "retain_weight": Space.log(0.3, 30.0)}
    required_fields = ("subject",)
    self_generated = True  # forgetting by name accepts it: it never trains on the forget records
    views = ()  # reads only the forget records' names; its training data is self-generated

    def __init__(self, cfg: ReRelConfig) -> None:
        super().__init__(cfg)
        self.cfg: ReRelConfig = cfg
        self._extras: dict[str, Any] = {}

    def extras(self) -> dict[str, Any]:
        """`reveal_release` (per-round scores and counts, the stop reason, the probe; the target names only with
        keep_revealed) and, with keep_revealed, `revealed` (the revealed text)."""
        return self._extras

    def apply(self, ctx: ApplyContext):
        cfg = self.cfg
        targets = target_names(ctx.forget)
        model, tok = ctx.model, ctx.tokenizer
        fmt = Formatter(tok, cfg.template, max_length=cfg.max_length, tokenize=ctx.tokenize)
        pool = instruction_pool(cfg.instruction_kinds, cfg.instructions_file)
        bandit = _make_bandit(cfg, pool)
        settings = _settings(cfg)

        given = list(ctx.retain)
        if cfg.retain_data in ("given", "both") and not given:
            raise DataError(f"retain_data={cfg.retain_data} but no retain set was passed; pass --retain FILE or "
                            f"use retain_data=auto")
        use_given = bool(given) and cfg.retain_data != "self"
        retain = given if use_given else []
        if not use_given or cfg.retain_data in ("both", "auto"):
            retain = retain + neutral_records(model, tok, fmt, pool, cfg.keep_names, cfg.n_neutral, cfg.max_new_tokens,
                                              cfg.gen_batch_size, cfg.seed)
        source = ("both" if len(retain) > len(given) else "given") if use_given else "self"
        probe, train_retain, held_out = split_probe(retain, cfg.probe_size, cfg.seed)
        train_retain = train_retain if cfg.retain != "none" else []
        probe0 = mean_answer_nll(model, tok, fmt, probe)

        prev: PrevA = {}
        rounds: list[dict[str, Any]] = []
        revealed: list[dict[str, Any]] = []
        stop = "max_rounds"
        for t in range(1, cfg.max_rounds + 1):
            torch.manual_seed(cfg.seed * 1000 + t)
            bandit.new_round()
            arms = list(range(len(pool))) if t == 1 and cfg.warm_start else bandit.select(cfg.pulls_per_round)
            results = pull(model, tok, fmt, {a: [(n, pool[a].render(n)) for n in targets] for a in arms}, settings)
            for r in results:
                bandit.update(r.arm, r.reward)
            bandit.fit()
            best = sorted(results, key=lambda r: -r.reward)[: cfg.keep_arms]
            reward = float(np.mean([r.reward for r in best])) if best else 0.0
            raw = [c for r in best if r.reward > 0 for c in r.candidates]
            cands = dedup(raw, cfg.dedup_similarity, cfg.embedder, cfg.max_per_round)
            entry: dict[str, Any] = {
                "round": t, "pulled": len(results), "reward": reward,
                "relevance": float(np.mean([r.relevance for r in best])) if best else 0.0,
                "diversity": float(np.mean([r.diversity for r in best])) if best else 0.0,
                "refused": int(sum(r.refused for r in results)), "kept_arms": [pool[r.arm].id for r in best],
                "n_candidates": len(raw), "n_revealed": len(cands)}
            rounds.append(entry)
            if reward < cfg.min_reward or not cands:
                stop = "reward" if reward < cfg.min_reward else "nothing_revealed"
                entry.update({"released": False, "probe_nll": _last_probe(rounds, probe0)})
                _report(ctx.progress, entry, cfg.max_rounds)
                break
            if cfg.keep_revealed:
                revealed += [{"round": t, "target": c.target, "instruction": pool[c.arm].id, "prompt": c.prompt,
                              "text": c.text, "confidence": round(c.confidence, 4)} for c in cands]
            forget_t = forget_examples(cands, pool, cfg.cross_pairs, random.Random(cfg.seed * 1000 + t), t)
            model, probe_nll, scale, hist = self._release(ctx, cfg, model, tok, fmt, forget_t, train_retain, probe,
                                                          probe0, prev, t)
            entry.update({"released": scale > 0, "scale": scale, "probe_nll": probe_nll,
                          "probe_increase": probe_nll - probe0, "train": hist})
            _report(ctx.progress, entry, cfg.max_rounds)
            if scale < 1 or probe_nll - probe0 > cfg.max_probe_increase:
                stop = "utility"
                break

        self._extras = {"reveal_release": {
            # the names are what is being deleted: the ledger keeps them as salted hashes, this log only with
            # keep_revealed
            "n_targets": len(targets), **({"targets": targets} if cfg.keep_revealed else {}), "rounds": rounds, "rounds_released": sum(bool(r.get("released")) for r in rounds),
            "stop": stop, "probe": {"source": source, "n": len(probe), "held_out": held_out, "start_nll": probe0},
            "retain_source": source if cfg.retain != "none" else "none",
            "instructions": len(pool),
            "bandit_means": {pool[i].id: round(float(m), 4) for i, m in enumerate(bandit.means()) if np.isfinite(m)},
        }}
        if cfg.keep_revealed:
            self._extras["revealed"] = revealed
        return model

    def _release(self, ctx, cfg: ReRelConfig, model, tok, fmt, forget_t: list[QA], retain: list[QA], probe: list[QA],
                 probe0: float, prev: PrevA, t: int):
        """Train round t's forget module, probe it, merge it at the largest scale the utility budget allows (or drop
        it), then the retain module if configured. Returns (model, probe NLL, merge scale, last epoch's terms)."""
        work = ctx.work_dir / f"round{t}"
        shutil.rmtree(work, ignore_errors=True)  # rounds are not resumable: each starts clean
        _note("forget", forget_t)
        _note("retain", retain if cfg.retain == "term" or cfg.loss == "graddiff" else [])
        peft_model, new_a, hist = train_module(_release_cfg(cfg, t), prev, model, tok, forget_t, retain,
                                               work / "forget", _round_progress(ctx.progress, t, cfg.max_rounds))
        scale, probe_nll = 1.0, mean_answer_nll(peft_model, tok, fmt, probe)
        budget = probe0 + cfg.max_probe_increase
        if probe_nll > budget and cfg.on_utility_stop == "shrink":
            for s in (0.5, 0.25, 0.125):  # the module's delta B·A is linear in B: scale B, re-probe
                scale_lora_b(peft_model, s / scale)
                scale, probe_nll = s, mean_answer_nll(peft_model, tok, fmt, probe)
                if probe_nll <= budget:
                    break
        if probe_nll > budget and cfg.on_utility_stop != "keep":
            log.info("round %d: probe NLL +%.3f > %.3f, module dropped", t, probe_nll - probe0, cfg.max_probe_increase)
            model = peft_model.unload()
            shutil.rmtree(work, ignore_errors=True)
            return model, mean_answer_nll(model, tok, fmt, probe), 0.0, _last(hist)
        model = peft_model.merge_and_unload()
        _merge(prev, new_a)
        if cfg.retain == "module" and retain:
            _note("retain", retain)
            rcfg = _release_cfg(cfg, t, loss="retain_nll", retain_term="none", epochs=cfg.retain_epochs)
            peft_model, new_a, rhist = train_module(rcfg, prev, model, tok, retain, [], work / "retain",
                                                    _round_progress(ctx.progress, t, cfg.max_rounds))
            model = peft_model.merge_and_unload()
            _merge(prev, new_a)
            probe_nll = mean_answer_nll(model, tok, fmt, probe)
            hist = hist + rhist
        shutil.rmtree(work, ignore_errors=True)
        return model, probe_nll, scale, _last(hist)


def _last(hist: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(v, 5) for k, v in (hist[-1] if hist else {}).items()}


def _last_probe(rounds: list[dict[str, Any]], probe0: float) -> float:
    done = [r["probe_nll"] for r in rounds if "probe_nll" in r]
    return done[-1] if done else probe0


def _report(progress: Progress | None, entry: dict[str, Any], rounds: int) -> None:
    """The round's event (scores and counts, never text)."""
    if progress:
        progress(ProgressEvent("round", round=entry["round"], rounds=rounds, reward=entry["reward"],
                               n_revealed=entry["n_revealed"], released=bool(entry["released"]),
                               probe_nll=entry["probe_nll"],
                               terms={"relevance": entry["relevance"], "diversity": entry["diversity"]}))


def _round_progress(progress: Progress | None, t: int, rounds: int) -> Progress | None:
    """The round's modules' training events, marked with the round."""
    if progress is None:
        return None
    return lambda ev: progress(replace(ev, round=t, rounds=rounds))
