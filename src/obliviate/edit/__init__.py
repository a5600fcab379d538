"""Locate-then-edit: the MEMIT/AlphaEdit core any editing method builds on.

- `algebra`: the null-space projector and the AlphaEdit closed-form update (pure tensor functions);
- `anatomy`: where edits read and write in a Llama-style decoder (hooks on `mlp.down_proj` and layer outputs);
- `stats`: E[k kᵀ] of preserved text per layer, cached by model fingerprint and layer;
- `editor`: edit requests, the target-value optimisation and the `Editor` that applies batches sequentially."""

from obliviate.edit.algebra import alphaedit_update, null_space_projector
from obliviate.edit.editor import EditConfig, EditPrompt, EditRequest, Editor, compute_target, locate
from obliviate.edit.stats import key_second_moments

__all__ = ["EditConfig", "EditPrompt", "EditRequest", "Editor", "alphaedit_update", "compute_target",
           "key_second_moments", "locate", "null_space_projector"]
