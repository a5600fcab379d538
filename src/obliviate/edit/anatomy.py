"""Where an edit reads and writes in a Llama-style decoder: the MLP down-projection of chosen layers (keys = its
input, values = its output) and the decoder layer's output (the residual stream the target value is measured in).
Forward hooks capture and alter them without touching the model's code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from obliviate.errors import ModelError
from obliviate.models.layers import decoder_layers


def down_proj(model, layer: int) -> torch.nn.Linear:
    """The MLP down-projection of decoder layer `layer` (Llama, Mistral, Qwen, Gemma: `mlp.down_proj`)."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ModelError(f"edit layer {layer} is out of range: the model has {len(layers)} decoder layers "
                         f"(0..{len(layers) - 1})")
    mod = getattr(getattr(layers[layer], "mlp", None), "down_proj", None)
    if not isinstance(mod, torch.nn.Linear):
        raise ModelError(f"{type(model).__name__} layer {layer} has no linear mlp.down_proj; locate-then-edit "
                         f"supports Llama-style MLPs")
    return mod


def _out_tensor(output):
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def capture_keys(model, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, each forward stores the down-projection INPUT of every layer in `layers`:
    `store[layer]` (B, T, d_k)."""
    store: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        def pre(_mod, args, layer=layer):
            store[layer] = args[0]
        handles.append(down_proj(model, layer).register_forward_pre_hook(pre))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_layer_output(model, layer: int) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward stores the output of decoder layer `layer` (B, T, d) as `store["h"]`."""
    store: dict[str, torch.Tensor] = {}

    def hook(_mod, _args, output):
        store["h"] = _out_tensor(output)

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@contextlib.contextmanager
def add_at_positions(model, layer: int, delta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[dict]:
    """Within the block, `delta` (d,) is added to the MLP output of decoder layer `layer` at positions
    (rows[i], cols[i]); the layer's output (with the addition) is stored as `store["h"]`. Adding to the MLP output
    equals adding to the layer's output, since the MLP output is the last term summed into the residual stream."""
    store: dict[str, torch.Tensor] = {}
    mlp = decoder_layers(model)[layer].mlp

    def mlp_hook(_mod, _args, output):
        out = _out_tensor(output)
        add = torch.zeros_like(out)
        add[rows, cols] = delta.to(out.dtype)
        return out + add

    def layer_hook(_mod, _args, output):
        store["h"] = _out_tensor(output)

    handles = [mlp.register_forward_hook(mlp_hook), decoder_layers(model)[layer].register_forward_hook(layer_hook)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
