"""The teacher-forced pass with and without Min-K%++'s vocabulary moments (`logprob_pass(vocab_stats=...)`): the
evaluation asks for them on the forget and holdout splits only, where the attacks read them. Times both forms on a
split's truth-ratio sequences (answer, paraphrase, perturbed answers: what `split_stats` scores), alternated, and
checks that the label log-probs and argmax checks agree.

    python benchmarks/vocab_stats.py                       # the real instrument's base (SmolLM2-135M), 40 retain items
    python benchmarks/vocab_stats.py --base tiny --items 400

Prints per form the wall time of each repeat and the largest log-prob difference between the two."""

from __future__ import annotations

import argparse
import time

import _common  # (offline; the TOFU data beside the checkout)

import numpy as np
import torch

from obliviate.data.records import Split
from obliviate.eval import runner as R
from obliviate.runs.common import load_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="smollm2-135m", help="a pretrained base (obliviate ls bases), or tiny")
    ap.add_argument("--split", default="retain")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = _common.model_of(args.base, args.scenario)
    scen = load_scenario(args.scenario)
    full = scen.eval_splits[args.split]
    split = Split(full.name, full.records[:args.items], full.source)
    times: dict[bool, list[float]] = {False: [], True: []}
    stats: dict[bool, list] = {}
    for _ in range(args.repeats):
        for vocab in (False, True):
            runner = R.ModelRunner(model, tok)  # no disk cache: every pass runs
            t0 = time.time()
            got = runner.split_stats(split, vocab_stats=vocab)
            times[vocab].append(time.time() - t0)
            stats[vocab] = [s for k in ("answer", "para") for s in got[k]] + [s for p in got["pert"] for s in p]
    diff = max(float(np.abs(a.logps - b.logps).max(initial=0)) for a, b in zip(stats[False], stats[True], strict=True))
    same = all((a.correct == b.correct).all() for a, b in zip(stats[False], stats[True], strict=True))
    tokens = sum(len(s.logps) for s in stats[True])
    print(f"{args.scenario} {args.split}, {len(split)} items ({len(stats[True])} sequences, {tokens} answer tokens), "
          f"{args.base}, {args.threads} thread(s):")
    for vocab, label in ((False, "log p(y) and argmax only"), (True, "+ Min-K%++'s mu and sigma")):
        print(f"  {label:<28} " + "  ".join(f"{t:.1f} s" for t in times[vocab]))
    print(f"  ratio (best of each): {min(times[True]) / min(times[False]):.2f}x; largest log p difference {diff:.1e}; "
          f"argmax checks {'equal' if same else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
