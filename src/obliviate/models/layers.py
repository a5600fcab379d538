"""Finding the decoder layers of a causal LM, whatever wraps it (DDP, peft) — for hooks and edits."""

from __future__ import annotations

import torch

from obliviate.errors import ConfigError


def decoder_layers(model) -> torch.nn.ModuleList:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP wrapper
        model = model.module
    for path in ("model.layers", "base_model.model.model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ConfigError(f"{type(model).__name__}: cannot find the decoder layers (looked for model.layers, transformer.h)")
