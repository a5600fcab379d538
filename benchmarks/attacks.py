"""Recovery attacks on every method (tofu-mini by default): forget ROUGE-L before and after each attack and the
recovery ratio (after / before), for the unlearned models, the original target and the retain model (the control:
what the attack teaches a model that never learned the forget set; a method whose models end well above it after
the attack hid the knowledge rather than removed it). The answers' probability after each attack is printed
beside the ROUGE-L where the attack measures it.

    python benchmarks/attacks.py [--scenario tofu-mini] [--out runs/bench] [--attacks relearn,paraphrase,quantize,prefix]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import fmt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--attacks", default="relearn,paraphrase,quantize,prefix")
    args = ap.parse_args()
    from obliviate.runs.bench import bench

    attacks = args.attacks.split(",")
    out = Path(f"{args.out}-{args.scenario}")
    board = bench(args.scenario, args.methods.split(",") if args.methods else None, out, args.jobs,
                  progress=lambda m: print(m, flush=True), attacks=attacks)
    print()
    head = f"{'model':<14}" + "".join(f"{a + ' before/after (ratio) p':>34}" for a in attacks)
    print(head)
    for r in board["rows"]:
        if r.get("error"):
            continue
        f = out / "attacks" / f"{r['name']}.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        cells = []
        for a in attacks:
            x = res.get(a)
            prob = f" p {fmt(x['after']['prob'])}" if x and "prob" in x["after"] else ""
            cells.append(f"{fmt(x['before']['rougeL'])}/{fmt(x['after']['rougeL'])} ({fmt(x['recovery'])}){prob}"
                         if x else "–")
        name = "retain (ctrl)" if r["name"] == "retain" else r["name"]
        print(f"{name:<14}" + "".join(f"{c:>34}" for c in cells))
    print(f"\nreport: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
