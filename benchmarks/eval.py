"""Speed of the evaluation engine: the full tofu-mini evaluation of the target on this machine, with the pass
cache disabled so every model pass really runs; then the same evaluation again from the cache. Targets on 2
cores: the 5M tiny target <= 2 min; the real instrument (`--base smollm2-135m`) <= 3 min.

    python benchmarks/eval.py [--scenario tofu-mini] [--threads 2] [--base smollm2-135m] [--saved-reference]

--saved-reference times the target alone, its reference being the retain model's saved evaluation (computed first,
untimed), as OpenUnlearning reads a retain model's TOFU_EVAL.json: the figure to compare with theirs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: E402,F401  (offline; the TOFU data beside the checkout)

import torch  # noqa: E402

from obliviate import api  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--base", default="tiny", help="tiny, or a pretrained base (obliviate ls bases)")
    ap.add_argument("--saved-reference", action="store_true", help="the reference is the retain model's saved "
                    "evaluation (made first, untimed), not its passes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = api.build(args.scenario, base=args.base)
    limit = 120 if args.base == "tiny" else 180
    with tempfile.TemporaryDirectory() as d:
        os.environ["OBLIVIATE_CACHE"] = d  # a cold pass cache: every pass runs
        ref = res.retain
        if args.saved_reference:
            ref = Path(d) / "retain-eval"
            api.evaluate(res.retain, args.scenario, out=ref)
        t0 = time.time()
        api.evaluate(res.target, args.scenario, reference=ref, config={"cache": False})
        cold = time.time() - t0
        t0 = time.time()
        out = api.evaluate(res.target, args.scenario, reference=res.retain, out=Path(d) / "ev")
        first = time.time() - t0
        t0 = time.time()
        api.evaluate(res.target, args.scenario, reference=res.retain, out=Path(d) / "ev2")
        warm = time.time() - t0
    what = "its reference a saved evaluation" if args.saved_reference else "+ reference passes"
    print(f"{args.scenario} on {args.base}: full evaluation of the target ({what}), {args.threads} threads:")
    print(f"  uncached: {cold:.1f} s  (target <= {limit} s: {'ok' if cold <= limit else 'MISSED'})")
    print(f"  first run filling the pass cache: {first:.1f} s; from the cache: {warm:.1f} s")
    print(f"  forget quality {out.summary['forget_quality']:.3g}, model utility {out.summary['model_utility']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
