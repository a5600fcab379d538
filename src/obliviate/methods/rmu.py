"""RMU — Representation Misdirection for Unlearning (Li et al., WMDP, ICML 2024, arXiv 2403.03218)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.errors import ConfigError
from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import num, tok_denom
from obliviate.methods.losses import rmu_loss, shift
from obliviate.models.layers import decoder_layers


class RMUConfig(TrainConfig):
    """At hidden layer ℓ, push the forget activations toward a fixed random direction scaled by c, and keep the
    retain activations equal to the frozen model's: `MSE(h_ℓ(x_f), c·u) + α·MSE(h_ℓ(x_r), h₀_ℓ(x_r))`; only a few
    layers' MLP down-projections train (the paper: layers ℓ−2..ℓ, down-projection only).

    - `layer` ℓ: index of the decoder layer whose OUTPUT is steered. None = the paper's layer 7 of Zephyr-7B's
      32, scaled to the model's depth (`default_layer`).
    - `steering_coeff` c: norm of the control vector. None = [ours] 4 × the mean activation norm of the forget
      answer tokens at ℓ under θ₀ — the paper's c = 6.5 was tuned to Zephyr-7B's activation scale, which a
      tiny model does not share. The value used is recorded in the manifest (`run_info`).
    - `alpha` α: retain weight (100, the official code's default; the paper used 1200 for Zephyr, scale-dependent
      like c).
    - `lr` (5e-5, the paper's).
    - `update_layers`: decoder layers whose `update_modules` train (default: ℓ−2..ℓ, the paper's 5, 6, 7).
    - `update_modules`: module-name suffixes that train within those layers (default: mlp.down_proj, the paper's)."""

    layer: int | None = None
    steering_coeff: float | None = Field(None, gt=0)
    alpha: float = Field(100.0, ge=0)
    update_layers: list[int] | None = None
    update_modules: list[str] = ["mlp.down_proj"]
    lr: float = Field(5e-5, gt=0)


def default_layer(n_layers: int) -> int:
    """The paper's steered layer, 7 of Zephyr-7B's 32, at the same relative depth of an `n_layers` model."""
    return min(n_layers - 1, n_layers * 7 // 32)


@register_method("rmu", doc="Steer forget activations at one layer to a random direction; keep retain activations.")
class RMU(GradientMethod):
    Config = RMUConfig
    constant_terms = ("c",)
    search_space = {**TRAIN_SPACE, "alpha": Space.log(0.1, 10.0, relative=True)}  # the retain term's weight
    views = ("forget", "retain")
    reference = "model"

    def __init__(self, cfg: RMUConfig) -> None:
        super().__init__(cfg)
        self.layer = -1  # resolved in setup(), with the model's depth known
        self.update_layers: list[int] = []
        self.coeff: float | None = None
        self.params: list[torch.nn.Parameter] = []

    def setup(self, model, ref, views) -> None:
        cfg: RMUConfig = self.cfg  # type: ignore[assignment]
        layers = decoder_layers(model)
        n = len(layers)
        self.layer = default_layer(n) if cfg.layer is None else cfg.layer
        if not 0 <= self.layer < n:
            raise ConfigError(f"rmu layer={cfg.layer} is out of range: the model has {n} decoder layers (0..{n - 1})")
        upd = cfg.update_layers if cfg.update_layers is not None else list(range(max(0, self.layer - 2), self.layer + 1))
        self.update_layers = upd
        bad = [i for i in upd if not 0 <= i < n]
        if bad:
            raise ConfigError(f"rmu update_layers {bad} out of range 0..{n - 1}")
        self.params = []
        for i in upd:
            for name, p in layers[i].named_parameters():
                if any(name.startswith(m + ".") or name == m for m in cfg.update_modules) and cfg.lora is None:
                    self.params.append(p)
        if cfg.lora is None:
            if not self.params:
                raise ConfigError(f"rmu update_modules {cfg.update_modules} match no parameters in layers {upd}")
            keep = {id(p) for p in self.params}
            for p in model.parameters():
                p.requires_grad_(id(p) in keep)
        hidden = model.config.hidden_size
        u = torch.rand(hidden, generator=torch.Generator().manual_seed(cfg.seed))
        self.direction = u / u.norm()
        self.coeff = cfg.steering_coeff if cfg.steering_coeff is not None else 4.0 * self._forget_norm(model, views)

    @torch.no_grad()
    def _forget_norm(self, model, views) -> float:
        """Mean norm of θ₀'s layer-ℓ activations at the positions predicting forget-answer tokens."""
        dev = next(model.parameters()).device
        total, count = 0.0, 0
        n = len(views.encoded["forget"])
        for s in range(0, n, 16):
            b = {k: t.to(dev) for k, t in views.collate("forget", range(s, min(n, s + 16))).items()}
            h = self._hidden(model, b)
            _, _, mask = shift(h, b["labels"])
            norms = h[:, :-1][mask].norm(dim=-1)
            total, count = total + float(norms.sum()), count + norms.numel()
        return total / max(count, 1)

    def trainable(self, model):
        return self.params or None

    def run_info(self) -> dict[str, Any]:
        """The layer, update layers and steering coefficient actually used (the config may leave them to RMU)."""
        if self.coeff is None:
            return {}
        return {"rmu": {"layer": self.layer, "update_layers": self.update_layers, "steering_coeff": self.coeff}}

    def _layer_out(self, root, run) -> torch.Tensor:
        """The OUTPUT of decoder layer ℓ, captured with a forward hook (hidden_states[ℓ+1] would be the final
        norm's output when ℓ is the last layer)."""
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            store["h"] = output[0] if isinstance(output, tuple) else output

        handle = decoder_layers(root)[self.layer].register_forward_hook(hook)
        try:
            run()
        finally:
            handle.remove()
        return store["h"]

    def _hidden(self, model, view) -> torch.Tensor:
        return self._layer_out(model, lambda: model(input_ids=view["input_ids"], attention_mask=view["attention_mask"]))

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: RMUConfig = self.cfg  # type: ignore[assignment]
        f, r = batch["forget"], batch["retain"]
        hf = self._hidden(model, f)
        control = (self.coeff * self.direction).to(hf.device)
        hr = self._hidden(model, r)
        with torch.no_grad():
            hr0 = self._layer_out(ref.module, lambda: ref.forward(r))
        # activations at position t predict token t+1: use the positions that predict answer tokens
        _, _, fmask = shift(hf, f["labels"])
        _, _, rmask = shift(hr, r["labels"])
        fl, rl = rmu_loss(hf[:, :-1], control, fmask, hr[:, :-1], hr0[:, :-1], rmask, tok_denom(f), tok_denom(r))
        return LossOutput(fl + cfg.alpha * rl, {"forget_mse": num(fl), "retain_mse": num(rl), "c": self.coeff})
