"""The standard baselines on tofu-mini: one table with FQ, MU, forget ROUGE-L, privleak, wall time and peak
memory, with the tiny-model hyperparameters of obliviate/bench/presets.py (the papers' settings scaled: the
forget set is 40 items, batch 8, 10 epochs, learning rates for a 5M model trained at 1e-3).

Checks the issue's claim: GradDiff and NPO cut the target's forget ROUGE-L recall by at least half while keeping
MU >= 0.8 x the target's.

    python benchmarks/baselines.py [--scenario tofu-mini] [--out runs/bench] [--jobs 2] [--base smollm2-135m]

With `--base`, on that base's models and scale presets (the real instrument: `--base smollm2-135m`).
"""

from __future__ import annotations

import argparse
import sys

from _common import print_table, row

BASELINES = ["ga", "graddiff", "ga_kl", "npo", "npo_gd", "npo_kl", "simnpo", "idknll", "idkdpo", "rmu"]
COLS = ["forget_quality", "model_utility", "forget_rougeL_recall", "privleak", "wall_time_s", "peak_memory_mb"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--methods", default=",".join(BASELINES))
    ap.add_argument("--base", default="tiny", help="tiny, or a pretrained base (obliviate ls bases)")
    args = ap.parse_args()
    out = f"{args.out}-{args.scenario}" + ("" if args.base == "tiny" else f"-{args.base}")
    from obliviate.runs.bench import bench

    board = bench(args.scenario, args.methods.split(","), out, args.jobs, base=args.base,
                  progress=lambda m: print(m, flush=True))
    print()
    print_table(board["rows"], COLS)
    target = row(board, "target")
    ok = True
    for name in ("graddiff", "npo"):
        r = row(board, name)
        if not r or r.get("error"):
            print(f"{name}: missing or failed")
            ok = False
            continue
        cut = r["forget_rougeL_recall"] <= 0.5 * target["forget_rougeL_recall"]
        keep = r["model_utility"] >= 0.8 * target["model_utility"]
        ok &= cut and keep
        print(f"{name}: forget ROUGE-L {r['forget_rougeL_recall']:.3f} vs target {target['forget_rougeL_recall']:.3f} "
              f"(<= half: {'ok' if cut else 'MISSED'}); MU {r['model_utility']:.3f} vs 0.8 x target "
              f"{0.8 * target['model_utility']:.3f} ({'ok' if keep else 'MISSED'})")
    print(f"report: {out}/report.html")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
