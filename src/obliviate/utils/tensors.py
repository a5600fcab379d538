"""Tensor utilities shared by evaluation, training and editing: batching token-id sequences, a model's device, and
the weights of a saved model directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

# Labels at this value carry no loss: torch.nn.functional.cross_entropy's default ignore_index. The same constant
# as obliviate.data.templates.IGNORE_INDEX (tests/test_tensors.py checks it); defined here because utils sits below
# data in the layering.
IGNORE_INDEX = -100


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False,
              labels: Sequence[Sequence[int]] | None = None):
    """(ids, mask, labels), each (B, T) long, padded to the batch's longest sequence; labels are None unless
    given (padding positions are IGNORE_INDEX). Right padding for teacher forcing (real positions keep their
    index), left padding for generation (every prompt ends at the last column). Dynamic padding: fixed padding
    measured 2.5x slower on CPU."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    lab = torch.full((len(seqs), n), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    for i, s in enumerate(seqs):
        sl = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
        if lab is not None:
            lab[i, sl] = torch.tensor(labels[i], dtype=torch.long)  # type: ignore[index]
    return ids, mask, lab


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (where its inputs go)."""
    return next(model.parameters()).device


def base_of(model):
    """The transformers model inside a peft wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def saved_weights(model_dir: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model directory, read from all its `*.safetensors` files (sharded or not); empty
    when the directory holds none."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def max_weight_difference(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> float:
    """The largest absolute elementwise difference between two saved models of the same architecture."""
    wa, wb = saved_weights(a), saved_weights(b)
    if set(wa) != set(wb):
        raise ValueError(f"{a} and {b} hold different tensors: not the same architecture")
    return max((float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel()), default=0.0)
