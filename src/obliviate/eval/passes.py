"""The model-pass service: every forward pass evaluation and training-time probes make over answers, written once.

- `logprob_pass`: teacher-forced; per answer token the log-prob of the label, whether it is the argmax, and on
  request the mean/std of log p(·) under p at that position (what Min-K%++ needs);
- `answer_nll`: answer-token NLL with an explicit reduction, over a batch (differentiable: a training loss) or
  over encoded sequences (a probe);
- `generate_pass` / `sample_pass`: greedy / sampled continuations of token-id prompts (KV cache, stop at EOS;
  greedy rows leave the batch as they finish); `prefix_generate_pass`: greedy continuations of many prefixes of
  one sequence from one shared prefill (EL_n), the decoder `generate_pass` runs on.

Results of `logprob_pass` and `generate_pass` are cached on disk by `PassCache` (ModelRunner does the keying).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from obliviate.data.templates import IGNORE_INDEX, Encoded
from obliviate.utils.cache import NPZ, Cache, cache_key
from obliviate.utils.hashing import stable_hash
from obliviate.utils.tensors import base_of, model_device, pad_batch

Reduction = Literal["token_mean", "sequence_mean", "sum", "none"]
Tick = Callable[[int, int], None]  # progress(done, total) of one pass


@dataclass(frozen=True)
class TokenStats:
    """Teacher-forced statistics of one sequence's ANSWER tokens."""

    logps: np.ndarray  # (T,) log p(y_t)
    correct: np.ndarray  # (T,) bool, argmax == y_t
    mu: np.ndarray | None = None  # (T,) E_{v~p}[log p(v)]; None where the pass ran without `vocab_stats`
    sigma: np.ndarray | None = None  # (T,) std_{v~p}[log p(v)]; likewise


# ---------------------------------------------------------------------------------------------- batching


def length_sorted_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); optional cap on padded tokens per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (token_budget and longest * (len(cur) + 1) > token_budget)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


# ---------------------------------------------------------------------------------------------- teacher forcing


def split_head(model):
    """(decoder, lm_head) when logits are just `lm_head(hidden)`, so the head (a large share of a tiny model's
    compute) can be applied to answer positions only; None for models that post-process logits, and for a model
    sharded by FSDP (its root's parameters are gathered only by a forward through the root)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        return None
    cfg = getattr(model, "config", None)
    if any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "output_multiplier")):
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "model", None)
    if head is None or base is None or not isinstance(head, torch.nn.Linear) or type(model).__name__.startswith("Peft"):
        return None
    return base, head


def answer_logits(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Logits at the positions that predict answer tokens only: (N, V) float32, the N target ids, and the
    (B, T-1) mask of those positions."""
    target = labels[:, 1:]  # position t predicts token t+1
    valid = target != IGNORE_INDEX
    parts = split_head(model)
    if parts is None:  # through the model's own forward, its head hooked to the answer positions
        logits, compact = compact_logits(model, ids, mask, labels)
        keep = compact[:, 1:] != IGNORE_INDEX  # row by row, in order: the order of target[valid]
        return logits[:, :-1][keep].float(), target[valid], valid
    base, head = parts
    hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]  # (B, T-1, H)
    return head(hidden[valid]).float(), target[valid], valid


