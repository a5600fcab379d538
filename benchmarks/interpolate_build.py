"""Weight interpolation toward the base (WiSE-FT, Wortsman et al. 2022) as a way to keep a pretrained base's
general knowledge through the build (issue: the real instrument).

For each alpha, theta_alpha = theta_base + alpha * (theta_target - theta_base), with no retraining, and prints the
target's greedy ROUGE-L recall on the forget set (the build keeps >= 0.9) beside real_authors / world_facts (the
build should stay within 0.05 of the untouched base's). One model per alpha is written to a temporary directory
and removed after its evaluation; the built models are only read.

    python benchmarks/interpolate_build.py [--base smollm2-135m] [--alphas 0.5,0.7,0.85] [KEY=VALUE build settings]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: E402,F401  (offline; the TOFU data beside the checkout)

from obliviate import api  # noqa: E402

METRICS = ["forget_rougeL_recall", "real_authors_rougeL_recall", "world_facts_rougeL_recall"]


def interpolate(base: Path, target: Path, alpha: float, out: Path) -> None:
    """`target`'s directory (config, tokenizer, template) with its weights moved back toward `base`'s."""
    from safetensors.torch import save_file

    from obliviate.utils.tensors import saved_weights

    t, b = saved_weights(target), saved_weights(base)
    if not t or not b:
        raise SystemExit(f"no .safetensors weights in {target if not t else base}: interpolation reads safetensors")
    if set(t) != set(b):
        raise SystemExit(f"{target} and {base} hold different tensors: not the same architecture")
    shutil.copytree(target, out, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    save_file({k: (b[k] + alpha * (t[k] - b[k])).contiguous() for k in t}, str(out / "model.safetensors"),
              metadata={"format": "pt"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--alphas", default="0.5,0.7,0.85")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE build settings (the build to interpolate)")
    args = ap.parse_args()
    from obliviate.config import parse_overrides
    from obliviate.models.bases import resolve_base

    built = api.build(args.scenario, base=args.base, overrides=parse_overrides(args.overrides))
    base_dir = Path(resolve_base(args.base))
    # the built target's tokenisation (build.json), which a copy outside the build directory would not find
    cfg = {"metrics": METRICS, "tokenize": built.info["models"]["target"]["tokenize"]}
    rows = [("base", api.evaluate(args.base, args.scenario, config={"metrics": METRICS}).summary)]
    for a in (float(x) for x in args.alphas.split(",")):
        with tempfile.TemporaryDirectory(prefix="obliviate-wise-") as tmp:
            d = Path(tmp) / "model"
            t0 = time.time()
            interpolate(base_dir, Path(built.target), a, d)
            rows.append((f"alpha {a:g}", api.evaluate(str(d), args.scenario, config=cfg).summary))
            print(f"   alpha {a:g} evaluated in {time.time() - t0:.0f} s", flush=True)
    rows.append(("target (alpha 1)", api.evaluate(built.target, args.scenario, config={"metrics": METRICS}).summary))
    print(f"\n{'model':<18}" + "".join(f"{m:>30}" for m in METRICS))
    for name, s in rows:
        print(f"{name:<18}" + "".join(f"{s[m]:>30.4f}" for m in METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
