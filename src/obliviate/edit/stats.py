"""Second-moment statistics of the keys of preserved text, E[k kᵀ] per edited layer, collected once and cached.

MEMIT and AlphaEdit collect them on 100,000 Wikipedia samples; offline, the preserved text is what the caller
gives (UniErase: the scenario's retain/general training text). Each layer's matrix is an entry of the one cache
(`obliviate.utils.cache`, namespace `edit_stats`) keyed by the model's fingerprint, the layer, the exact token ids it
was computed from (after the sample budget) and the statistic's format, so it can never be reused for another model
or other text."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from obliviate.edit.anatomy import capture_keys, down_proj
from obliviate.utils.cache import TORCH, Cache, cache_key
from obliviate.utils.hashing import stable_hash
from obliviate.utils.tensors import model_device, pad_batch

log = logging.getLogger(__name__)
STATS_FORMAT = 1  # bump when the statistic's definition changes


def stats_cache(enabled: bool = True) -> Cache:
    return Cache("edit_stats", enabled=enabled)


def stats_dir() -> Path:
    """Where the entries live: one folder per model fingerprint, one `layer<l>-<hash>.pt` file per layer."""
    return stats_cache().root


def _budget(seqs: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
    """The sequences, in order, until `max_tokens` token positions are covered (the last one cut to fit)."""
    out, left = [], max_tokens
    for s in seqs:
        if left <= 0:
            break
        out.append(list(s[:left]))
        left -= len(out[-1])
    return out


@torch.no_grad()
def key_second_moments(model, layers: Sequence[int], seqs: Sequence[Sequence[int]], *, max_tokens: int = 100_000,
                       batch_size: int = 16, pad_id: int = 0, model_fp: str | None = None, cache: bool = True,
                       starts: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """E[k kᵀ] (d_k, d_k, float64) over every non-padding token position of `seqs` (at most `max_tokens`), for
    each layer in `layers`. `starts[i]`: the first position of `seqs[i]` that counts (those before it are context
    only; None = all). With `cache` (and `model_fp`, the model's fingerprint), each layer's matrix is read
    from / written to the `edit_stats` cache, `<cache>/edit_stats/<fingerprint>/layer<l>-<hash>.pt`."""
    seqs = _budget(seqs, max_tokens)
    if not seqs:
        raise ValueError("no token sequences to collect key statistics from")
    first = [0] * len(seqs) if starts is None else list(starts)[:len(seqs)]
    store = stats_cache(enabled=bool(cache and model_fp))
    data_key = stable_hash(seqs if starts is None else [seqs, first], 20)
    entries = {l: cache_key(f"layer{l}", model_fp, data_key, {"format": STATS_FORMAT}) for l in layers}
    out: dict[int, torch.Tensor] = {}
    for l, k in entries.items():
        hit = store.load(k, TORCH)
        if isinstance(hit, torch.Tensor):  # anything else is a foreign entry: recomputed
            out[l] = hit
    todo = [l for l in layers if l not in out]
    if not todo:
        return out
    was = model.training
    model.eval()
    dev = model_device(model)
    sums = {l: torch.zeros(down_proj(model, l).in_features, down_proj(model, l).in_features, dtype=torch.float64)
            for l in todo}
    count = 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths together: less padding
    with capture_keys(model, todo) as keys:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask, _ = pad_batch([seqs[i] for i in idx], pad_id)
            model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
            counted = torch.arange(ids.shape[1])[None, :] >= torch.tensor([first[i] for i in idx])[:, None]
            keep = (mask.bool() & counted).to(dev)  # (b, T)
            for l in todo:
                k = keys[l][keep].double()  # (N, d_k)
                sums[l] += (k.T @ k).cpu()
            count += int(keep.sum())
    model.train(was)
    if count == 0:
        raise ValueError(f"no token positions to collect key statistics from (starts={first})")
    for l in todo:
        out[l] = sums[l] / count
        store.save(entries[l], out[l], TORCH)
    log.info("key statistics: %d token positions, layers %s", count, todo)
    return out
