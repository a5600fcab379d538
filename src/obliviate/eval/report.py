"""Writing an evaluation: eval.json (per-item values), summary.json and a short report.md, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.eval.specs import summary_keys
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


def write_eval(out: Path, result, overwrite: bool = False) -> None:
    meta = result.meta
    notes = ["", "Forget quality: KS-test p-value of per-item forget truth ratios against the reference (retain) "
             "model; higher is better (1 = indistinguishable). privleak: (AUC − AUC_retain)/AUC_retain × 100 with "
             "Min-K%; 0 is ideal, > 0 means the forget set is still recognisable as training data. MIA AUCs: forget "
             "(members, positive class) vs holdout; 0.5 = indistinguishable.", "",
             f"Model: `{meta['model']['name']}` (fingerprint {meta['model']['fingerprint']}); reference: "
             f"`{meta['reference']}`; scenario: {meta['scenario']['name']}; template: {meta['template']}; "
             f"{meta['wall_time_s']} s."]
    absent = meta.get("absent") or {}
    if absent:
        notes += ["", "Absent metrics:", *(f"- {k}: {why}" for k, why in absent.items())]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        atomic_write_json(tmp / "eval.json", {**meta, "items": result.items})
        atomic_write_json(tmp / "summary.json", result.summary)
        atomic_write_text(tmp / "report.md", summary_markdown(result.summary, "Evaluation") + "\n".join(notes) + "\n")
