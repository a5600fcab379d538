"""The evaluation engine: per-item values from cached passes, then the named summary metrics (eval/specs.py).

`evaluate(model, scenario, reference=...)` computes every TOFU metric, extraction metrics and membership-inference
AUCs, and writes `eval.json` (per-item values keyed by stable ids), `summary.json` and `report.md` atomically.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from obliviate.config import Config
from obliviate.data.records import Split
from obliviate.data.refusals import is_refusal
from obliviate.data.scenarios import Scenario
from obliviate.errors import DataError
from obliviate.eval import metrics as M
from obliviate.eval import specs
from obliviate.eval.passes import PassCache
from obliviate.eval.runner import ModelRunner
from obliviate.eval.specs import Items, MetricSpec
from obliviate.utils import dist
from obliviate.utils.io import read_json

log = logging.getLogger(__name__)
EVAL_FORMAT = 1


class EvalConfig(Config):
    """How the evaluation runs. Defaults follow TOFU (greedy, 200 new tokens) and METHODS.md (Min-K k=0.4, EL10)."""

    template: Literal["auto", "plain", "chat"] = "auto"
    max_length: int = Field(512, ge=16)
    batch_size: int = Field(32, ge=1, description="teacher-forced pass batch size")
    gen_batch_size: int = Field(64, ge=1, description="generation batch size")
    max_new_tokens: int = Field(200, ge=1)
    el_n: int = Field(10, ge=1, description="n of the extraction likelihood EL_n")
    mink_k: float = Field(0.4, gt=0, le=1, description="share of lowest-probability tokens for Min-K%/Min-K%++")
    metrics: list[str] | None = Field(None, description="summary metrics to compute (default: all but the opt-in "
                                                         "ones; `obliviate ls metrics` lists them)")
    cache: bool = Field(True, description="cache model passes on disk by model fingerprint")
    save_generations: bool = Field(False, description="store generated text in eval.json (it may be private)")


# ------------------------------------------------------------------------------------------ per-item values


def item_values(runner: ModelRunner, split: Split, cfg: EvalConfig, *, generate: bool, el: bool,
                mia: bool) -> dict[str, dict[str, Any]]:
    """Every per-item number of one split, read from the runner's cached passes."""
    st = runner.split_stats(split)
    gens = runner.generations(split) if generate else None
    conts = runner.el_continuations(split, cfg.el_n) if el else None
    answers = runner.answer_ids(split) if el else None
    out: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(split.records):
        a = st["answer"][i]
        v: dict[str, Any] = {"mean_nll": M.mean_nll(a.logps), "prob": M.probability(a.logps),
                             "exact_memorization": M.exact_memorization(a.correct),
                             "extraction_strength": M.extraction_strength(a.correct), "n_tokens": len(a.logps)}
        if "pert" in st:
            v["truth_ratio"] = M.truth_ratio(st["para"][i].logps, [p.logps for p in st["pert"][i]])
            v["norm_prob"] = M.normalized_probability(a.logps, [p.logps for p in st["pert"][i]])
        if gens is not None:
            v["rougeL_recall"] = M.rouge_l_recall(gens[i], r.answer)
            v["refusal"] = is_refusal(gens[i])
            if cfg.save_generations:
                v["generation"] = gens[i]
        if conts is not None and answers is not None:
            v["el"] = M.extraction_likelihood(conts[i], answers[i], cfg.el_n)
        if mia:
            v["mia_loss"] = M.mia_loss(a.logps)
            v["mia_zlib"] = M.mia_zlib(a.logps, r.answer)
            v["mia_mink"] = M.mia_min_k(a.logps, cfg.mink_k)
            v["mia_minkpp"] = M.mia_min_k_plus_plus(a.logps, a.mu, a.sigma, cfg.mink_k)
        out[r.id] = v
    return out


# ------------------------------------------------------------------------------------------ the engine


@dataclass
class EvalResult:
    summary: dict[str, Any]
    items: Items
    meta: dict[str, Any]


def resolve_metrics(cfg: EvalConfig, scen: Scenario) -> list[MetricSpec]:
    """The metrics to compute (default: every metric of the scenario except the opt-in ones); an unknown name or
    one reading a split the scenario lacks is a ConfigError."""
    return specs.resolve(cfg.metrics, scen)


