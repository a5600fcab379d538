"""The four seed methods next to the baselines, on tofu-mini (same metrics as benchmarks/baselines.py), and the
papers' claims checked at this scale:
- RKLD: forget quality above NPO's at model utility no lower than NPO's; reverse KL above the forward-KL ablation.
- ICU: MU >= 0.9 x the target's at a forget ROUGE-L no higher than GradDiff's.
- UniErase: forget ROUGE-L <= 0.2 and refusal rate >= 0.8 with MU >= 0.9 x the target's; sequential mode with 10
  requests keeps MU >= 0.85 x the target's; wall time against GradDiff's.
- Reveal-and-Release, given only the forget authors' names: forget ROUGE-L within 0.15 of GradDiff WITH the forget
  file, at MU no lower than GradDiff's.
- UniErase's keys at the subject's last token (the paper's edit; bases of >= 8 layers).
- The best method of the table: FQ >= 0.9 at MU >= 0.95 x the target's.
- Recovery: the relearn attack brings that method's other-half forget ROUGE-L to <= 1.5 x its value after
  unlearning; printed beside it, the answers' probability after the attack against the retain model's (attacked the
  same way: it never learned the forget set), which tells knowledge hidden from knowledge removed.
Where a claim does not hold at this scale the numbers are printed as they are.

    python benchmarks/seed_methods.py [--scenario tofu-mini] [--out runs/bench] [--methods ...] [--base smollm2-135m]
        [KEY=VALUE ...]   # the models' build recipe, e.g. rehearsal.source=general (as benchmarks/build.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import fmt, print_table, row

COLS = ["forget_quality", "model_utility", "forget_rougeL_recall", "forget_refusal_rate", "privleak", "wall_time_s",
        "peak_memory_mb", "params_changed"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--methods", default="graddiff,npo,rkld,rkld_forward,icu,unierase,unierase_seq,reveal_release")
    ap.add_argument("--base", default="tiny", help="tiny, or a pretrained base (obliviate ls bases)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="training seeds per method (bench --seeds): claim 5 is then also judged on the best "
                         "method's mean across them, not only on its luckiest run")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE build settings (the models' recipe)")
    args = ap.parse_args()
    from obliviate.config import parse_overrides
    from obliviate.runs.bench import bench
    from obliviate.methods import METHODS

    wanted = args.methods.split(",")
    # ablations and modes run as extra rows: their outputs go to runs/<name> through bench's per-method overrides
    variants = {"rkld_forward": ("rkld", {"divergence": "forward"}), "unierase_seq": ("unierase", {"mode": "sequential"})}
    plain = [m for m in wanted if m in METHODS and m not in variants]
    out = Path(f"{args.out}-{args.scenario}" + ("" if args.base == "tiny" else f"-{args.base}"))
    recipe = parse_overrides(args.overrides)
    board = bench(args.scenario, plain, out, args.jobs, base=args.base, build=recipe,
                  progress=lambda m: print(m, flush=True), seeds=args.seeds)
    rows = list(board["rows"])
    for name in [v for v in wanted if v in variants]:
        method, over = variants[name]
        if method not in METHODS:
            continue
        sub_out = out / "variants" / name  # its retain and target evaluations come from the cache (evals/)
        sub = bench(args.scenario, [method], sub_out, args.jobs, overrides={method: over},
                    base=args.base, build=recipe, progress=lambda m: print(m, flush=True))
        r = dict(row(sub, method))
        r["name"] = name
        rows.append(r)
    print()
    print_table(rows, COLS)
    t, get = row(board, "target"), lambda n: next((r for r in rows if r["name"] == n), {})

    def claim(text: str, ok: bool | None) -> None:
        print(f"  {'ok    ' if ok else 'MISSED' if ok is not None else 'n/a   '} {text}")

    print("\nclaims at this scale:")
    rk, npo, fw, gd = get("rkld"), get("npo"), get("rkld_forward"), get("graddiff")
    if rk.get("forget_quality") is not None and npo.get("forget_quality") is not None:
        claim(f"RKLD FQ {fmt(rk['forget_quality'])} > NPO FQ {fmt(npo['forget_quality'])} with MU "
              f"{fmt(rk['model_utility'])} >= NPO's {fmt(npo['model_utility'])}",
              rk["forget_quality"] > npo["forget_quality"] and rk["model_utility"] >= npo["model_utility"])
    if rk.get("forget_quality") is not None and fw.get("forget_quality") is not None:
        claim(f"RKLD reverse-KL FQ {fmt(rk['forget_quality'])} > forward-KL FQ {fmt(fw['forget_quality'])}",
              rk["forget_quality"] > fw["forget_quality"])
    icu = get("icu")
    if icu.get("model_utility") is not None and gd.get("forget_rougeL_recall") is not None:
        claim(f"ICU MU {fmt(icu['model_utility'])} >= 0.9 x target {fmt(0.9 * t['model_utility'])} at forget ROUGE-L "
              f"{fmt(icu['forget_rougeL_recall'])} <= GradDiff's {fmt(gd['forget_rougeL_recall'])}",
              icu["model_utility"] >= 0.9 * t["model_utility"]
              and icu["forget_rougeL_recall"] <= gd["forget_rougeL_recall"])
    ue = get("unierase")
    if ue.get("model_utility") is not None:
        claim(f"UniErase forget ROUGE-L {fmt(ue['forget_rougeL_recall'])} <= 0.2, refusals "
              f"{fmt(ue['forget_refusal_rate'])} >= 0.8, MU {fmt(ue['model_utility'])} >= 0.9 x target "
              f"{fmt(0.9 * t['model_utility'])}",
              ue["forget_rougeL_recall"] <= 0.2 and (ue["forget_refusal_rate"] or 0) >= 0.8
              and ue["model_utility"] >= 0.9 * t["model_utility"])
        if gd.get("wall_time_s"):
            print(f"         UniErase wall time {fmt(ue['wall_time_s'])} s vs GradDiff {fmt(gd['wall_time_s'])} s")
        man = out / "runs" / "unierase" / "manifest.json"
        info = json.loads(man.read_text()).get("run_info", {}).get("unierase", {}) if man.is_file() else {}
        if info:
            claim(f"UniErase keys read at the subject's last token (key_position {info.get('key_position')}, edit "
                  f"layers {info.get('layers')})", info.get("key_position") == "subject_last")
    us = get("unierase_seq")
    if us.get("model_utility") is not None:
        claim(f"UniErase sequential MU {fmt(us['model_utility'])} >= 0.85 x target {fmt(0.85 * t['model_utility'])}",
              us["model_utility"] >= 0.85 * t["model_utility"])
        curve = out / "variants" / "unierase_seq" / "runs" / "unierase"
        for f in curve.glob("*.json"):
            if "sequential" in f.name or "requests" in f.name:
                print(f"         per-request curve: {f}")
    rr = get("reveal_release")
    if rr.get("model_utility") is not None and gd.get("model_utility") is not None:
        log_file = out / "runs" / "reveal_release" / "reveal_release.json"  # the per-round log
        n_rounds = json.loads(log_file.read_text()).get("rounds_released") if log_file.is_file() else None
        claim(f"Reveal-and-Release (names only, {n_rounds} rounds): forget ROUGE-L {fmt(rr['forget_rougeL_recall'])} "
              f"within 0.15 of GradDiff's with the forget file ({fmt(gd['forget_rougeL_recall'])}; FQ "
              f"{fmt(rr['forget_quality'])} vs {fmt(gd['forget_quality'])}), MU {fmt(rr['model_utility'])} >= "
              f"GradDiff's {fmt(gd['model_utility'])}",
              rr["forget_rougeL_recall"] <= gd["forget_rougeL_recall"] + 0.15
              and rr["model_utility"] >= gd["model_utility"])
    print("         (forgetting what the base knew before fine-tuning, by name: benchmarks/forget_by_name.py)")
    if t.get("model_utility") is not None:
        floor = 0.95 * t["model_utility"]
        best = max((r for r in rows if r["name"] not in ("target", "retain") and r.get("forget_quality") is not None
                    and (r.get("model_utility") or 0) >= floor), key=lambda r: r["forget_quality"], default=None)
        claim(f"best FQ at MU >= 0.95 x target ({fmt(floor)}): "
              + (f"{best['name']} {fmt(best['forget_quality'])} >= 0.9" if best else "no method keeps that MU"),
              best is not None and best["forget_quality"] >= 0.9)
        spread = next((e["metrics"] for e in board.get("across_seeds", []) if best and e["method"] == best["method"]),
                      None)
        if spread and "forget_quality" in spread and "model_utility" in spread:
            fq, mu = spread["forget_quality"], spread["model_utility"]
            claim(f"the same across {fq['n']} seeds of {best['method']}: mean FQ {fmt(fq['mean'])} >= 0.9 (range "
                  f"{fmt(fq['min'])}-{fmt(fq['max'])}) at mean MU {fmt(mu['mean'])} >= {fmt(floor)} (lowest "
                  f"{fmt(mu['min'])})", fq["mean"] >= 0.9 and mu["mean"] >= floor)
        relearn_claim(board, best if best is not None and best["name"] not in variants else None, out,
                      args.scenario, claim)
    print(f"\nreport: {out / 'report.html'}")
    return 0


def relearn_claim(board: dict, best: dict | None, out: Path, scenario: str, claim) -> None:
    """Claim 6: the relearn attack on the best method (the best feasible one, else the highest FQ of the table) and
    on the retain model beside it (the control, which never learned the forget set): recovery <= 1.5, and the
    answers' probability after the attack against the control's (far above it: hidden, not removed)."""
    from obliviate.runs.attacks import attack_rows
    from obliviate.runs.common import load_scenario

    cands = [r for r in board["rows"] if r.get("kind") == "method" and r.get("forget_quality") is not None]
    top = best or max(cands, key=lambda r: r["forget_quality"], default=None)
    if top is None:
        return
    models = Path(board["models"])
    pair = [{"name": top["name"]}, {"name": "retain"}]
    attack_rows(pair, out, load_scenario(scenario), ["relearn"], models / "target", lambda m: print(m, flush=True),
                retain=models / "retain")
    got, ctrl = pair
    rec = got.get("attack_relearn_recovery")
    if rec is None:
        print(f"  n/a    relearn on {top['name']}: nothing measured before the attack (forget ROUGE-L 0)")
        return
    claim(f"relearn (10 steps on half the forget set) on {top['name']}: the other half's forget ROUGE-L "
          f"x{fmt(rec)} <= 1.5", rec <= 1.5)
    p, pc = got.get("attack_relearn_prob_after"), ctrl.get("attack_relearn_prob_after")
    if p is not None and pc:
        print(f"         its answers' probability after the attack {fmt(p)} vs the retain model's {fmt(pc)} "
              f"({fmt(p / pc)}x: {'hidden, not removed' if p > 2 * pc else 'no more than a model that never knew'})")


if __name__ == "__main__":
    sys.exit(main())
