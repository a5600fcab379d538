"""Writing an evaluation: eval.json (per-item values), summary.json, a short report.md and OpenUnlearning's
TOFU_EVAL.json / TOFU_SUMMARY.json, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.eval import openunlearning
from obliviate.eval.specs import summary_keys
from obliviate.eval.suite import EvalResult
from obliviate.utils.io import atomic_dir, atomic_write_json, atomic_write_text


def fmt_value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def summary_markdown(summary: dict[str, Any], title: str) -> str:
    """The report's table: the metrics shown on the "report" surface in their order, then every other one sorted."""
    shown = summary_keys("report")
    keys = [k for k in shown if k in summary] + sorted(k for k in summary if k not in shown)
    rows = "\n".join(f"| {k} | {fmt_value(summary[k])} |" for k in keys)
    return f"# {title}\n\n| metric | value |\n|---|---|\n{rows}\n"


def write_eval(out: Path, result: EvalResult, overwrite: bool = False) -> None:
    """eval.json (meta and per-item values), summary.json, report.md, and OpenUnlearning's TOFU_EVAL.json and
    TOFU_SUMMARY.json of the same numbers (eval/openunlearning.py), all in one directory that appears at once."""
    meta = result.meta
    notes = ["", "Forget quality: KS-test p-value of per-item forget truth ratios against the reference (retain) "
             "model; higher is better (1 = indistinguishable). privleak: ((1 − AUC) − (1 − AUC_retain))/"
             "(1 − AUC_retain) × 100 with Min-K%, the field's sign (MUSE, OpenUnlearning); 0 is ideal, −100 a model "
             "that memorised the forget set, < 0 means the forget set is still recognisable as training data "
             "(privleak_auc_relative: (AUC − AUC_retain)/AUC_retain × 100, the opposite sign). MIA AUCs: forget "
             "(members, positive class) vs holdout; 0.5 = indistinguishable. TOFU_EVAL.json and TOFU_SUMMARY.json "
             "hold the same numbers in OpenUnlearning's layout and names.", "",
             f"Model: `{meta['model']['name']}` (fingerprint {meta['model']['fingerprint']}); reference: "
             f"`{meta['reference']}`; scenario: {meta['scenario']['name']}; template: {meta['template']}; "
             f"tokenize: {meta.get('tokenize', 'separate')}; compat: {meta.get('compat', 'none')}; "
             f"{meta['wall_time_s']} s."]
    absent = meta.get("absent") or {}
    if absent:
        notes += ["", "Absent metrics:", *(f"- {k}: {why}" for k, why in absent.items())]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        atomic_write_json(tmp / "eval.json", {**meta, "items": result.items})
        atomic_write_json(tmp / "summary.json", result.summary)
        atomic_write_text(tmp / "report.md", summary_markdown(result.summary, "Evaluation") + "\n".join(notes) + "\n")
        tofu = openunlearning.tofu_eval(result.items, result.summary, result.specs)
        atomic_write_text(tmp / openunlearning.EVAL_FILE, openunlearning.dumps(tofu))
        atomic_write_text(tmp / openunlearning.SUMMARY_FILE, openunlearning.dumps(openunlearning.tofu_summary(tofu)))
