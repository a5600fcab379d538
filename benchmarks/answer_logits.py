"""The LM head on answer positions only (`eval.passes.compact_logits`, what every method's loss reads) against the
full (B, T, V) logits: one training forward and backward of the causal-LM loss over the scenario's forget answers
in the model's chat template, both alternated, the losses checked equal.

    python benchmarks/answer_logits.py                          # the real instrument's base (SmolLM2-135M)
    python benchmarks/answer_logits.py --base tiny              # a tiny built tofu-mini target

Prints per form the wall time of each repeat (all batches), the logits' size of the largest batch, and the largest
difference between the two losses."""

from __future__ import annotations

import argparse
import time

import _common  # (offline; the TOFU data beside the checkout)

import torch

from obliviate.data.templates import Formatter
from obliviate.eval.passes import compact_logits
from obliviate.methods.losses import nll_loss
from obliviate.runs.common import load_scenario
from obliviate.utils.tensors import pad_batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="smollm2-135m", help="a pretrained base (obliviate ls bases), or tiny")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = _common.model_of(args.base, args.scenario)
    model.train()
    enc = Formatter(tok).encode_qa(list(load_scenario(args.scenario).forget.records))
    batches = []
    for s in range(0, len(enc), args.batch_size):
        part = enc[s:s + args.batch_size]
        ids, mask, lab = pad_batch([e.input_ids for e in part], tok.pad_token_id, labels=[e.labels for e in part])
        batches.append((ids, mask, lab))

    def full(ids, mask, lab):
        return nll_loss(model(input_ids=ids, attention_mask=mask).logits, lab)

    def compact(ids, mask, lab):
        return nll_loss(*compact_logits(model, ids, mask, lab))

    forms = {"full logits (B, T, V)": full, "answer positions (B, A+1, V)": compact}
    times: dict[str, list[float]] = {k: [] for k in forms}
    losses: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, loss_of in forms.items():
            t0, vals = time.time(), []
            for b in batches:
                loss = loss_of(*b)
                loss.backward()
                model.zero_grad(set_to_none=True)
                vals.append(float(loss.detach()))
            times[name].append(time.time() - t0)
            losses[name] = vals
    tokens = sum(int(m.sum()) for _, m, _ in batches)
    answers = sum(int((lab[:, 1:] != -100).sum()) for _, _, lab in batches)
    ids, _, lab = max(batches, key=lambda b: b[0].numel())
    width = int((lab[:, 1:] != -100).sum(1).max()) + 1
    vocab = model.get_output_embeddings().weight.shape[0]
    print(f"{args.scenario} forget answers on {args.base}: {len(enc)} sequences in batches of {args.batch_size}, "
          f"{tokens:,} tokens of which {answers:,} answer tokens; {args.threads} thread(s)")
    for name, cols in (("full logits (B, T, V)", ids.shape[1]), ("answer positions (B, A+1, V)", width)):
        mib = ids.shape[0] * cols * vocab * 4 / 2**20
        print(f"  {name:<30} {' / '.join(f'{t:.1f}' for t in times[name])} s   largest batch's logits {mib:.0f} MiB")
    a, b = (min(times[k]) for k in forms)
    print(f"  speed-up (best of each): {a / b:.2f}x")
    diff = max(abs(x - y) for x, y in zip(*losses.values(), strict=True))
    print(f"  largest loss difference: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
