"""The evaluation engine: per-item values from cached passes, then named summary metrics.

`evaluate(model, scenario, reference=...)` computes every TOFU metric, extraction metrics and membership-inference
AUCs, and writes `eval.json` (per-item values keyed by stable ids), `summary.json` and `report.md` atomically.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from obliviate.config import Config
from obliviate.data.records import Split
from obliviate.data.refusals import is_refusal
from obliviate.data.scenarios import Scenario
from obliviate.errors import ConfigError, DataError
from obliviate.eval import metrics as M
from obliviate.eval.passes import PassCache
from obliviate.eval.runner import ModelRunner
from obliviate.registry import Registry
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
    metrics: list[str] | None = Field(None, description="summary metrics to compute (default: all)")
    cache: bool = Field(True, description="cache model passes on disk by model fingerprint")
    save_generations: bool = Field(False, description="store generated text in eval.json (it may be private)")


# ------------------------------------------------------------------------------------------ per-item values

Items = dict[str, dict[str, dict[str, Any]]]  # split -> item id -> field -> value


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


# ------------------------------------------------------------------------------------------ summary metrics


@dataclass(frozen=True)
class MetricContext:
    items: Items
    utility_sets: tuple[str, ...]
    reference: Items | None = None
    reference_summary: dict[str, Any] = field(default_factory=dict)

    def values(self, split: str, key: str) -> list[float]:
        return [v[key] for v in self.items[split].values() if key in v and not _isnan(v[key])]

    def mean(self, split: str, key: str) -> float | None:
        vals = self.values(split, key)
        return float(np.mean(vals)) if vals else None


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


@dataclass(frozen=True)
class SummaryMetric:
    fn: Callable[[MetricContext], float | None]
    needs: frozenset[str]  # passes: "generate", "el", "mia", "reference"
    doc: str


METRICS: Registry[SummaryMetric] = Registry("metric")


def metric(name: str, needs: Sequence[str] = (), doc: str = ""):
    def deco(fn: Callable[[MetricContext], float | None]):
        METRICS.add(name, SummaryMetric(fn, frozenset(needs), doc or (fn.__doc__ or "").strip()))
        return fn
    return deco


def _split_metrics(split: str, tr_agg: Callable[[Sequence[float]], float], prob_key: str) -> None:
    metric(f"{split}_prob", doc=f"mean TOFU probability on {split}")(lambda c: c.mean(split, prob_key))
    metric(f"{split}_rougeL_recall", ["generate"], f"mean ROUGE-L recall of greedy answers on {split}")(
        lambda c: c.mean(split, "rougeL_recall"))
    metric(f"{split}_truth_ratio", doc=f"truth-ratio score on {split}")(
        lambda c: tr_agg(c.values(split, "truth_ratio")) if c.values(split, "truth_ratio") else None)


_split_metrics("forget", M.truth_ratio_closer_to_one, "prob")
_split_metrics("retain", M.truth_ratio_true_better, "prob")


@metric("forget_quality", ["reference"])
def _forget_quality(c: MetricContext) -> float | None:
    """KS-test p-value of per-item forget truth ratios against the retain (reference) model's."""
    if c.reference is None or "forget" not in c.reference:
        return None
    ref = c.reference["forget"]
    ids = [i for i, v in c.items["forget"].items() if i in ref and "truth_ratio" in ref[i]]
    if not ids:
        raise DataError("the reference evaluation has no truth ratios for the forget items; evaluate the reference "
                        "on the same scenario")
    return M.forget_quality([c.items["forget"][i]["truth_ratio"] for i in ids], [ref[i]["truth_ratio"] for i in ids])


@metric("model_utility", ["generate"])
def _model_utility(c: MetricContext) -> float | None:
    """Harmonic mean of probability, ROUGE-L recall and truth-ratio score on retain and each utility set."""
    parts: list[float | None] = [c.mean("retain", "prob"), c.mean("retain", "rougeL_recall"),
                                 M.truth_ratio_true_better(c.values("retain", "truth_ratio"))]
    for u in c.utility_sets:
        parts += [c.mean(u, "norm_prob"), c.mean(u, "rougeL_recall"), M.truth_ratio_true_better(c.values(u, "truth_ratio"))]
    if any(p is None for p in parts):
        return None
    return M.harmonic_mean([float(p) for p in parts])  # type: ignore[arg-type]


metric("extraction_strength", doc="mean extraction strength on forget")(lambda c: c.mean("forget", "extraction_strength"))
metric("exact_memorization", doc="mean exact memorisation on forget")(lambda c: c.mean("forget", "exact_memorization"))
metric("ma", doc="memorisation accuracy on forget (answer tokens given the question)")(
    lambda c: c.mean("forget", "exact_memorization"))
