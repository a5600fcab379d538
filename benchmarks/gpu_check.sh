#!/usr/bin/env bash
# The GPU path, checked end to end on one CUDA machine (issue 17): the real instrument (SmolLM2-135M-Instruct
# fine-tuned on tofu-mini, the README's recipe) built, unlearned with npo_gd, evaluated and attacked (relearn), with
# training in bf16 mixed precision (accelerate's bf16: fp32 master weights, bf16 autocast) and everything on the
# GPU; then npo_gd again under FSDP over the machine's GPUs when it has two or more. Prints each number next to the
# CPU run's (README, "The real instrument": fp32, 2 cores) with its tolerance and ok/MISSED, and the peak GPU
# memory of every unlearning run (the CUDA allocator's peak, from each manifest; the builds record none).
#
#   bash benchmarks/gpu_check.sh [OUT]            # OUT defaults to runs/gpu-check; needs CUDA and the wheel
#
# Tolerances: bf16 rounding changes the training trajectory, not the outcome. The builds' ROUGE-L within 0.05
# (they memorise or they do not), npo_gd's forget/retain ROUGE-L within 0.10 and model utility within 0.05, forget
# quality within one order of magnitude (a KS p-value over 40 items moves in steps).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OBLIVIATE_TOFU_DIR=${OBLIVIATE_TOFU_DIR:-$(cd .. && pwd)/shared/data/tofu}
export ACCELERATE_MIXED_PRECISION=bf16
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else
  "gpu_check.sh needs a CUDA device (torch sees none); the project itself never does")' || exit 2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')

RECIPE=(build.rehearsal.source=general build.rehearsal.answer_sentences=1 build.rehearsal.answer_tokens=48)
t0=$(date +%s)
"$PY" -m obliviate bench --scenario tofu-mini --base smollm2-135m --methods npo_gd --jobs 1 --attacks relearn \
    --out "$OUT/bench" "${RECIPE[@]}"
echo "bench (build, npo_gd, evaluations, relearn attack): $(( $(date +%s) - t0 )) s"

if [ "$GPUS" -ge 2 ]; then
  MODELS=$("$PY" -c "import json; print(json.load(open('$OUT/bench/leaderboard.json'))['models'])")
  "$PY" -m torch.distributed.run --nproc_per_node "$GPUS" -m obliviate unlearn --model "$MODELS/target" \
      --method npo_gd --scenario tofu-mini --fsdp --overwrite --out "$OUT/npo_gd-fsdp" --eval \
      --reference "$MODELS/retain" batch_size=8 epochs=5 warmup_epochs=1 lr=3e-4 lora.r=32 lora.alpha=64 \
      "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"   # bench/presets.py SMOLLM2
fi

"$PY" - "$OUT" <<'EOF'
import json, math, sys
from pathlib import Path

out = Path(sys.argv[1])
board = json.loads((out / "bench" / "leaderboard.json").read_text())
rows = {r["name"]: r for r in board["rows"]}
# the CPU numbers (README, "The real instrument", fp32 on 2 cores) and the tolerance of each
cpu = [("target", "forget_rougeL_recall", 0.959, 0.05), ("target", "retain_rougeL_recall", 0.985, 0.05),
       ("retain", "forget_rougeL_recall", 0.324, 0.05), ("npo_gd", "forget_rougeL_recall", 0.567, 0.10),
       ("npo_gd", "retain_rougeL_recall", 0.755, 0.10), ("npo_gd", "model_utility", 0.224, 0.05),
       ("npo_gd", "forget_quality", 0.014, "x10")]
bad = 0
for name, key, want, tol in cpu:
    got = rows.get(name, {}).get(key)
    if got is None:
        ok = False
    elif tol == "x10":
        ok = abs(math.log10(max(got, 1e-300)) - math.log10(want)) <= 1
    else:
        ok = abs(got - want) <= tol
    bad += not ok
    shown = "—" if got is None else f"{got:.4g}"
    print(f"{name:>7} {key:<22} gpu {shown:>9}  cpu {want:<7} tol {tol!s:<5} {'ok' if ok else 'MISSED'}")
fsdp = out / "npo_gd-fsdp" / "eval" / "summary.json"
if fsdp.is_file():  # FSDP over the GPUs against the single-GPU run of the same settings
    s = json.loads(fsdp.read_text())
    for key in ("forget_rougeL_recall", "model_utility"):
        got, want = s.get(key), rows.get("npo_gd", {}).get(key)
        ok = got is not None and want is not None and abs(got - want) <= 0.05
        bad += not ok
        print(f"npo_gd FSDP {key:<22} {got}  single GPU {want}  tol 0.05 {'ok' if ok else 'MISSED'}")
r = rows.get("npo_gd", {})
print(f"npo_gd relearn attack: forget ROUGE-L after {r.get('attack_relearn_after')}, recovery "
      f"{r.get('attack_relearn_recovery')}")
print("peak GPU memory (CUDA allocator) per unlearning run:")
for man in sorted(out.rglob("manifest.json")):
    m = json.loads(man.read_text())
    per = m.get("peak_memory_bytes_per_rank") or [m.get("peak_memory_bytes", 0)]
    print(f"  {str(man.parent.relative_to(out)):<40} {m.get('method', 'build')!s:<10} "
          f"{', '.join(f'{p / 2**20:,.0f} MiB' for p in per)}  ({m.get('parallelism', 'single')})")
sys.exit(1 if bad else 0)
EOF
