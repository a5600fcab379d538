"""Peak memory per process of one unlearning run: one process against FSDP over 2 CPU processes (gloo, accelerate's
FSDP2), on the largest model here: SmolLM2-135M-Instruct (the real instrument's base), fully fine-tuned, so the
weights, their gradients and AdamW's state are what FSDP shards. The two runs' final weights are compared too.

    python benchmarks/memory.py                      # npo_gd, tofu-mini, 1 epoch of batch 8 (5 optimiser steps)
    python benchmarks/memory.py --model tiny         # the same on a tiny built model (seconds; no wheel needed)
    python benchmarks/memory.py --method npo_kl      # a method with a frozen reference copy (sharded too)
    python benchmarks/memory.py --phases             # + where each process's peak comes from (a phase timeline)
    python benchmarks/memory.py --model 360m-shape   # a randomly initialised model of SmolLM2-360M's shape (362M
                                                     # parameters, the 135M base's tokenizer): how the ratio scales

Each run's peak is its manifest's `peak_memory_bytes_per_rank`: the kernel's resident high-water mark (VmHWM) of
each process from the start of training (the model already loaded) to the saved output. Printed: per-rank peaks,
the ratio of the largest FSDP rank to the single process, ok/MISSED against issue #17's ≤ 0.6, and the largest
weight difference between the two outputs. Both runs use one thread per process (the single run one thread too,
so the two differ only in how the state is laid out), and the same allocator setting: glibc's mmap threshold fixed
at 128 KiB, which obliviate's CPU FSDP path sets itself (without it FSDP's gather-and-free cycle stays resident in
glibc's heap: measured 5.5 / 5.2 GB per FSDP rank against 4.75 GB for one process)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (offline, TOFU data beside the checkout)

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str, work: Path, env: dict[str, str]) -> Path:
    if name == "tiny":
        out = work / "tiny-models"
        if not (out / "target").is_dir():
            subprocess.run([sys.executable, "-m", "obliviate", "build", "tofu-mini", "--out", str(out)], env=env,
                           check=True)
        return out / "target"
    if Path(name).is_dir():
        return Path(name)
    from obliviate.models.bases import resolve_base

    if name == "360m-shape":
        return _shaped(Path(resolve_base("smollm2-135m")), work / "smollm2-360m-shape")
    return Path(resolve_base(name))


SMOLLM2_360M_SHAPE = dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                          num_key_value_heads=5)


def _shaped(base: Path, out: Path) -> Path:
    """A randomly initialised Llama of SmolLM2-360M's shape (the 135M base's config otherwise, its tokenizer and
    chat template), saved once to `out`: memory does not depend on the weights' values."""
    if (out / "model.safetensors").is_file():
        return out
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(base)
    for k, v in SMOLLM2_360M_SHAPE.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (base / f).is_file():
            shutil.copy(base / f, out / f)
    return out


def _phases(folder: Path) -> list[str]:
    """For each training process timed by benchmarks/memprof (its log has optimiser steps): the micro-batch whose
    backward holds the peak, as its resting level, each forward's rise, the backward's rise, and the peak (MiB)."""
    lines = []
    for log in sorted(folder.glob("rss-*.log")):
        rows = [line.split() for line in log.read_text().splitlines() if line[:1].isdigit()]
        if not any(r[1] == "M" and r[2] == "opt0" for r in rows):
            continue  # the launcher, or a process that did not train
        peak_at = max(range(len(rows)), key=lambda i: int(rows[i][-1]))
        marks = [(i, r[2], int(r[3])) for i, r in enumerate(rows) if r[1] == "M"]
        before = [m for m in marks if m[0] <= peak_at]
        ends = [k for k, m in enumerate(before) if m[1] in ("bwd1", "opt1")]
        span = before[ends[-1] + 1:] if ends else before
        rest = next((m[2] for m in span if m[1] == "fwd0"), span[0][2] if span else 0)
        level, rises = rest, []
        for _, tag, rss in span:
            if tag == "fwd1":
                rises.append(f"+{rss - level}")
            if tag in ("fwd1", "bwd0"):
                level = rss
        phase = span[-1][1] if span else "?"
        peak = int(rows[peak_at][-1])
        lines.append(f"  {log.stem}: at rest {rest}, forwards {' '.join(rises) or '-'}, then +{peak - level} "
                     f"to the peak {peak} (after mark {phase})")
    return lines


def _run(args: list[str], procs: int, env: dict[str, str]) -> float:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "obliviate"]
                if procs > 1 else [sys.executable, "-m", "obliviate"])
    t0 = time.time()
    res = subprocess.run(launcher + args, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"run failed ({' '.join(args[:4])} ..., {procs} process(es)):\n{res.stderr[-3000:]}")
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a base name, a model directory, or tiny")
    ap.add_argument("--method", default="npo_gd")
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "memory")
    ap.add_argument("--phases", action="store_true",
                    help="time each process's memory by phase (benchmarks/memprof) and say where its peak comes from")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE method settings (default: 1 epoch, batch 8, accum 2)")
    a = ap.parse_args()
    # the allocator setting obliviate's CPU FSDP path makes itself (utils/dist.return_large_blocks), for both runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    model = _model(a.model, a.out, env)
    settings = ["epochs=1", "batch_size=8", "grad_accum=2", "lr=1e-5", "warmup_epochs=0", *a.overrides]
    common = ["unlearn", "--model", str(model), "--method", a.method, "--scenario", a.scenario, "--overwrite",
              *settings]
    runs = {"single": (1, []), "fsdp": (2, ["--fsdp"])}
    peaks, walls = {}, {}
    for name, (procs, extra) in runs.items():
        if a.phases:
            folder = a.out / "phases" / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            env = {**env, "MEMPROF": str(folder),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent / "memprof"),
                                                                 os.environ.get("PYTHONPATH")]))}
        walls[name] = _run([*common, *extra, "--out", str(a.out / name)], procs, env)
        man = json.loads((a.out / name / "manifest.json").read_text())
        assert man["parallelism"] == name, man["parallelism"]
        peaks[name] = man["peak_memory_bytes_per_rank"]
    from obliviate.utils.tensors import max_weight_difference

    diff = max_weight_difference(a.out / "single", a.out / "fsdp")
    mib = 2 ** 20
    print(f"model: {model} ({a.method}, {a.scenario}, {' '.join(settings)})")
    for name in runs:
        ranks = ", ".join(f"{p / mib:,.0f}" for p in peaks[name])
        print(f"{name:<7} peak per process (MiB): {ranks}   wall {walls[name]:.0f} s")
    ratio = max(peaks["fsdp"]) / max(peaks["single"])
    print(f"FSDP (2 processes) / single: {ratio:.2f}  (≤ 0.60: {'ok' if ratio <= 0.6 else 'MISSED'})")
    print(f"largest weight difference, FSDP vs single: {diff:.2e}")
    if a.phases:
        for name in runs:
            print(f"{name}: where the peak comes from (MiB, VmRSS every 20 ms)")
            print("\n".join(_phases(a.out / "phases" / name)))


if __name__ == "__main__":
    main()