metric("el10", ["el"], "extraction likelihood EL_n on forget")(lambda c: c.mean("forget", "el"))
metric("holdout_ma", doc="memorisation accuracy on holdout (KUMPR threshold)")(
    lambda c: c.mean("holdout", "exact_memorization"))
metric("holdout_el10", ["el", "holdout_el"], "EL_n on holdout (KUMPR threshold; opt-in: costly)")(lambda c: c.mean("holdout", "el"))
metric("forget_refusal_rate", ["generate"], "share of forget answers that are refusals")(
    lambda c: c.mean("forget", "refusal"))


def _auc(c: MetricContext, key: str) -> float | None:
    m, h = c.values("forget", key), c.values("holdout", key)
    return M.auc(m, h) if m and h else None


for _name, _key in (("loss", "mia_loss"), ("zlib", "mia_zlib"), ("mink", "mia_mink"), ("minkpp", "mia_minkpp")):
    metric(f"mia_auc_{_name}", ["mia"], f"AUC of the {_name} attack, forget (members) vs holdout")(
        lambda c, k=_key: _auc(c, k))


@metric("mia_auc_ref", ["mia", "reference"])
def _mia_ref(c: MetricContext) -> float | None:
    """Reference attack: −(L̄_θ − L̄_ref), reference = the retain model."""
    if c.reference is None:
        return None
    scores = {}
    for s in ("forget", "holdout"):
        ref = c.reference.get(s, {})
        scores[s] = [-(v["mean_nll"] - ref[i]["mean_nll"]) for i, v in c.items[s].items() if i in ref]
    return M.auc(scores["forget"], scores["holdout"]) if scores["forget"] and scores["holdout"] else None


@metric("privleak", ["mia", "reference"])
def _privleak(c: MetricContext) -> float | None:
    """(AUC_model − AUC_retain)/AUC_retain × 100 with the Min-K% attack (0 ideal; > 0 under-unlearned)."""
    ours = _auc(c, "mia_mink")
    ref = c.reference_summary.get("mia_auc_mink")
    return M.privleak(ours, ref) if ours is not None and ref is not None else None


def utility_metrics(names: Sequence[str]) -> None:
    for u in names:
        if f"{u}_prob" not in METRICS:
            metric(f"{u}_prob", doc=f"normalised probability on {u}")(lambda c, u=u: c.mean(u, "norm_prob"))
            metric(f"{u}_rougeL_recall", ["generate"], f"ROUGE-L recall on {u}")(lambda c, u=u: c.mean(u, "rougeL_recall"))
            metric(f"{u}_truth_ratio", doc=f"truth-ratio score on {u}")(
                lambda c, u=u: M.truth_ratio_true_better(c.values(u, "truth_ratio")) if c.values(u, "truth_ratio") else None)


# ------------------------------------------------------------------------------------------ the engine


@dataclass
class EvalResult:
    summary: dict[str, Any]
    items: Items
    meta: dict[str, Any]


# Computed only when asked for by name: EL_n on the holdout set decodes from every answer prefix of items the
# model never saw (no prefix sharing is possible there), which costs more than the rest of an evaluation.
OPT_IN = ("holdout_el10",)


def resolve_metrics(cfg: EvalConfig, scen: Scenario) -> list[str]:
    utility_metrics(list(scen.utility))
    if cfg.metrics is None:
        return [n for n in METRICS.names() if _applies(n, scen) and n not in OPT_IN]
    for n in cfg.metrics:
        METRICS.get(n)  # raises with "did you mean"
    return list(cfg.metrics)


def _applies(name: str, scen: Scenario) -> bool:
    prefix = name.split("_")[0]
    known = {"forget", "retain", "holdout", "model", "extraction", "exact", "ma", "el10", "mia", "privleak"}
    return prefix in known or any(name.startswith(u + "_") for u in scen.utility)


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
    ctx = MetricContext(items, tuple(scen.utility), reference, reference_summary)
    out: dict[str, Any] = {}
    for n in names:
        val = METRICS.get(n).fn(ctx)
        out[n] = None if val is None or _isnan(val) else float(val)
    return out


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
    names = resolve_metrics(cfg, scen)
    needs = set().union(*(METRICS.get(n).needs for n in names)) | {"mia"}
    if "reference" in needs and reference is None:
        log.info("no reference model given: forget_quality, privleak and mia_auc_ref are left empty")
    items = compute_items(runner, scen, cfg, needs)
    summary = summarize(items, scen, names, reference.items if reference else None,
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


def check_metrics_known(names: Sequence[str] | None) -> None:
    if names is not None and not names:
        raise ConfigError("metrics: empty list; omit it to compute every metric")


def env_threads() -> int | None:
    v = os.environ.get("OBLIVIATE_THREADS")
    return int(v) if v else None
