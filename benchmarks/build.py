"""Acceptance figures of the offline models (issue: the measuring instrument).

Builds (or reuses from the cache, unless --fresh) the target and retain models of each scenario and prints:
the target's greedy ROUGE-L recall on forget and retain (>= 0.9), the retain model's forget ROUGE-L recall
(<= 0.5), the target's forget quality against the retain model (<= 0.01), and the build wall time
(synthetic <= 3 min, tofu-mini <= 20 min on 2 cores). With `--base` (a pretrained base, e.g. smollm2-135m, the
real instrument): the target fine-tuned on tofu-mini's QA, the same checks, both models in <= 45 min, and the
target's real_authors / world_facts ROUGE-L within 0.05 of the untouched base model's (its general knowledge
survives the fine-tuning).

    python benchmarks/build.py [--scenarios synthetic,tofu-mini] [--fresh]
    python benchmarks/build.py --scenarios tofu-mini --base smollm2-135m
    python benchmarks/build.py --scenarios tofu-mini --base smollm2-135m rehearsal.n=60   # KEY=VALUE: the recipe
    python benchmarks/build.py --scenarios tofu-mini --base smollm2-135m --target-only train.freeze_embeddings=true
    python benchmarks/build.py --scenarios tofu-mini --base smollm2-135m --target-only --reference DIR train.seed=1

--target-only explores a recipe at half the cost: the target alone on one thread, not cached (kept in a temporary
directory, or --out), and only the checks that read the target alone (its forget / retain ROUGE-L, its general
knowledge against the base's). With --reference (a retain model built before, or the directory of its saved
evaluation, e.g. a bench run's eval/retain) it also gives the target's forget quality against that model: a seed's
or a recipe's FQ without building its own retain model. The retain model's own checks and the build time need the
full build.
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
PRETRAINED_LIMIT = 45 * 60
GENERAL = ("real_authors_rougeL_recall", "world_facts_rougeL_recall")
CHECKS = [  # (label, value getter, comparison, threshold)
    ("target forget ROUGE-L recall", lambda t, r: t["forget_rougeL_recall"], ">=", 0.9),
    ("target retain ROUGE-L recall", lambda t, r: t["retain_rougeL_recall"], ">=", 0.9),
    ("retain-model forget ROUGE-L recall", lambda t, r: r["forget_rougeL_recall"], "<=", 0.5),
    ("target forget quality vs retain", lambda t, r: t["forget_quality"], "<=", 0.01),
]


def _pass_done(desc: str, done: int, total: int) -> None:
    """Each finished model pass, with the time: where an evaluation spends it."""
    if done == total:
        print(f"   [{time.strftime('%H:%M:%S')}] {desc} done", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="synthetic,tofu-mini")
    ap.add_argument("--fresh", action="store_true", help="build into an empty cache to time a real build")
    ap.add_argument("--base", default="tiny", help="tiny, or a pretrained base (obliviate ls bases)")
    ap.add_argument("--utility", action="store_true", help="also the two models' model utility (on the real "
                    "instrument a teacher-forced pass over 2,800 retain sequences per model: minutes)")
    ap.add_argument("--target-only", action="store_true", help="train the target alone on one thread (a recipe's "
                    "target checks at half the cost; not cached)")
    ap.add_argument("--out", help="--target-only: where to keep the trained target (default: a temporary directory)")
    ap.add_argument("--reference", help="--target-only: a retain model (or its saved evaluation) to read the "
                    "target's forget quality against")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE build settings (train.lr=1e-4, rehearsal.n=60, ...)")
    args = ap.parse_args()
    from obliviate.config import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.fresh:
        os.environ["OBLIVIATE_CACHE"] = tempfile.mkdtemp(prefix="obliviate-bench-")
    if args.target_only:
        return target_only(args.scenarios.split(","), args.base, overrides, args.out, args.reference)
    if args.reference:
        raise SystemExit("--reference goes with --target-only (a full build reads FQ against its own retain model)")
    ok = True
    for scen in args.scenarios.split(","):
        t0 = time.time()
        res = api.build(scen, base=args.base, overrides=overrides)
        wall = res.info.get("wall_time_s", time.time() - t0)
        limit = LIMITS.get(scen, float("inf")) if args.base == "tiny" else PRETRAINED_LIMIT
        # only what the checks read: an evaluation restricted to metrics runs only the passes they need
        metrics = ["forget_rougeL_recall", "retain_rougeL_recall", "forget_quality"]
        metrics += ["model_utility"] if args.utility else []
        metrics += list(GENERAL) if args.base != "tiny" else []
        t1 = time.time()
        tgt = api.evaluate(res.target, scen, reference=res.retain, config={"metrics": metrics},
                           progress=_pass_done).summary
        eval_s = time.time() - t1
        ret = api.evaluate(res.retain, scen, config={"metrics": ["forget_rougeL_recall"]
                                                     + (["model_utility"] if args.utility else [])},
                           progress=_pass_done).summary
        print(f"\n== {scen} on {args.base}: build {wall:.0f} s (limit {limit:.0f} s){' [cached]' if res.cached else ''}")
        print(f"   target evaluation: {eval_s:.0f} s (these metrics; passes cached per model fingerprint)")
        print(f"   models: {res.target.parent}  params: {res.info['models']['target']['params']:,}")
        ok &= run_checks(CHECKS, tgt, ret)
        good = wall <= limit
        ok &= good
        print(f"   {'build wall time':<38} {wall:.0f} s  (<= {limit:.0f} s)  {'ok' if good else 'MISSED'}")
        if args.base != "tiny":  # general knowledge: the target against the untouched base
            ok &= general_checks(tgt, args.base, scen)
        if args.utility:
            print(f"   model utility: target {tgt['model_utility']:.3f}, retain {ret['model_utility']:.3f}")
    return 0 if ok else 1


def run_checks(checks, tgt: dict, ret: dict | None) -> bool:
    """Each (label, getter, comparison, threshold) of `checks` on the target's / retain model's summaries, printed;
    True when all hold."""
    ok = True
    for label, get, op, thr in checks:
        v = get(tgt, ret)
        good = v is not None and (v >= thr if op == ">=" else v <= thr)
        ok &= good
        print(f"   {label:<38} {v:.4g}  ({op} {thr})  {'ok' if good else 'MISSED'}")
    return ok


def general_checks(tgt: dict, base: str, scen: str) -> bool:
    """The target's general knowledge against the untouched base's (within 0.05), printed; True when both hold."""
    ok = True
    ref = api.evaluate(base, scen, config={"metrics": list(GENERAL)}, progress=_pass_done).summary
    for k in GENERAL:
        good = tgt[k] is not None and ref[k] is not None and abs(tgt[k] - ref[k]) <= 0.05
        ok &= good
        print(f"   {k:<38} target {tgt[k]:.4g} vs base {ref[k]:.4g} (within 0.05)  {'ok' if good else 'MISSED'}")
    return ok


def target_only(scenarios: list[str], base: str, overrides: dict, out: str | None, reference: str | None) -> int:
    """Train each scenario's target alone (one thread, as one of a build's two processes) and print the checks
    that read it alone, and its forget quality against `reference` when one is given."""
    import torch

    from obliviate.data.scenarios import get_scenario
    from obliviate.runs import build as B

    if base == "tiny":
        raise SystemExit("--target-only needs --base (a tiny target needs the tokenizer the full build trains)")
    if reference and not Path(reference).exists():  # before the training, not after it
        raise SystemExit(f"--reference {reference}: no such directory; give a retain model or its saved evaluation "
                         "(e.g. runs/bench-anchored/eval/retain)")
    torch.set_num_threads(1)
    ok = True
    for scen_name in scenarios:
        cfg = B.build_config_for(scen_name, {**overrides, "base": base})
        scen = get_scenario(scen_name, **cfg.scenario_options)
        dest = Path(out or tempfile.mkdtemp(prefix="obliviate-target-")) / scen_name
        t0 = time.time()
        anchor = tuple(B.rehearsal_set(cfg, scen)) if cfg.rehearsal is not None else ()
        info = B.train_model("target", B.training_sets(cfg, scen)["target"], None, cfg, dest, anchor=anchor)
        wall = time.time() - t0
        metrics = ["forget_rougeL_recall", "retain_rougeL_recall"] + list(GENERAL)
        metrics += ["forget_quality"] if reference else []
        tgt = api.evaluate(dest / "target", scen, reference=reference, config={"metrics": metrics},
                           progress=_pass_done).summary
        print(f"\n== {scen_name} on {base}, the target alone: {wall:.0f} s on one thread (training {info['train_time_s']:.0f} s, "
              f"final loss {info['final_loss']}); kept in {dest}")
        ok &= run_checks(CHECKS[:2] + (CHECKS[3:] if reference else []), tgt, None)  # those that read the target
        ok &= general_checks(tgt, base, scen_name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
