"""OpenUnlearning's result files (locuslab/open-unlearning): written from an evaluation, and read as a reference.

`obliviate eval` writes, next to eval.json, the two files OpenUnlearning's TOFU evaluator writes (its
src/evals/base.py), so that tools reading those files read ours:

- `TOFU_EVAL.json`: per metric, under OpenUnlearning's name of it (`MetricSpec.openunlearning`: forget_quality,
  model_utility, privleak, forget_Q_A_Prob, forget_Q_A_ROUGE, forget_truth_ratio, retain_Truth_Ratio,
  ra_Q_A_Prob_normalised, extraction_strength, mia_min_k, ...), an `agg_value` and, for the per-item metrics,
  `value_by_index`: the item's index as a string (its position in the split; for the TOFU files, the row of the
  dataset, as OpenUnlearning's `index`) -> that item's values, laid out as their metric writes them:

      probability              {"prob": P, "avg_loss": L̄}                      forget_Q_A_Prob, retain_Q_A_Prob
      normalised probability   {"prob": P / (P + Σ P_wrong)}                     ra_Q_A_Prob_normalised, wf_...
      ROUGE                    {"rougeL_recall": r}  (+ "generation" with save_generations)
      truth ratio, ES, EM      {"score": x}
      membership attacks       {"forget": {"agg_value", "value_by_index"}, "holdout": {...}, "auc", "agg_value"}
      FQ, MU, privleak         {"agg_value": x}

  OpenUnlearning orients attack scores as a loss (higher = non-member), the negation of ours (eval/metrics.py:
  higher = member); the AUC is the same number either way. A value that could not be computed is null.
- `TOFU_SUMMARY.json`: metric -> agg_value, for every metric of TOFU_EVAL.json that has one.

The layout and the names are OpenUnlearning's; the numbers are obliviate's definitions (METHODS.md). Both files' keys
are sorted, as OpenUnlearning's `save_logs` does.

`--reference` accepts a retain model's TOFU_EVAL.json (OpenUnlearning's published `retain_logs_path` files, or one
obliviate wrote): forget quality reads its per-item forget truth ratios (`forget_truth_ratio`), privleak its Min-K%
AUC (`mia_min_k`), the reference attack its per-item LOSS scores (`mia_loss`, where the file has them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from obliviate.data.scenarios import Scenario
from obliviate.errors import DataError
from obliviate.eval.specs import Items, MetricSpec, metric_specs
from obliviate.eval.suite import Reference
from obliviate.utils.io import read_json

EVAL_FILE = "TOFU_EVAL.json"
SUMMARY_FILE = "TOFU_SUMMARY.json"
MIA_SPLITS = ("forget", "holdout")  # OpenUnlearning's names of the attack's members and non-members


# ------------------------------------------------------------------------------------------------ writing


def _num(x: Any) -> float | None:
    """A JSON number, or None for an absent / NaN value (JSON has no NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def _by_index(values: Iterable[Any]) -> dict[str, Any]:
    return {str(i): v for i, v in enumerate(values)}


def _item(field: str, v: Mapping[str, Any]) -> dict[str, Any]:
    """One item's entry of `value_by_index`, as OpenUnlearning's metric of that kind writes it."""
    if field == "prob":
        return {"prob": _num(v.get("prob")), "avg_loss": _num(v.get("mean_nll"))}
    if field == "norm_prob":
        return {"prob": _num(v.get("norm_prob"))}
    if field == "rougeL_recall":
        out: dict[str, Any] = {"rougeL_recall": _num(v.get("rougeL_recall"))}
        if "generation" in v:
            out["generation"] = v["generation"]
        return out
    return {"score": _num(v.get(field))}


def _attack_side(items: Mapping[str, Mapping[str, Any]], field: str) -> dict[str, Any]:
    """One side (forget or holdout) of an attack: per-item scores in OpenUnlearning's orientation (a loss, higher =
    non-member: the negation of ours) and their mean."""
    scores = [None if _num(v.get(field)) is None else -float(v[field]) for v in items.values()]
    known = [s for s in scores if s is not None]
    return {"agg_value": float(np.mean(known)) if known else None,
            "value_by_index": _by_index({"score": s} for s in scores)}


def tofu_eval(items: Items, summary: Mapping[str, Any], specs: Sequence[MetricSpec]) -> dict[str, Any]:
    """TOFU_EVAL.json of an evaluation: every computed metric that OpenUnlearning also has, under its name.

    The layout follows from the spec: a metric that reads a reference model or several splits (forget quality,
    model utility, privleak) is an `agg_value` only; an attack ("mia" pass) has its forget and holdout sides; any
    other reads one split and lists its items."""
    out: dict[str, Any] = {}
    for s in specs:
        if s.openunlearning is None or s.name not in summary or not set(s.splits) <= set(items):
            continue
        agg = _num(summary[s.name])
        if "reference" in s.needs or (len(s.splits) > 1 and "mia" not in s.needs):
            entry: dict[str, Any] = {"agg_value": agg}
        elif "mia" in s.needs:
            entry = {side: _attack_side(items[side], s.fields[0]) for side in MIA_SPLITS}
            entry.update(auc=agg, agg_value=agg)
        else:
            entry = {"agg_value": agg,
                     "value_by_index": _by_index(_item(s.fields[0], v) for v in items[s.splits[0]].values())}
        out[s.openunlearning] = entry
    return dict(sorted(out.items()))


def tofu_summary(tofu: Mapping[str, Any]) -> dict[str, float]:
    """TOFU_SUMMARY.json: metric -> agg_value, the metrics without one left out (as OpenUnlearning's `summarize`)."""
    return {k: v["agg_value"] for k, v in sorted(tofu.items()) if v.get("agg_value") is not None}


def dumps(obj: Any) -> str:
    """JSON as OpenUnlearning writes it (`json.dump(logs, f, indent=4)`)."""
    return json.dumps(obj, indent=4) + "\n"


# ------------------------------------------------------------------------------------------------ reading


_FIX = ("--reference takes the retain model, the directory of its `obliviate eval`, or the retain model's "
        "TOFU_EVAL.json from OpenUnlearning's TOFU evaluation (its `retain_logs_path` files)")


def is_tofu_eval(data: Any) -> bool:
    """Whether a parsed JSON object has OpenUnlearning's layout: metric name -> {"agg_value" / "value_by_index"}."""
    return isinstance(data, dict) and any(isinstance(v, dict) and ("agg_value" in v or "value_by_index" in v)
                                          for v in data.values())


def _per_item(path: Path, data: Mapping[str, Any], key: str, n: int, what: str) -> list[float | None]:
    """`data[key]["value_by_index"]` as a list over the item indices 0..n−1 of its `score` (None where null).
    Anything else (a missing key, another number of items, indices that are not 0..n−1, a score that is not a
    number) is a DataError naming the problem and the fix."""
    entry = data.get(key)
    vbi = entry.get("value_by_index") if isinstance(entry, dict) else None
    if not isinstance(vbi, dict):
        found = ", ".join(sorted(data)[:12]) + (", ..." if len(data) > 12 else "")
        raise DataError(f"{path}: no per-item '{key}' ({what}; found: {found}); evaluate the retain model with "
                        f"OpenUnlearning's TOFU evaluation with that metric enabled, or with `obliviate eval`")
    if len(vbi) != n:
        raise DataError(f"{path}: '{key}' has {len(vbi)} items, this evaluation's forget set has {n}; the reference "
                        f"must be the retain model evaluated on the same forget split (TOFU forget01/05/10: "
                        f"40/200/400 items)")
    if set(vbi) != {str(i) for i in range(n)}:
        odd = sorted(set(vbi) - {str(i) for i in range(n)})[:3]
        raise DataError(f"{path}: '{key}' value_by_index keys must be the item indices 0..{n - 1} as strings; got "
                        f"{', '.join(repr(k) for k in odd)}")
    out: list[float | None] = []
    for i in range(n):
        v = vbi[str(i)]
        score = v.get("score") if isinstance(v, dict) else None
        if v is not None and (not isinstance(v, dict) or "score" not in v
                              or not (score is None or isinstance(score, (int, float)))):
            raise DataError(f"{path}: '{key}' item {i}: expected {{\"score\": number}}, got {json.dumps(v)[:80]}")
        out.append(None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score))
    return out


