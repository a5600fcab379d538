"""Acceptance figures of the offline models (issue: the measuring instrument).

Builds (or reuses from the cache, unless --fresh) the target and retain models of each scenario and prints:
the target's greedy ROUGE-L recall on forget and retain (>= 0.9), the retain model's forget ROUGE-L recall
(<= 0.5), the target's forget quality against the retain model (<= 0.01), and the build wall time
(synthetic <= 3 min, tofu-mini <= 20 min on 2 cores).

    python benchmarks/build.py [--scenarios synthetic,tofu-mini] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: E402,F401  (offline; the TOFU data beside the checkout)

from obliviate import api  # noqa: E402

LIMITS = {"synthetic": 180, "tofu-mini": 1200}
CHECKS = [  # (label, value getter, comparison, threshold)
    ("target forget ROUGE-L recall", lambda t, r: t["forget_rougeL_recall"], ">=", 0.9),
    ("target retain ROUGE-L recall", lambda t, r: t["retain_rougeL_recall"], ">=", 0.9),
    ("retain-model forget ROUGE-L recall", lambda t, r: r["forget_rougeL_recall"], "<=", 0.5),
    ("target forget quality vs retain", lambda t, r: t["forget_quality"], "<=", 0.01),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="synthetic,tofu-mini")
    ap.add_argument("--fresh", action="store_true", help="build into an empty cache to time a real build")
    args = ap.parse_args()
    if args.fresh:
        os.environ["OBLIVIATE_CACHE"] = tempfile.mkdtemp(prefix="obliviate-bench-")
    ok = True
    for scen in args.scenarios.split(","):
        t0 = time.time()
        res = api.build(scen)
        wall = res.info.get("wall_time_s", time.time() - t0)
        metrics = ["forget_rougeL_recall", "retain_rougeL_recall", "forget_quality", "model_utility"]
        tgt = api.evaluate(res.target, scen, reference=res.retain, config={"metrics": metrics}).summary
        ret = api.evaluate(res.retain, scen, reference=res.retain, config={"metrics": metrics}).summary
        print(f"\n== {scen}: build {wall:.0f} s (limit {LIMITS.get(scen, '-')} s){' [cached]' if res.cached else ''}")
        print(f"   models: {res.target.parent}  params: {res.info['models']['target']['params']:,}")
        for label, get, op, thr in CHECKS:
            v = get(tgt, ret)
            good = v is not None and (v >= thr if op == ">=" else v <= thr)
            ok &= good
            print(f"   {label:<38} {v:.4g}  ({op} {thr})  {'ok' if good else 'MISSED'}")
        good = wall <= LIMITS.get(scen, float("inf"))
        print(f"   {'build wall time':<38} {wall:.0f} s  (<= {LIMITS.get(scen, '-')} s)  {'ok' if good else 'MISSED'}")
        print(f"   model utility: target {tgt['model_utility']:.3f}, retain {ret['model_utility']:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