def compact_answers(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's answer is predicted from, compacted: `index` (B, A+1) holds row i's n_i positions that
    predict an answer token (t with labels[t+1] ≠ IGNORE), left-aligned and in order, then filler (position 0);
    `compact` (B, A+1) holds the labels those positions predict, shifted one column right (IGNORE, y_1 … y_n_i,
    IGNORE …), A = the longest answer. Logits gathered at `index` read with `compact` as full logits read with
    `labels`: `losses.shift` pairs column c's logits with column c+1's label, so every loss gives the same value
    (the extra last column, like the full sequence's last position, predicts nothing)."""
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    n = valid.sum(1)
    width = int(n.max()) if len(n) else 0
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices  # answer positions first, in order
    index = torch.zeros(labels.shape[0], width + 1, dtype=torch.long, device=labels.device)
    index[:, :width] = order[:, :width]
    filled = torch.arange(width, device=labels.device) < n[:, None]  # (B, A)
    index[:, :width] = torch.where(filled, index[:, :width], 0)
    compact = torch.full_like(index, IGNORE_INDEX)
    compact[:, 1:][filled] = target[valid]
    return index, compact


def output_head(model):
    """The module that turns hidden states into logits (under DDP, FSDP and peft wrappers alike), or None."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    get = getattr(inner, "get_output_embeddings", None)
    return get() if callable(get) else None


def compact_logits(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, **forward):
    """One forward whose logits exist only where answers are predicted: ((B, A+1, V) logits, (B, A+1) labels),
    laid out by `compact_answers`, in the caller's grad and train/eval mode. The output head (the LM head, the
    vocabulary's share of a pretrained model's compute and the largest training transient: 49,152 × tokens × 4
    bytes and its log-softmax, gradient and copies on SmolLM2) sees the answers' positions only, selected by a
    forward pre-hook on it; the forward itself runs through the model as usual, so wrappers that gather weights
    in their forward (FSDP) or route it (peft, DDP) need nothing special. A model whose head did not run exactly
    once on (B, T, H) hidden states has its full logits selected instead (the same values)."""
    index, compact = compact_answers(labels)
    head = output_head(model)
    fired = []

    def select(_module, args, kwargs):
        hidden = args[0] if args else None
        if hidden is None or hidden.dim() != 3 or hidden.shape[:2] != ids.shape or fired:
            fired.append(False)
            return None
        fired.append(True)
        picked = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return (picked, *args[1:]), kwargs

    handle = head.register_forward_pre_hook(select, with_kwargs=True) if head is not None else None
    try:
        logits = model(input_ids=ids, attention_mask=mask, **forward).logits
    finally:
        if handle is not None:
            handle.remove()
    if fired != [True]:
        if logits.shape[:2] != ids.shape:
            raise RuntimeError(f"compact_logits: the model's head ran {len(fired)} times and its logits are "
                               f"{tuple(logits.shape)} for inputs {tuple(ids.shape)}; no full logits to select from")
        logits = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return logits, compact


@torch.no_grad()
def logprob_pass(model, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 32,
                 token_budget: int = 16384, progress: Tick | None = None,
                 share_prompts: bool = True, vocab_stats: bool = False) -> list[TokenStats]:
    """Per-token answer statistics for every encoded (prompt, answer) sequence, in input order. `progress(done,
    total)` is called after each batch (sequences done).

    `vocab_stats` adds Min-K%++'s moments of log p(·) under p (`TokenStats.mu`, `.sigma`). They read the whole
    vocabulary at every answer token, several passes over (tokens × V) floats: on SmolLM2's 49,152-token
    vocabulary they cost more than its output head itself, so only the splits the attacks read ask for them.

    With `share_prompts`, sequences that begin with the same prompt (an item's answer, paraphrase and perturbed
    answers: the truth ratio's 7 sequences) share one forward over it: each distinct prompt of a batch runs once,
    its KV cache is row-selected for every sequence on it, and only the answers run on top (on the 135M real
    instrument this halves the tokens of a TOFU evaluation). The statistics equal the unshared pass up to float
    rounding (a test holds them to 5e-5); models whose head cannot be split off or whose cache cannot be shared
    (sliding-window attention) take the unshared pass."""
    model.eval()
    out: list[TokenStats | None] = [None] * len(encoded)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(encoded))

    rest = list(range(len(encoded)))
    parts = split_head(model)
    if share_prompts and parts is not None:
        rest = _shared_prompt_passes(parts, encoded, pad_id, batch_size, token_budget, out, tick, vocab_stats)
    dev = model_device(model)
    for idx in length_sorted_batches([len(encoded[i].input_ids) for i in rest], batch_size, token_budget):
        idx = [rest[k] for k in idx]
        ids, mask, lab = pad_batch([encoded[i].input_ids for i in idx], pad_id, labels=[encoded[i].labels for i in idx])
        logits, target, valid = answer_logits(model, ids.to(dev), mask.to(dev), lab.to(dev))  # (N, V)
        _store_stats(out, idx, logits, target, valid, vocab_stats)
        tick(len(idx))
    return out  # type: ignore[return-value]


def _store_stats(out: list, idx: Sequence[int], logits: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor, vocab_stats: bool) -> None:
    """TokenStats of each row of a batch from the logits (N, V) at its `valid` (B, T-1) positions, row-major;
    μ and σ of log p(·) only with `vocab_stats` (log p(y) itself needs one logsumexp, not a log-softmax)."""
    lse = torch.logsumexp(logits, dim=-1)
    tok_lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - lse
    correct = logits.argmax(-1) == target
    cols = [tok_lp, correct]
    if vocab_stats:
        logp = logits - lse.unsqueeze(-1)
        p = logp.exp()
        mu = (p * logp).sum(-1)  # E_p[log p], Min-K%++
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
        cols += [mu, sigma]
    cols = [x.cpu().numpy() for x in cols]
    pos = 0
    for i, c in zip(idx, valid.sum(1).tolist(), strict=True):
        out[i] = TokenStats(*(x[pos:pos + c] for x in cols))
        pos += c


def _prompt_cut(e: Encoded) -> int:
    """Where a sequence's shareable prompt ends: before the position whose output predicts the first answer token
    (that position runs with the answer); 0 when there is nothing to share (no labels, or the answer at 0 or 1)."""
    first = next((t for t, y in enumerate(e.labels) if y != IGNORE_INDEX), None)
    return 0 if first is None or first < 2 else first - 1


def _shared_prompt_passes(parts, encoded: Sequence[Encoded], pad_id: int, batch_size: int, token_budget: int,
                          out: list, tick: Callable[[int], None], vocab_stats: bool) -> list[int]:
    """The shared-prompt batches of `logprob_pass`; returns the indices left for the unshared pass (sequences
    without a shareable prompt, or all that remain when the model's cache turns out not to be shareable)."""
    base, head = parts
    dev = model_device(base)
    cache_arg = _cache_arg(base)
    groups: dict[tuple[int, ...], list[int]] = {}
    alone = []
    for i, e in enumerate(encoded):
        cut = _prompt_cut(e)
        if cut:
            groups.setdefault(tuple(e.input_ids[:cut]), []).append(i)
        else:
            alone.append(i)
    # batches of whole prompt groups, similar lengths together; a group larger than a batch is split
    order = sorted(groups, key=lambda k: (len(k), max(len(encoded[i].input_ids) for i in groups[k])))
    batches: list[list[int]] = []
    cur: list[int] = []
    for k in order:
        for j in range(0, len(groups[k]), batch_size):
            chunk = groups[k][j:j + batch_size]
            longest = max(len(encoded[i].input_ids) for i in cur + chunk)
            if cur and (len(cur) + len(chunk) > batch_size or longest * (len(cur) + len(chunk)) > token_budget):
                batches.append(cur)
                cur = []
            cur = cur + chunk
    if cur:
        batches.append(cur)
    for n, idx in enumerate(batches):
        prompts = list(dict.fromkeys(tuple(encoded[i].input_ids[:_prompt_cut(encoded[i])]) for i in idx))
        p_ids, p_mask, _ = pad_batch([list(k) for k in prompts], pad_id)  # (K, S) right padded: positions kept
        cache = _out_cache(base(input_ids=p_ids.to(dev), attention_mask=p_mask.to(dev), use_cache=True))
        if cache is None or not _shareable(cache):
            return alone + [i for b in batches[n:] for i in b]
        cuts = [_prompt_cut(encoded[i]) for i in idx]
        rows = torch.tensor([prompts.index(tuple(encoded[i].input_ids[:c])) for i, c in zip(idx, cuts, strict=True)])
        cache.batch_select_indices(rows.to(dev))
        ids, mask, lab = pad_batch([encoded[i].input_ids[c:] for i, c in zip(idx, cuts, strict=True)], pad_id,
                                   labels=[encoded[i].labels[c:] for i, c in zip(idx, cuts, strict=True)])
        full_mask = torch.cat([p_mask[rows], mask], dim=1)  # each row sees its own prompt, then its answer
        pos = torch.tensor(cuts)[:, None] + torch.arange(ids.shape[1])[None, :]
        hidden = base(input_ids=ids.to(dev), attention_mask=full_mask.to(dev), position_ids=pos.to(dev),
                      use_cache=True, **{cache_arg: cache}).last_hidden_state[:, :-1]
        target = lab[:, 1:].to(dev)
        valid = target != IGNORE_INDEX
        _store_stats(out, idx, head(hidden[valid]).float(), target[valid], valid, vocab_stats)
        tick(len(idx))
    return alone


def _per_sequence(tok: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token NLLs (N,) of the (B, T-1) `valid` positions, taken in row-major order, summed per sequence: (B,) sums
    and (B,) answer-token counts."""
    row = valid.nonzero()[:, 0]  # the sequence of each answer token, in the order logits[valid] took them
    return torch.zeros(valid.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, row, tok), valid.sum(1)


def _reduce(sums: torch.Tensor, counts: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "sum":
        return sums.sum()
    if reduction == "token_mean":
        return sums.sum() / counts.sum()
    per_seq = sums / counts  # nan (0/0) for a sequence without answer tokens
    if reduction == "sequence_mean":
        return per_seq[counts > 0].mean()  # sequences without answer tokens are left out; nan when none is left
    return per_seq


def answer_nll(model, data: Mapping[str, torch.Tensor] | Sequence[Encoded], reduction: Reduction, *,
               pad_id: int = 0, batch_size: int = 32, token_budget: int = 16384) -> torch.Tensor:
    """Negative log-likelihood of the answer tokens (labels ≠ IGNORE_INDEX, each predicted from its prefix).

    `data` is either one batch — a mapping with `input_ids`, `attention_mask`, `labels` (B, T), as `pad_batch`
    / `Views.collate` make it — run as one forward in the caller's grad and train/eval mode (a training loss),
    or encoded sequences, run under no_grad in eval mode in length-sorted batches (a probe; the model's mode is
    restored). `pad_id` only fills padding positions, which the attention mask hides from real ones.

    Reductions, with ℓ_it the NLL of answer token t of sequence i and T_i its answer length:
    - `token_mean`: Σ_it ℓ_it / Σ_i T_i — the causal-LM loss; every token weighs the same;
    - `sequence_mean`: mean_i (Σ_t ℓ_it / T_i) — TOFU's length-normalised L̄ averaged over sequences (those
      without answer tokens left out);
    - `sum`: Σ_it ℓ_it;
    - `none`: (B,) the per-sequence mean Σ_t ℓ_it / T_i (nan for a sequence without answer tokens).
    Returns a tensor: 0-dim, or (B,) for `none`; nan for a mean over nothing."""
    if reduction not in ("token_mean", "sequence_mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r}; expected one of token_mean, sequence_mean, sum, none")
    if isinstance(data, Mapping):
        dev = model_device(model)
        logits, target, valid = answer_logits(model, data["input_ids"].to(dev), data["attention_mask"].to(dev),
                                              data["labels"].to(dev))  # (N, V), (N,), (B, T-1)
        if reduction == "token_mean":
            return F.cross_entropy(logits, target)  # the usual causal-LM loss, bit for bit (nan without tokens)
        return _reduce(*_per_sequence(F.cross_entropy(logits, target, reduction="none"), valid), reduction)
    encoded = list(data)
    sums = torch.zeros(len(encoded), dtype=torch.float64)
    counts = torch.zeros(len(encoded), dtype=torch.long)
    was = model.training
    model.eval()
    dev = model_device(model)
    try:
        with torch.no_grad():
            for idx in length_sorted_batches([len(e.input_ids) for e in encoded], batch_size, token_budget):
                ids, mask, lab = pad_batch([encoded[i].input_ids for i in idx], pad_id,
                                           labels=[encoded[i].labels for i in idx])
                logits, target, valid = answer_logits(model, ids.to(dev), mask.to(dev), lab.to(dev))
                s, c = _per_sequence(F.cross_entropy(logits, target, reduction="none"), valid)
                sums[idx], counts[idx] = s.double().cpu(), c.cpu()
    finally:
        model.train(was)
    return _reduce(sums, counts, reduction)


# ---------------------------------------------------------------------------------------------- generation


def _decode(model, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, limits: list[int],
            order: list[int], batch_size: int, n: int, progress: Tick | None = None,
            **sampling) -> list[list[list[int]]]:
    """`n` continuations per prompt, batches of `batch_size` prompts taken in `order`; each cut at its limit
    and at the first EOS (EOS and what follows removed). `progress(done, total)` after each batch (prompts)."""
    model.eval()
    dev = model_device(model)
    out: list[list[list[int]]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask, _ = pad_batch([prompts[i] for i in idx], pad_id, left=True)
        gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                             max_new_tokens=max(limits[i] for i in idx), pad_token_id=pad_id, eos_token_id=eos_id,
                             num_beams=1, **sampling)
        new = gen[:, ids.shape[1]:].cpu().tolist()  # (len(idx) * n, new tokens), a prompt's n rows together
        for row, toks in enumerate(new):
            i = idx[row // n]
            toks = toks[: limits[i]]
            if eos_id in toks:
                toks = toks[: toks.index(eos_id)]
            out[i].append(toks)
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return out


@torch.no_grad()
def generate_pass(model, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int,
                  max_new_tokens: int | Sequence[int] = 200, batch_size: int = 64,
                  progress: Tick | None = None) -> list[list[int]]:
    """Greedy continuations (token ids, EOS and what follows it removed) for every prompt, in input order.
    `max_new_tokens` may differ per prompt (EL_n continues each prefix for the rest of the answer's length).

    Decoded as `prefix_generate_pass` decodes (each prompt its own host, similar lengths batched together): a
    finished row leaves the batch, so one long answer no longer keeps a whole batch of finished ones decoding
    (TOFU answers on the real instrument: mean 34 tokens, the longest of a batch of 64 up to 77, and one
    rambling answer runs to the 200-token limit). Models whose cache cannot be shared that way take
    transformers' `generate` (`_generate_whole_batches`), which gives the same continuations."""
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar prompt lengths: less padding
    ps = [prompts[i] for i in order]
    outs = prefix_generate_pass(model, ps, ps, pad_id, eos_id, [limits[i] for i in order], batch_size, progress)
    res: list[list[int]] = [[] for _ in prompts]
    for i, o in zip(order, outs, strict=True):
        res[i] = o
    return res


def _generate_whole_batches(model, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int,
                            limits: Sequence[int], batch_size: int, progress: Tick | None) -> list[list[int]]:
    """`generate_pass` through transformers' `generate` (left padding; a batch decodes until its last row ends)."""
    limits = list(limits)
    # Group by generation length first (the costly dimension), then prompt length.
    order = sorted(range(len(prompts)), key=lambda i: (-limits[i], -len(prompts[i])))
    # temperature/top_p/top_k None override sampling defaults a model's generation_config may carry
    outs = _decode(model, prompts, pad_id, eos_id, limits, order, batch_size, 1, progress, do_sample=False,
                   temperature=None, top_p=None, top_k=None)
    return [o[0] for o in outs]


def _cache_arg(model) -> str:
    """The name under which the model's forward takes a KV cache: `cache` (transformers >= 5.x, where
    `past_key_values` is deprecated) or `past_key_values`."""
    inner = base_of(model)  # a PeftModel forwards **kwargs
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, rows: torch.Tensor):
    """One forward over right-padded host sequences (B, S): the cache, and the logits (R, V) that predict the next
    token after `last[r]`, position `last[r]` of host `rows[r]` (the head applied there only, where it can be)."""
    parts = split_head(model)
    if parts is None:
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        return _out_cache(out), out.logits[rows, last].float()
    base, head = parts
    out = base(input_ids=ids, attention_mask=mask, use_cache=True)
    return _out_cache(out), head(out.last_hidden_state[rows, last]).float()


def _shareable(cache) -> bool:
    """A cache whose rows can be selected and whose attention masks are honoured position by position (no sliding
    window, which counts cache slots rather than positions)."""
    sliding = getattr(cache, "is_sliding", [True])
    return hasattr(cache, "batch_select_indices") and not any(sliding)


@torch.no_grad()
def prefix_generate_pass(model, prompts: Sequence[Sequence[int]], hosts: Sequence[Sequence[int]], pad_id: int,
                         eos_id: int, max_new_tokens: Sequence[int], batch_size: int = 64,
                         progress: Tick | None = None,
                         settled: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """`generate_pass` for prompts that are prefixes of longer sequences (EL_n decodes from every answer prefix):
    `hosts[i]` starts with `prompts[i]`; the greedy continuation of each prompt, up to `max_new_tokens[i]`, cut at
    EOS, in input order.

    The same greedy decoding with the prompt's prefill shared: each host is run through the model once (right
    padded, so its tokens keep their positions) and every prompt on it decodes from that cache, seeing only its own
    first len(prompt) positions (attention mask) and writing its new tokens at positions len(prompt), len(prompt)+1,
    ... . The first new token comes from the host pass itself. A prompt stops at EOS or its limit and leaves the
    batch, so no step is spent on finished rows. Batches hold up to `batch_size` prompts, a host's prompts together.
    Models whose cache cannot be shared this way (sliding-window attention, caches without row selection) fall
    back to transformers' `generate`, which gives the same continuations.

    `settled(i, tokens)`, when given, is asked after each new token of prompt i; True ends that continuation there
    (EL_n stops a prefix whose score can no longer change). The fallback decodes in full, ignoring it."""
    limits = list(max_new_tokens)
    by_host: dict[tuple[int, ...], list[int]] = {}
    for i, h in enumerate(hosts):
        if list(h[: len(prompts[i])]) != list(prompts[i]) or not prompts[i]:
            raise ValueError(f"prompt {i} is empty or not a prefix of its host sequence")
        by_host.setdefault(tuple(h), []).append(i)
    chunks: list[list[int]] = []
    for idx in by_host.values():  # a host's prompts together, longest limit first (they finish last)
        idx = sorted(idx, key=lambda i: -limits[i])
        chunks += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    merged: list[list[int]] = []  # pack small chunks of several hosts into one batch
    for c in chunks:
        if merged and len(merged[-1]) + len(c) <= batch_size:
            merged[-1] += c
        else:
            merged.append(list(c))
    model.eval()
    dev = model_device(model)
    cache_arg = _cache_arg(model)
    out: list[list[int]] = [[] for _ in prompts]
    done = 0
    for batch in merged:
        keys = list(dict.fromkeys(tuple(hosts[i]) for i in batch))  # the batch's hosts, each run once
        seqs = [k[: max(len(prompts[i]) for i in batch if tuple(hosts[i]) == k)] for k in keys]  # as long as needed
        ids, host_mask, _ = pad_batch(seqs, pad_id)  # (B, S), right padded
        rows = torch.tensor([keys.index(tuple(hosts[i])) for i in batch])  # (R,) each prompt's host
        plen = torch.tensor([len(prompts[i]) for i in batch])
        cache, logits = _prefill(model, ids.to(dev), host_mask.to(dev), (plen - 1).to(dev), rows.to(dev))
        if cache is None or not _shareable(cache):
            return _generate_whole_batches(model, prompts, pad_id, eos_id, limits, batch_size, progress)
        cache.batch_select_indices(rows.to(dev))
        S = ids.shape[1]
        mask = (torch.arange(S)[None, :] < plen[:, None]).long()  # (R, S): each row sees its own prompt only
        active = list(batch)  # prompt index of each live row
        step = 0
        tok = logits.argmax(-1).cpu()  # (R,) each row's first new token, predicted by the host pass
        while True:
            keep = []
            for r, i in enumerate(active):
                t = int(tok[r])
                if t == eos_id or len(out[i]) >= limits[i]:  # EOS (dropped, as generate_pass does) or a 0 limit
                    continue
                out[i].append(t)
                if len(out[i]) < limits[i] and not (settled is not None and settled(i, out[i])):
                    keep.append(r)
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep)
                cache.batch_select_indices(sel.to(dev))
                mask, plen, tok = mask[sel], plen[sel], tok[sel]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype)], dim=1)
            pos = (plen + step)[:, None]  # the new token's position: right after its own prompt's tokens
            res = model(input_ids=tok[:, None].to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                        use_cache=True, **{cache_arg: cache})  # the cache grows in place
            tok = res.logits[:, -1].float().argmax(-1).cpu()
            step += 1
        done += len(batch)
        if progress is not None:
            progress(done, len(prompts))
    return out