def compute_items(runner: ModelRunner, scen: Scenario, cfg: EvalConfig, needs: set[str],
                  splits: Sequence[str] | None = None) -> Items:
    """Per-item values of every split. Under torchrun / accelerate launch the items are sharded across the
    processes (item i goes to rank i mod world) and the per-item results gathered: every item is computed
    exactly as in a single process, so the results agree within float tolerance (batch composition differs)."""
    want_gen, want_el, want_mia = "generate" in needs, "el" in needs, "mia" in needs
    world, me = dist.world_size(), dist.rank()
    items: Items = {}
    for name, split in scen.eval_splits.items():
        if splits is not None and name not in splits:
            continue
        is_mia = name in ("forget", "holdout")
        shard = split if world == 1 else Split(split.name, split.records[me::world], split.source)
        part = item_values(runner, shard, cfg, generate=want_gen and name != "holdout",
                           el=want_el and (name == "forget" or "holdout_el" in needs), mia=want_mia and is_mia)
        merged: dict[str, dict[str, Any]] = {}
        for p in dist.all_gather_objects(part):
            merged.update(p)
        items[name] = {r.id: merged[r.id] for r in split.records}  # the split's own order
    return items


def summarize(items: Items, scen: Scenario, names: Sequence[str], reference: Items | None,
              reference_summary: dict[str, Any]) -> dict[str, Any]:
    return specs.summarize(items, specs.resolve(names, scen), reference, reference_summary)


@dataclass
class Reference:
    """The retain model's per-item values: from a saved evaluation or computed from a model."""

    items: Items
    summary: dict[str, Any]
    source: str


def load_reference_eval(path: Path, scen: Scenario) -> Reference:
    data = read_json(path / "eval.json")
    if data.get("scenario", {}).get("forget_digest") not in (None, scen.forget.digest):
        raise DataError(f"{path}/eval.json was computed on other forget items than scenario {scen.name!r}; "
                        f"evaluate the reference on the same scenario")
    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    return Reference(data["items"], summary, str(path))


def reference_from_runner(runner: ModelRunner, scen: Scenario, cfg: EvalConfig) -> Reference:
    items = compute_items(runner, scen, cfg, {"mia"}, splits=("forget", "holdout"))
    summary = summarize(items, scen, ["mia_auc_mink"], None, {})
    return Reference(items, summary, runner.name)


def evaluate_runner(runner: ModelRunner, scen: Scenario, cfg: EvalConfig, reference: Reference | None = None) -> EvalResult:
    t0 = time.time()
    chosen = resolve_metrics(cfg, scen)
    needs = set().union(*(s.needs for s in chosen)) | {"mia"}
    if "reference" in needs and reference is None:
        log.info("no reference model given: %s left empty",
                 ", ".join(s.name for s in chosen if "reference" in s.needs))
    items = compute_items(runner, scen, cfg, needs)
    summary = specs.summarize(items, chosen, reference.items if reference else None,
                              reference.summary if reference else {})
    meta = {"format": EVAL_FORMAT, "model": {"name": runner.name, "fingerprint": runner.fingerprint},
            "reference": reference.source if reference else None, "config": cfg.model_dump(),
            "scenario": {"name": scen.name, "options": scen.options, "forget_digest": scen.forget.digest,
                         "splits": {k: v.digest for k, v in scen.eval_splits.items()}},
            "template": runner.fmt.kind, "wall_time_s": round(time.time() - t0, 2)}
    return EvalResult(summary, items, meta)


def make_runner(model, tokenizer, cfg: EvalConfig, name: str) -> ModelRunner:
    return ModelRunner(model, tokenizer, template=cfg.template, max_length=cfg.max_length, batch_size=cfg.batch_size,
                       gen_batch_size=cfg.gen_batch_size, max_new_tokens=cfg.max_new_tokens,
                       cache=PassCache(enabled=cfg.cache), name=name)


def env_threads() -> int | None:
    v = os.environ.get("OBLIVIATE_THREADS")
    return int(v) if v else None
