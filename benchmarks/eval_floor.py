"""How fast a full evaluation could possibly run on this machine: the tokens its passes feed the model, against the
model's best forward rate here. Runs the full tofu-mini evaluation of the target (the pass cache cold, the
reference the retain model's saved evaluation, as `benchmarks/eval.py --saved-reference`) with a hook on the
model's decoder that counts, per forward call, the positions it computed and the real ones among them (not
padding); then times the decoder alone on full batches (no padding, no output head, no cache) and divides.

    python benchmarks/eval_floor.py                          # smollm2-135m, 2 threads
    python benchmarks/eval_floor.py --reference runs/bench-anchored/eval/retain    # a retain evaluation made before

The floor is a lower bound on the evaluation's time for any engine that runs the same model over the same tokens
on this machine: it leaves out the output head (49,152 × 576 per scored token on SmolLM2), attention's own
arithmetic, padding, and generation's one-token steps, which run far below the full-batch rate. Prints the
evaluation's wall time, its token counts (teacher-forced and prefill calls apart from one-token decoding steps),
the decoder's rate and the floor, against the issue's 180 s."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (offline; the TOFU data beside the checkout)

import torch

from obliviate import api
from obliviate.runs import evaluate as E


class TokenCount:
    """A forward pre-hook on the decoder: positions computed and real positions, for multi-token calls (scoring,
    prefill) and one-token calls (decoding steps) apart."""

    def __init__(self) -> None:
        self.calls = {"multi": 0, "step": 0}
        self.computed = {"multi": 0, "step": 0}
        self.real = {"multi": 0, "step": 0}

    def __call__(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        mask = kwargs.get("attention_mask")
        new = ids.shape[1]
        kind = "step" if new == 1 else "multi"
        self.calls[kind] += 1
        self.computed[kind] += ids.numel()
        self.real[kind] += int(mask[:, -new:].sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 \
            else ids.numel()


def decoder_rate(model, batch: int, length: int, repeats: int = 3) -> float:
    """Tokens per second of the decoder alone on one full batch (no padding, no head), best of `repeats`."""
    body = model.get_decoder()
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    best = float("inf")
    with torch.inference_mode():
        body(input_ids=ids, use_cache=False)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            body(input_ids=ids, use_cache=False)
            best = min(best, time.perf_counter() - t0)
    return batch * length / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="smollm2-135m", help="a pretrained base (obliviate ls bases), or tiny")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reference", type=Path, help="the retain model's saved evaluation (a directory with "
                    "eval.json); default: evaluate the retain model first (untimed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = api.build(args.scenario, base=args.base)
    count = TokenCount()
    load = E.load_model

    def counted(model, what):  # every model the evaluation loads gets the hook
        m, tok, name = load(model, what)
        m.get_decoder().register_forward_pre_hook(count, with_kwargs=True)
        return m, tok, name

    with tempfile.TemporaryDirectory() as d:
        os.environ["OBLIVIATE_CACHE"] = d  # a cold pass cache: every pass runs
        ref = args.reference
        if ref is None:
            ref = Path(d) / "retain-eval"
            api.evaluate(res.retain, args.scenario, out=ref)
        E.load_model = counted
        try:
            t0 = time.time()
            api.evaluate(res.target, args.scenario, reference=ref, config={"cache": False})
            wall = time.time() - t0
        finally:
            E.load_model = load
    from obliviate.models.loading import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(res.target)
    rates = {(b, t): decoder_rate(model, b, t) for b, t in ((16, 64), (16, 128), (32, 128))}
    rate = max(rates.values())
    real = count.real["multi"] + count.real["step"]
    floor = real / rate
    print(f"{args.scenario} on {args.base}, full evaluation of the target (reference: a saved evaluation), "
          f"{args.threads} thread(s):")
    print(f"  wall time uncached: {wall:.0f} s")
    for kind, label in (("multi", "scoring and prefill calls"), ("step", "one-token decoding steps")):
        print(f"  {label:<26} {count.calls[kind]:>6} calls  {count.real[kind]:>9,} real positions  "
              f"({count.computed[kind]:,} computed)")
    print("  decoder alone, full batches: " + ", ".join(f"{b}x{t} {r:,.0f} tok/s" for (b, t), r in rates.items()))
    print(f"  floor: {real:,} real positions / {rate:,.0f} tok/s = {floor:.0f} s "
          f"(the issue's 180 s: {'reachable' if floor <= 180 else 'out of reach on this machine'}); "
          f"the evaluation ran at {real / wall:,.0f} real positions/s, {wall / floor:.1f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
