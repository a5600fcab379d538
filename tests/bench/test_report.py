"""The benchmark report: leaderboard files, and report.html rendered in a real headless browser (Debian's
chromium) with the plots and the sortable table present."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from obliviate.bench.report import COLUMNS, write_report

ROWS = [
    {"name": "target", "kind": "reference", "forget_quality": 1e-4, "model_utility": 0.90, "forget_rougeL_recall": 0.97,
     "privleak": 80.0},
    {"name": "retain", "kind": "reference", "forget_quality": 1.0, "model_utility": 0.88, "forget_rougeL_recall": 0.31,
     "privleak": 0.0},
    {"name": "npo", "kind": "method", "forget_quality": 0.2, "model_utility": 0.85, "forget_rougeL_recall": 0.4,
     "privleak": 5.0, "wall_time_s": 12.0, "peak_memory_mb": 800.0, "params_changed": 1.0, "attack_relearn_recovery": 1.8},
    {"name": "graddiff", "kind": "method", "forget_quality": 0.05, "model_utility": 0.80, "forget_rougeL_recall": 0.3,
     "privleak": -3.0, "wall_time_s": 9.0, "peak_memory_mb": 700.0, "params_changed": 1.0},
    {"name": "rmu", "kind": "method", "error": "FloatingPointError: non-finite loss at epoch 3"},
]


@pytest.fixture()
def report_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "npo"
    run.mkdir(parents=True)
    (run / "history.json").write_text(json.dumps([
        {"epoch": e, "loss": 1.0 / e, "forget_nll_eval": 0.3 * e, "retain_nll_eval": 0.3 + 0.01 * e} for e in (1, 2, 3)]))
    write_report(tmp_path, {"scenario": "synthetic", "models": "/models", "rows": ROWS})
    return tmp_path


def test_columns_are_todays_columns():
    """The table's columns, derived from the metric specs (surface "columns"), are exactly the list written here
    before the specs existed (key, header, higher is better?)."""
    assert COLUMNS == [
        ("forget_quality", "FQ ↑", True), ("model_utility", "MU ↑", True),
        ("forget_rougeL_recall", "forget ROUGE-L ↓", False), ("privleak", "privleak (→0)", None),
        ("mia_auc_loss", "AUC loss", None), ("mia_auc_zlib", "AUC zlib", None), ("mia_auc_mink", "AUC Min-K", None),
        ("mia_auc_minkpp", "AUC Min-K++", None), ("forget_refusal_rate", "refusals", None),
        ("wall_time_s", "wall s", False), ("peak_memory_mb", "peak MB", False),
        ("params_changed", "params changed", False),
    ]


def test_leaderboard_markdown_lists_every_row(report_dir):
    md = (report_dir / "leaderboard.md").read_text()
    for r in ROWS:
        assert f"| {r['name']} |" in md
    assert "failed: FloatingPointError" in md
    assert "relearn recovery" in md  # attack columns appear when present


def test_report_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "<svg" in html and 'id="leaderboard"' in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must not load external resources"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browser(args: list[str], url: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed here (apt-get install chromium); CI installs it")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={Path(url.split('#')[0].removeprefix('file://')).parent / '.chrome'}",
             "--virtual-time-budget=3000"]
    return subprocess.run([exe, *flags, *args, url], capture_output=True, text=True, timeout=120)


def test_report_renders_in_a_headless_browser(report_dir):
    """The DOM after the page's scripts ran: the table with every row, both plots as SVG; and #sort=1 (the FQ
    column) really reorders the rows by the sortable table's script."""
    url = f"file://{report_dir / 'report.html'}"
    res = _browser(["--dump-dom"], url + "#sort=1")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'id="leaderboard"' in dom and "<svg" in dom
    assert dom.count("<svg") >= 2, "the scatter and the curves plots"
    body = dom[dom.index("<tbody>"):dom.index("</tbody>")]
    names = re.findall(r"<tr[^>]*><td>([^<]+)</td>", body)
    assert set(names) >= {"target", "retain", "npo", "graddiff", "rmu"}
    fq_order = [n for n in names if n != "rmu"]
    assert fq_order == ["target", "graddiff", "npo", "retain"], f"not sorted by FQ ascending: {names}"


def test_report_screenshot_is_not_blank(report_dir, tmp_path):
    shot = tmp_path / "shot.png"
    res = _browser([f"--screenshot={shot}", "--window-size=1200,1600"], f"file://{report_dir / 'report.html'}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page with plots, not an empty canvas
