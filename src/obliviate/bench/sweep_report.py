"""A sweep's report.html: self-contained (inline SVG plots, no external resources), from the records the sweep
wrote (trials.jsonl, best.json):

- the objective against the trial number, feasible trials filled, the best feasible so far as a line;
- the forget quality – model utility cloud of every finished trial, the feasible region shaded (constraints on
  those two metrics), the target and retain models marked;
- Optuna's parameter importances (fANOVA);
- the trials, best first."""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

from obliviate.eval.report import fmt_value
from obliviate.utils.io import atomic_write_text

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.best{background:#e8f5e8}
tr.infeasible{color:#777}tr.pruned,tr.fail{color:#a00}.note{color:#555;font-size:13px}"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def objective_svg(data: dict[str, Any]) -> str | None:
    recs = [r for r in data["records"] if r["state"] == "complete" and _num(r["value"]) is not None]
    if not recs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    feas = [r for r in recs if r["feasible"]]
    infeas = [r for r in recs if not r["feasible"]]
    ax.scatter([r["number"] for r in feas], [r["value"] for r in feas], color="tab:green", label="feasible", zorder=3)
    ax.scatter([r["number"] for r in infeas], [r["value"] for r in infeas], facecolors="none", edgecolors="tab:red",
               label="misses a constraint", zorder=3)
    maximize = data["direction"] == "maximize"
    best, xs, ys = None, [], []
    for r in sorted(feas, key=lambda r: r["number"]):
        if best is None or (r["value"] > best if maximize else r["value"] < best):
            best = r["value"]
        xs.append(r["number"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", alpha=0.6, label="best feasible so far")
    vals = [r["value"] for r in recs]
    if min(vals) > 0 and max(vals) / min(vals) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel(data["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(data["objective"])
    return _svg(fig)


def cloud_svg(data: dict[str, Any]) -> str | None:
    """Forget quality (log) against model utility, as the benchmark report draws it; the feasible region shaded."""
    pts = [(r, (r["summary"] or {}).get("forget_quality"), (r["summary"] or {}).get("model_utility"))
           for r in data["records"] if r["state"] == "complete"]
    pts = [(r, fq, mu) for r, fq, mu in pts if _num(fq) is not None and _num(mu) is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = 1e-20
    best = (data.get("best") or {}).get("number")
    for r, fq, mu in pts:
        ax.scatter([max(fq, floor)], [mu], s=70 if r["number"] == best else 30, zorder=3,
                   color="tab:green" if r["feasible"] else "tab:red", marker="*" if r["number"] == best else "o")
        ax.annotate(str(r["number"]), (max(fq, floor), mu), textcoords="offset points", xytext=(4, 3), fontsize=7)
    for role, s in (data.get("references") or {}).items():
        fq, mu = _num(s.get("forget_quality")), _num(s.get("model_utility"))
        if fq is not None and mu is not None:
            ax.scatter([max(fq, floor)], [mu], marker="P", s=90, color="black", zorder=4)
            ax.annotate(role, (max(fq, floor), mu), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xscale("log")
    shaded = False
    for text, th in (data.get("constraints") or {}).items():
        metric, op = text.split()[0], text.split()[1]
        # model utility is the y axis, forget quality the x axis: shade the side of the threshold that is feasible
        axis = {"model_utility": (ax.get_ylim, ax.axhspan, ax.axhline),
                "forget_quality": (ax.get_xlim, ax.axvspan, ax.axvline)}.get(metric)
        if axis is not None:
            limits, span, line = axis
            lo, hi = limits()
            span(th, max(hi, th), color="tab:green", alpha=0.08) if op == ">=" else \
                span(min(lo, th), th, color="tab:green", alpha=0.08)
            line(th, color="tab:green", lw=0.8, ls="--")
            shaded = True
    ax.set_xlabel("forget quality (log, higher = closer to the retain model)")
    ax.set_ylabel("model utility")
    ax.grid(alpha=0.3)
    ax.set_title("Forget quality vs model utility" + (" (shaded: feasible)" if shaded else ""))
    return _svg(fig)


def importance_svg(importances: dict[str, float] | None) -> str | None:
    if not importances:
        return None
    plt = _plt()
    keys = sorted(importances, key=importances.get)  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(keys) + 1.2))
    ax.barh(keys, [importances[k] for k in keys], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig)


def trials_table(data: dict[str, Any]) -> str:
    recs = data["records"]
    params = sorted({k for r in recs for k in (r["params"] or {})})
    metrics = list(data.get("reported") or [])
    maximize = data["direction"] == "maximize"

    def order(r: dict[str, Any]) -> tuple:
        v = _num(r["value"])
        rank = 0 if r["feasible"] else 1 if r["state"] == "complete" else 2
        return (rank, -(v or 0) if maximize else (v or 0), r["number"])

    head = ("<tr><th>trial</th><th>state</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in params)
            + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "<th>worker</th><th>note</th></tr>")
    best = (data.get("best") or {}).get("number")
    rows = []
    for r in sorted(recs, key=order):
        cls = ("best" if r["number"] == best else r["state"] if r["state"] != "complete"
               else "" if r["feasible"] else "infeasible")
        state = r["state"] if r["state"] != "complete" else "feasible" if r["feasible"] else "infeasible"
        note = r.get("error") or (f"pruned after epoch {r['pruned_at_epoch']}" if r.get("pruned_at_epoch") else "")
        if r.get("start"):
            note = "the starting config" + (f"; {note}" if note else "")
        cells = [str(r["number"]), state, *(html.escape(fmt_value((r["params"] or {}).get(k))) for k in params),
                 *(html.escape(fmt_value((r["summary"] or {}).get(m))) for m in metrics),
                 html.escape(str(r.get("worker") or "")), html.escape(str(note)[:200])]
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table id='trials'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def write_sweep_report(out: Path, data: dict[str, Any]) -> None:
    """OUT/report.html from the sweep's records: `records` (trials.jsonl's), `best`, `objective`, `direction`,
    `metric`, `constraints` (text -> threshold), `references` (role -> summary), `importances`, `reported`."""
    title = f"obliviate sweep: {data['method']} ({data['study']})"
    best = data.get("best")
    counts = ", ".join(f"{n} {s}" for s, n in sorted((data.get("trials") or {}).items()))
    if best:
        head = (f"Best feasible: trial {best['number']}, {html.escape(data['metric'])} "
                f"{html.escape(fmt_value(best['value']))} with "
                + html.escape(", ".join(f"{k}={fmt_value(v)}" for k, v in best["params"].items())) + ".")
    else:
        head = "<b>No feasible trial</b>: no trial met the constraints (the closest are listed in best.json)."
    cons = "; ".join(f"{html.escape(t)} (= {fmt_value(v)})" for t, v in (data.get("constraints") or {}).items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>Objective: <code>{html.escape(data['objective'])}</code>"
             + (f"; thresholds: {cons}" if cons else "") + f". Trials: {html.escape(counts)}.</p>",
             f"<p>{head}</p>",
             "<p class='note'>Search space: "
             + html.escape("; ".join(f"{k} {v}" for k, v in (data.get("space") or {}).items()))
             + f". Started from {html.escape(str(data.get('start_from', '')))}; storage "
             + html.escape(str(data.get("storage", ""))) + ".</p>"]
    for heading, ident, svg in (("Objective by trial", "objective", objective_svg(data)),
                                ("Forget quality vs model utility", "cloud", cloud_svg(data)),
                                ("Parameter importances", "importances", importance_svg(data.get("importances")))):
        parts.append(f"<h2>{heading}</h2>")
        parts.append(f"<div id='{ident}'>{svg}</div>" if svg else
                     "<p class='note'>Not enough finished trials to draw this.</p>")
    parts += ["<h2>Trials</h2>", trials_table(data),
              "<p class='note'>FQ: forget quality, the KS-test p-value between the per-item forget truth ratios of "
              "the model and of the retain model. MU: model utility. Pruned trials stopped early on a per-epoch "
              "stand-in for the objective; their values are not comparable and are not plotted.</p>",
              f"<script type='application/json' id='data'>"
              f"{json.dumps(data, default=str).replace('</', '<' + chr(92) + '/')}</script>",
              "</body></html>"]
    atomic_write_text(out / "report.html", "\n".join(parts))
