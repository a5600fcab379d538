"""The sweep's acceptance (issue 16), on tofu-mini (tiny models) by default: each method is swept with at most
TRIALS trials for "max forget_quality s.t. model_utility >= 0.95*target", next to its current preset (a bench row),
and the claims are printed as ok / MISSED:

- NPO and GradDiff each reach a higher forget quality at MU >= 0.95 x target than their current presets;
- the best method reaches FQ >= 0.9 at MU >= 0.95 x target, or the FQ–MU frontier the sweeps found is printed.

The best configs go to OUT/presets.yaml (`obliviate bench --presets OUT/presets.yaml`); each sweep's report is
OUT/METHOD/report.html. A rerun continues the studies (OUT/METHOD/study.db) up to TRIALS.

    python benchmarks/sweep.py [--scenario tofu-mini] [--trials 40] [--methods npo,graddiff,simnpo,icu]
                               [--out runs/sweep] [--bench-out runs/bench] [KEY=VALUE ...]

KEY=VALUE pairs are fixed in every trial of every method; a toy check of the script itself:
    python benchmarks/sweep.py --scenario synthetic --trials 2 --methods npo epochs=1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import fmt, row

OBJECTIVE = "max forget_quality s.t. model_utility >= 0.95*target"
MUST_BEAT_PRESET = ("npo", "graddiff")
FQ_GOAL = 0.9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--trials", type=int, default=40, help="trials per method (the study's total)")
    ap.add_argument("--methods", default="npo,graddiff,simnpo,icu")
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--bench-out", default="runs/bench", help="where the presets' bench runs go (shared with the "
                                                             "other benchmark scripts: finished rows are reused)")
    ap.add_argument("--storage", default=None, help="an Optuna storage URL shared with other workers")
    ap.add_argument("fixed", nargs="*", help="KEY=VALUE fixed in every trial")
    args = ap.parse_args()
    from obliviate.config import parse_overrides
    from obliviate.errors import NoFeasibleTrial
    from obliviate.runs.bench import bench
    from obliviate.runs.sweep import sweep

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    fixed = parse_overrides(args.fixed)
    out = Path(f"{args.out}-{args.scenario}")
    board = bench(args.scenario, methods, Path(f"{args.bench_out}-{args.scenario}"),
                  progress=lambda m: print(m, flush=True))
    target_mu = row(board, "target").get("model_utility")
    floor = 0.95 * target_mu if target_mu is not None else None
    results = {}
    for m in methods:
        print(f"\n== sweep {m}: {args.trials} trials", flush=True)
        try:
            sweep(m, out=out / m, scenario=args.scenario, trials=args.trials, objective=OBJECTIVE, config=fixed,
                  storage=args.storage, export_preset=out / "presets.yaml", progress=lambda s: print(s, flush=True))
        except NoFeasibleTrial as e:
            print(f"{m}: {e}")
        results[m] = json.loads((out / m / "best.json").read_text())

    print(f"\nMU floor: 0.95 x target {fmt(target_mu)} = {fmt(floor)}\n")
    print(f"{'method':<12}{'preset FQ':>12}{'preset MU':>12}{'sweep FQ':>12}{'sweep MU':>12}{'trials':>8}"
          f"{'feasible':>10}{'wall s':>10}  best params")
    for m in methods:
        p, doc = row(board, m), results[m]
        best = doc.get("best") or {}
        s = best.get("summary") or {}
        recs = _records(out / m)
        wall = sum(r.get("duration_s") or 0 for r in recs)
        feasible = sum(1 for r in recs if r.get("feasible"))
        params = ", ".join(f"{k}={fmt(v)}" for k, v in (best.get("params") or {}).items())
        print(f"{m:<12}{fmt(p.get('forget_quality')):>12}{fmt(p.get('model_utility')):>12}"
              f"{fmt(s.get('forget_quality')):>12}{fmt(s.get('model_utility')):>12}{len(recs):>8}{feasible:>10}"
              f"{wall:>10.0f}  {params}")

    def claim(text: str, ok: bool | None) -> None:
        print(f"  {'ok    ' if ok else 'MISSED' if ok is not None else 'n/a   '} {text}")

    print("\nclaims:")
    for m in MUST_BEAT_PRESET:
        if m not in results:
            claim(f"{m}: not swept (--methods)", None)
            continue
        p, best = row(board, m), results[m].get("best")
        pre_fq, pre_mu = p.get("forget_quality"), p.get("model_utility")
        preset_ok = pre_fq is not None and pre_mu is not None and floor is not None and pre_mu >= floor
        if best is None:
            claim(f"{m}: the sweep found no trial with MU >= {fmt(floor)}", False)
            continue
        fq = best["summary"]["forget_quality"]
        claim(f"{m}: sweep FQ {fmt(fq)} at MU {fmt(best['summary']['model_utility'])} > preset FQ "
              f"{fmt(pre_fq) if preset_ok else '(preset misses the MU floor: MU ' + fmt(pre_mu) + ')'}",
              (not preset_ok) or fq > pre_fq)
    swept = {m: d["best"] for m, d in results.items() if d.get("best")}
    if swept:
        top = max(swept, key=lambda m: swept[m]["summary"]["forget_quality"])
        fq = swept[top]["summary"]["forget_quality"]
        claim(f"best method {top}: FQ {fmt(fq)} >= {FQ_GOAL} at MU >= 0.95 x target", fq >= FQ_GOAL)
        if fq < FQ_GOAL:
            _frontier(out, methods)
    else:
        claim("no method has a trial with MU >= 0.95 x target", False)
        _frontier(out, methods)
    print(f"\npresets: {out / 'presets.yaml'} (obliviate bench --presets {out / 'presets.yaml'})")
    return 0


def _records(d: Path) -> list[dict]:
    f = d / "trials.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def _frontier(out: Path, methods: list[str]) -> None:
    """The FQ–MU Pareto frontier over every finished trial of every method: no other trial has both a higher FQ
    and a higher MU."""
    pts = []
    for m in methods:
        for r in _records(out / m):
            s = r.get("summary") or {}
            if r["state"] == "complete" and s.get("forget_quality") is not None and s.get("model_utility") is not None:
                pts.append((s["model_utility"], s["forget_quality"], m, r["number"], r["params"]))
    pts.sort(key=lambda p: (-p[0], -p[1]))
    print("\nFQ–MU frontier of the sweeps (MU descending):")
    best_fq = -1.0
    for mu, fq, m, n, params in pts:
        if fq > best_fq:
            best_fq = fq
            print(f"  MU {fmt(mu):>8}  FQ {fmt(fq):>10}  {m} trial {n}: "
                  + ", ".join(f"{k}={fmt(v)}" for k, v in params.items()))


if __name__ == "__main__":
    sys.exit(main())
