"""Greedy generation: rows that leave the batch as they finish (`generate_pass`) against transformers' `generate`,
which decodes a batch until its longest row ends (`_generate_whole_batches`). The target's answers to one
evaluation split, both decoders alternated, the continuations checked identical.

    python benchmarks/generation.py                                  # tiny tofu-mini target, the retain split
    python benchmarks/generation.py --base smollm2-135m --n 128      # the real instrument (its cached build)

Prints per decoder: the wall time of each repeat, the rows that went through decode steps (sum over steps of the
batch's rows), and whether the two decoders' continuations agree token for token."""

from __future__ import annotations

import argparse
import os
import time

import _common  # noqa: E402,F401  (offline; the TOFU data beside the checkout)

import torch  # noqa: E402

from obliviate import api  # noqa: E402
from obliviate.data.templates import Formatter  # noqa: E402
from obliviate.eval import passes  # noqa: E402
from obliviate.models.loading import load_model_and_tokenizer  # noqa: E402
from obliviate.runs.common import load_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="tiny", help="tiny, or a pretrained base (obliviate ls bases)")
    ap.add_argument("--split", default="retain")
    ap.add_argument("--n", type=int, default=0, help="the first N questions (default all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    built = api.build(args.scenario, base=args.base)
    model, tok = load_model_and_tokenizer(built.target)
    scen = load_scenario(args.scenario)
    records = list(scen.eval_splits[args.split].records)[: args.n or None]
    fmt = Formatter(tok)
    prompts = [fmt.prompt_ids(r.question) for r in records]
    rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: rows.append(kw["input_ids"].shape[0]) if kw["input_ids"].shape[1] == 1 else None,
        with_kwargs=True)
    decoders = {
        "rows leave (generate_pass)": lambda: passes.generate_pass(model, prompts, tok.pad_token_id, fmt.eos_id,
                                                                    args.max_new_tokens, args.batch_size),
        "whole batches (generate)": lambda: passes._generate_whole_batches(
            model, prompts, tok.pad_token_id, fmt.eos_id, [args.max_new_tokens] * len(prompts), args.batch_size, None),
    }
    times: dict[str, list[float]] = {k: [] for k in decoders}
    decoded: dict[str, int] = {}
    outs: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for name, run in decoders.items():
            rows.clear()
            t0 = time.time()
            outs[name] = run()
            times[name].append(time.time() - t0)
            decoded[name] = sum(rows)
    hook.remove()
    lengths = [len(o) for o in outs["rows leave (generate_pass)"]]
    print(f"{args.scenario} on {args.base}, {args.split}: {len(prompts)} prompts, batch {args.batch_size}, "
          f"{args.threads} thread(s); answers {sum(lengths) / len(lengths):.1f} tokens on average, longest "
          f"{max(lengths)}")
    for name in decoders:
        print(f"  {name:<28} {' / '.join(f'{t:.1f}' for t in times[name])} s   rows decoded {decoded[name]:,}")
    a, b = (times[k] for k in decoders)
    print(f"  speed-up (best of each): {min(b) / min(a):.2f}x")
    same = outs["rows leave (generate_pass)"] == outs["whole batches (generate)"]
    diff = sum(x != y for x, y in zip(*outs.values(), strict=True))
    print(f"  continuations identical: {'yes' if same else f'NO ({diff} of {len(prompts)} differ)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
