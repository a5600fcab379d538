"""Shared set-up of the benchmark scripts: offline, the TOFU data beside the checkout, one table printer.

baselines.py, seed_methods.py and attacks.py write to the same directory by default (runs/bench-SCENARIO): bench
skips a method already run there with the same config, so the attacks reuse the other two scripts' models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OBLIVIATE_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))


def model_of(base: str, scenario: str):
    """(model, tokenizer): a pretrained base (`obliviate ls bases`) as it installs, or for `tiny` the scenario's
    built tiny target (built first where it is not cached)."""
    from obliviate import api
    from obliviate.models.bases import resolve_base
    from obliviate.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(api.build(scenario, base="tiny").target if base == "tiny" else resolve_base(base))


def fmt(v: Any) -> str:
    from obliviate.eval.report import fmt_value

    return fmt_value(v)


def print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = [max(len(c), 10) for c in cols]
    print(f"{'method':<14}" + "".join(f"{c:>{w + 2}}" for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        if r.get("error"):
            print(f"{r['name']:<14}  failed: {r['error'][:100]}")
            continue
        print(f"{r['name']:<14}" + "".join(f"{fmt(r.get(c)):>{w + 2}}" for c, w in zip(cols, widths, strict=True)))


def row(board: dict[str, Any], name: str) -> dict[str, Any]:
    return next((r for r in board["rows"] if r["name"] == name), {})
