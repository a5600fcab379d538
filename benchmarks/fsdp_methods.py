"""Every gradient method under FSDP (2 CPU processes, gloo) against one process, on a tiny built model of the
synthetic scenario (10 people; the model of tests/test_distributed.py): prints the largest weight difference per method (the README's figures).

    python benchmarks/fsdp_methods.py [--methods ga,npo,...] [--out runs/fsdp-methods]

Settings: lr 1e-3, 2 epochs, batch 4, no warm-up, one thread per process; ICU with ROUGE threshold 0.6 and the
TF-IDF embedder, RKLD with its precomputed teacher (2 augmentation epochs), PDU with the per-epoch dual update
(its per-step one refuses several processes). ~8 min on 2 cores for all of them."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import _common  # noqa: F401  (offline)

ROOT = Path(__file__).resolve().parents[1]
SCEN = ["scenario_options.n_people=10", "scenario_options.n_refusal=4"]
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.vocab_size=400", "train.epochs=2"]  # the model of tests/test_distributed.py
EXTRA = {"icu": ["rouge_threshold=0.6", "embedder=tfidf"], "rkld": ["teacher=precomputed", "aug_epochs=2"],
         "pdu": ["dual_update=epoch"]}


def _run(args: list[str], procs: int, env: dict[str, str]) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "obliviate"]
                if procs > 1 else [sys.executable, "-m", "obliviate"])
    res = subprocess.run(launcher + args, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")


def main() -> None:
    from obliviate.methods import METHODS

    gradient = [n for n, info in METHODS.items() if not info.is_procedural]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(gradient))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "fsdp-methods")
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    models = a.out / "models"
    if not (models / "target").is_dir():
        subprocess.run([sys.executable, "-m", "obliviate", "build", "synthetic", *TINY, *SCEN, "--out", str(models)],
                       env=env, check=True)
    from obliviate.utils.tensors import max_weight_difference

    for m in a.methods.split(","):
        common = ["unlearn", "--model", str(models / "target"), "--method", m, "--scenario", "synthetic", *SCEN,
                  "lr=1e-3", "epochs=2", "batch_size=4", "warmup_epochs=0", "--overwrite", *EXTRA.get(m, [])]
        try:
            _run([*common, "--out", str(a.out / f"{m}-single")], 1, env)
            _run([*common, "--fsdp", "--out", str(a.out / f"{m}-fsdp")], 2, env)
        except RuntimeError as e:
            print(f"{m:<10} failed: {e}")
            continue
        diff = max_weight_difference(a.out / f"{m}-single", a.out / f"{m}-fsdp")
        print(f"{m:<10} largest weight difference, FSDP (2 processes) vs one: {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