def _get(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... where each level is a dict holding the key, else None (files from elsewhere may lack parts)."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _words(text: str) -> str:
    """Text compared only by its letters and digits: decoding token ids changes spaces around punctuation."""
    return re.sub(r"\W+", "", text).lower()


def _other_items(data: Mapping[str, Any], scen: Scenario, rouge_key: str) -> str | None:
    """Where the file names its forget answers (OpenUnlearning's ROUGE entries carry `ground_truth`), the first
    item whose answer is not this evaluation's, else None."""
    vbi = _get(data, rouge_key, "value_by_index")
    if not isinstance(vbi, dict):
        return None
    for i, r in enumerate(scen.forget.records):
        gt = _get(vbi, str(i), "ground_truth")
        if isinstance(gt, str) and _words(gt) != _words(r.answer):
            return f"item {i}: {gt[:60]!r} vs {r.answer[:60]!r}"
    return None


def load_reference(path: Path, scen: Scenario) -> Reference:
    """A retain model's TOFU_EVAL.json as the reference: `read_reference` of the parsed file; a file that cannot be
    read or parsed is a DataError."""
    try:
        data = read_json(path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: malformed JSON ({e.msg}); {_FIX}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    return read_reference(path, data, scen)


def read_reference(path: Path, data: Any, scen: Scenario) -> Reference:
    """A retain model's TOFU_EVAL.json (parsed, `data`) as the reference of an evaluation of `scen`.

    Reads OpenUnlearning's keys as the scenario's specs name them: the per-item forget truth ratios (required:
    forget quality is why one passes a reference), the Min-K% AUC (privleak; optional) and the LOSS scores on forget
    and holdout (the reference attack; optional, used when their item counts match). Item i is the forget split's
    i-th record. A file whose forget answers (OpenUnlearning's `ground_truth`) are not this evaluation's gives a
    Reference with a `problem`, so the metrics needing it are absent with that reason, as for a native reference."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of metric -> results, got {type(data).__name__}; {_FIX}")
    if "items" in data and "format" in data:
        raise DataError(f"{path} is an obliviate eval.json under another name: pass the directory holding it, or "
                        f"name the file eval.json")
    if not is_tofu_eval(data):
        keys = ", ".join(list(data)[:6]) or "none"
        raise DataError(f"{path}: not an evaluation file (no entry holds 'agg_value' or 'value_by_index'; top-level "
                        f"keys: {keys}); {_FIX}")
    ou = {s.name: s.openunlearning for s in metric_specs(scen).values() if s.openunlearning}
    n = len(scen.forget)
    trs = _per_item(path, data, ou["forget_truth_ratio"], n, "the retain model's forget truth ratios, which forget "
                    "quality compares with")
    ids = [r.id for r in scen.forget.records]
    items: Items = {"forget": {i: {"truth_ratio": tr} for i, tr in zip(ids, trs, strict=True) if tr is not None}}
    summary: dict[str, Any] = {}
    auc_entry = data.get(ou["mia_auc_mink"])
    if auc_entry is not None:
        auc = auc_entry.get("agg_value") if isinstance(auc_entry, dict) else None
        if not isinstance(auc, (int, float)) or not 0.0 <= auc <= 1.0:
            raise DataError(f"{path}: '{ou['mia_auc_mink']}' agg_value must be the Min-K% AUC, a number in [0, 1]; "
                            f"got {json.dumps(auc)[:40]}")
        summary["mia_auc_mink"] = float(auc)
    _add_loss(data.get(ou["mia_auc_loss"]), scen, items)
    other = _other_items(data, scen, ou["forget_rougeL_recall"])
    if other:
        return Reference(None, {}, str(path), problem=f"the reference file {path} was computed on other forget "
                         f"items ({other}); use the retain model's evaluation on these items")
    return Reference(items, summary, str(path))


def _add_loss(entry: Any, scen: Scenario, items: Items) -> None:
    """The LOSS attack's per-item scores (OpenUnlearning's orientation: L̄ itself) as the reference's `mean_nll` on
    forget and holdout, for the reference attack; skipped unless both sides list exactly this evaluation's items."""
    if not isinstance(entry, dict) or not len(scen.holdout):
        return
    sides = {}
    for side, split in (("forget", scen.forget), ("holdout", scen.holdout)):
        vbi = _get(entry, side, "value_by_index")
        if not isinstance(vbi, dict) or set(vbi) != {str(i) for i in range(len(split))}:
            return
        scores = [_get(vbi, str(i), "score") for i in range(len(split))]
        sides[side] = {r.id: {"mean_nll": float(s)} for r, s in zip(split.records, scores, strict=True)
                       if isinstance(s, (int, float))}
    for side, vals in sides.items():
        for i, v in vals.items():
            items.setdefault(side, {}).setdefault(i, {}).update(v)