@torch.no_grad()
def sample_pass(model, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int, max_new_tokens: int,
                samples: int, *, temperature: float = 1.0, top_p: float = 1.0,
                batch_size: int = 32) -> list[list[list[int]]]:
    """`samples` sampled continuations per prompt (nucleus sampling, no top-k), in input order; `batch_size`
    counts sequences, so batch_size // samples prompts go together. Seed torch's RNG first for reproducible
    samples (the draw depends on the batch composition too)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths together: less padding
    # top_k=0 disables top-k: only top_p truncates the distribution
    return _decode(model, prompts, pad_id, eos_id, [max_new_tokens] * len(prompts), order,
                   max(1, batch_size // samples), samples, do_sample=True, temperature=temperature, top_p=top_p,
                   top_k=0, num_return_sequences=samples)


# ---------------------------------------------------------------------------------------------- cache


class PassCache:
    """On-disk cache of pass results (namespace `passes` of the one `Cache`). The key includes the model
    fingerprint, the exact token ids of the inputs and the pass parameters, so a cached result can never
    belong to another model or input."""

    def __init__(self, root=None, enabled: bool = True) -> None:
        self.store = Cache("passes", root, enabled)

    @property
    def enabled(self) -> bool:
        return self.store.enabled

    def key(self, kind: str, model_fp: str, inputs: object, params: dict) -> str:
        return cache_key(kind, model_fp, inputs, params)

    def load_stats(self, key: str) -> list[TokenStats] | None:
        z = self.store.load(key, NPZ)
        if z is None or not {"offsets", "logps", "correct"} <= z.keys():
            return None
        off = z["offsets"]
        cols = [z[c] for c in ("logps", "correct", "mu", "sigma") if c in z]
        return [TokenStats(*(c[off[i]:off[i + 1]] for c in cols)) for i in range(len(off) - 1)]

    def save_stats(self, key: str, stats: Sequence[TokenStats]) -> None:
        """Saves the stats; μ/σ only when every sequence has them (a pass without `vocab_stats` has none)."""
        off = np.cumsum([0] + [len(s.logps) for s in stats])
        names = ["logps", "correct"] + (["mu", "sigma"] if all(s.mu is not None for s in stats) else [])
        cat = {c: np.concatenate([getattr(s, c) for s in stats]) if stats else np.zeros(0) for c in names}
        self.store.save(key, {"offsets": off, **cat}, NPZ)

    def load_tokens(self, key: str) -> list[list[int]] | None:
        z = self.store.load(key, NPZ)
        if z is None or not {"offsets", "tokens"} <= z.keys():
            return None
        off, flat = z["offsets"], z["tokens"]
        return [flat[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]

    def save_tokens(self, key: str, seqs: Sequence[Sequence[int]]) -> None:
        off = np.cumsum([0] + [len(s) for s in seqs])
        flat = np.array([t for s in seqs for t in s], dtype=np.int64)
        self.store.save(key, {"offsets": off, "tokens": flat}, NPZ)


def encoded_key(encoded: Sequence[Encoded]) -> str:
    return stable_hash(json.dumps([e.input_ids for e in encoded]) + json.dumps([e.prompt_len for e in encoded]), 20)
