"""The benchmark's outputs: leaderboard.md and a self-contained report.html (inline SVG plots, a sortable table,
no external resources)."""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

from obliviate.bench.presets import has_scale
from obliviate.eval.report import fmt_value
from obliviate.eval.specs import metric_spec, summary_keys
from obliviate.utils.io import atomic_write_text, read_json

# The table's columns: (key, header, higher is better?). The metrics and their headers come from the metric specs
# (surface "columns"); then what the benchmark itself measures about each run.
RUN_COLUMNS = [("wall_time_s", "wall s", False), ("peak_memory_mb", "peak MB", False),
               ("params_changed", "params changed", False)]
COLUMNS = [(s.name, s.header, s.higher_is_better) for s in map(metric_spec, summary_keys("columns"))] + RUN_COLUMNS


def _attack_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    keys = sorted({k for r in rows for k in r if k.startswith("attack_")})
    return [(k, k.removeprefix("attack_").replace("_", " "), None) for k in keys]


EARLIER_MARK = " †"
EARLIER_NOTE = ("† from an earlier `obliviate bench` invocation into this directory, run with the config its row "
                "records (leaderboard.json), which may differ from today's presets.")


def row_label(row: dict[str, Any]) -> str:
    """A row's name in the tables: marked when an earlier invocation ran it."""
    return row["name"] + (EARLIER_MARK if row.get("earlier") else "")


def leaderboard_markdown(board: dict[str, Any]) -> str:
    cols = COLUMNS + _attack_columns(board["rows"])
    head = "| method | " + " | ".join(h for _, h, _ in cols) + " |"
    sep = "|---" * (len(cols) + 1) + "|"
    lines = [f"# obliviate bench: {board['scenario']} on {board.get('base', 'tiny')}", ""]
    if board.get("retain"):
        lines += [f"Retain set trained on: {board['retain']} (`--retain`).", ""]
    lines += [head, sep]
    for r in board["rows"]:
        if r.get("error"):
            lines.append(f"| {row_label(r)} | failed: {r['error'][:120]} |" + " |" * (len(cols) - 1))
            continue
        lines.append(f"| {row_label(r)} | " + " | ".join(fmt_value(r.get(k)) for k, _, _ in cols) + " |")
    if any(r.get("earlier") for r in board["rows"]):
        lines += ["", EARLIER_NOTE]
    lines += ["", "FQ: forget quality (KS-test p-value vs the retain model). MU: model utility. privleak: Min-K% "
              "((1 − AUC) − (1 − AUC_retain))/(1 − AUC_retain) x100, the field's sign (0 ideal, −100 memorised, < 0 "
              "still recognisable). AUCs: forget (members) vs holdout (non-members).", ""]
    if board.get("across_seeds"):
        cols = _spread_columns(board["across_seeds"])
        lines += [f"## Across {board['seeds']} training seeds", "",
                  "Each cell: mean ± sample standard deviation [lowest, highest] over the method's runs.", "",
                  "| method | runs | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for e in board["across_seeds"]:
            lines.append(f"| {e['method']} | {runs_text(e)} | "
                         + " | ".join(spread_text(e["metrics"].get(k)) for k, _ in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def _spread_columns(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The leaderboard's columns that some method's spread reports (its metrics, then the wall time)."""
    return [(k, h) for k, h, _ in COLUMNS if any(k in e["metrics"] for e in entries)]


def runs_text(entry: dict[str, Any]) -> str:
    """A method's run count across seeds, with its failed runs when there are any."""
    return f"{entry['runs']}" + (f" ({entry['failed']} failed)" if entry["failed"] else "")


def spread_text(s: dict[str, Any] | None) -> str:
    """'mean ± std [min, max]' of one metric's spread across seeds; '–' when no run reports it."""
    if not s:
        return "–"
    return f"{fmt_value(s['mean'])} ± {fmt_value(s['std'])} [{fmt_value(s['min'])}, {fmt_value(s['max'])}]"


def spread_html(entries: list[dict[str, Any]], seeds: int) -> str:
    cols = _spread_columns(entries)
    head = "<tr><th>method</th><th>runs</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h in cols) + "</tr>"
    body = "".join(f"<tr><td>{html.escape(e['method'])}</td><td>{runs_text(e)}</td>"
                   + "".join(f"<td>{html.escape(spread_text(e['metrics'].get(k)))}</td>" for k, _ in cols) + "</tr>"
                   for e in entries)
    return (f"<h2>Across {seeds} training seeds</h2><p class='note'>Each cell: mean ± sample standard deviation "
            f"[lowest, highest] over the method's runs.</p><table id='seeds'><thead>{head}</thead><tbody>{body}"
            "</tbody></table>")


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def scatter_svg(rows: list[dict[str, Any]]) -> str:
    """Forget quality (log scale) against model utility; the target and retain models marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        fq, mu = r.get("forget_quality"), r.get("model_utility")
        if fq is None or mu is None:
            continue
        ref = r.get("kind") == "reference"
        ax.scatter([max(fq, 1e-20)], [mu], s=90 if ref else 45, marker="*" if ref else "o",
                   color="black" if ref else None, zorder=3)
        ax.annotate(r["name"], (max(fq, 1e-20), mu), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("forget quality (log, higher = closer to the retain model)")
    ax.set_ylabel("model utility")
    ax.grid(alpha=0.3)
    ax.set_title("Forget quality vs model utility")
    return _svg(fig)


def curves_svg(out: Path, rows: list[dict[str, Any]]) -> str | None:
    """Per-epoch (history.json) and per-round / per-request curves of iterative methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        run = out / "runs" / r["name"]
        if r.get("kind") != "method" or not run.is_dir():
            continue
        for f in sorted(run.glob("*.json")):
            if f.name in ("manifest.json", "bench.json", "config.json", "generation_config.json", "tokenizer.json",
                          "tokenizer_config.json", "special_tokens_map.json"):
                continue
            data = read_json(f)
            recs = data if isinstance(data, list) else next((v for v in data.values() if isinstance(v, list)), None) \
                if isinstance(data, dict) else None
            if not recs or not isinstance(recs[0], dict):
                continue
            xkey = next((k for k in ("epoch", "round", "request", "step") if k in recs[0]), None)
            if xkey is None:
                continue
            for key in ("forget_nll_eval", "retain_nll_eval", "reward", "utility", "forget_refusal", "active"):
                pts = [(float(x[xkey]), float(x[key])) for x in recs if isinstance(x.get(key), (int, float))]
                if len(pts) > 1:
                    series.setdefault(key, {})[f"{r['name']} ({f.stem})"] = pts
    if not series:
        return None
    keys = list(series)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, pts in series[key].items():
            ax.plot(*zip(*pts, strict=True), marker=".", label=label)
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch / round / request")
    axes[0][0].legend(fontsize=6)
    return _svg(fig)


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const val = tr => { const c = tr.cells[col]; const v = c ? c.dataset.v : undefined;
                      return v === undefined || v === '' ? NaN : +v; };
  const txt = tr => tr.cells[col] ? tr.cells[col].textContent : '';
  [...body.rows].sort((a, b) => { const x = val(a), y = val(b);
      if (isNaN(x) && isNaN(y)) return asc ? txt(a).localeCompare(txt(b)) : txt(b).localeCompare(txt(a));
      if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; })
    .forEach(tr => body.appendChild(tr));
}));
// report.html#sort=N sorts by column N on load (a shareable view; the browser test uses it too)
const m = location.hash.match(/sort=(\\d+)/);
if (m) { const th = document.querySelectorAll('table.sortable th')[+m[1]]; if (th) th.click(); }
"""

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
tr.reference{background:#fafae8}tr.failed{color:#a00}.note{color:#555;font-size:13px}"""


def table_html(rows: list[dict[str, Any]]) -> str:
    cols = COLUMNS + _attack_columns(rows)
    head = "<tr><th>method</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols) + "</tr>"
    body = []
    for r in rows:
        if r.get("error"):
            body.append(f'<tr class="failed"><td>{html.escape(row_label(r))}</td>'
                        f'<td colspan="{len(cols)}" style="text-align:left">failed: {html.escape(r["error"][:300])}</td></tr>')
            continue
        cells = []
        for k, _, _ in cols:
            v = r.get(k)
            num = "" if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)) else repr(v)
            cells.append(f'<td data-v="{num}">{html.escape(fmt_value(v))}</td>')
        body.append(f'<tr class="{r.get("kind", "")}"><td>{html.escape(row_label(r))}</td>{"".join(cells)}</tr>')
    return f'<table class="sortable" id="leaderboard"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _retain_note(retain: str | None) -> str:
    if retain is None:
        return "the scenario's"
    if retain == "general":
        return "the scenario's, plus the base's own answers to general-knowledge questions (retain-general.jsonl)"
    return html.escape(retain)


def write_report(out: Path, board: dict[str, Any]) -> None:
    rows, base = board["rows"], board.get("base", "tiny")
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(board))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>obliviate bench: {html.escape(board['scenario'])}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>obliviate bench — {html.escape(board['scenario'])} on {html.escape(base)}</h1>",
             f"<p class='note'>Models: {html.escape(board['models'])}. Hyperparameters: "
             f"{'the papers’ defaults' if board.get('paper_defaults') or not has_scale(base) else f'the {html.escape(base)} scale presets (obliviate/bench/presets.py)'}"
             f"{', overridden by ' + html.escape(board['presets']) if board.get('presets') else ''}. "
             f"Retain set trained on: {_retain_note(board.get('retain'))}. Click a column to sort.</p>",
             "<h2>Leaderboard</h2>", table_html(rows),
             *([f"<p class='note'>{html.escape(EARLIER_NOTE)}</p>"] if any(r.get("earlier") for r in rows) else []),
             "<p class='note'>FQ: forget quality, the KS-test p-value between the per-item forget truth ratios of the "
             "model and of the retain model (higher = closer to never having seen the data). MU: model utility, the "
             "harmonic mean of 9 numbers. privleak: ((1 − AUC) − (1 − AUC_retain))/(1 − AUC_retain) × 100 with "
             "Min-K%, the field's sign (MUSE, OpenUnlearning; 0 ideal, −100 memorised, &lt; 0 still recognisable). "
             "AUCs: forget (members) vs holdout (non-members), 0.5 = indistinguishable.</p>",
             *([spread_html(board["across_seeds"], board["seeds"])] if board.get("across_seeds") else []),
             "<h2>Forget quality vs model utility</h2>", f"<div id='scatter'>{scatter_svg(rows)}</div>"]
    curves = curves_svg(out, rows)
    if curves:
        parts += ["<h2>Per-epoch and per-round curves</h2>", f"<div id='curves'>{curves}</div>"]
    parts += [f"<script>{_SORT_JS}</script>",
              f"<script type='application/json' id='data'>{json.dumps(rows, default=str).replace('</', '<' + chr(92) + '/')}"
              "</script>",
              "</body></html>"]
    atomic_write_text(out / "report.html", "\n".join(parts))
