"""SimNPO — simplicity in unlearning (Fan et al., arXiv 2410.07163): reference-free, length-normalised NPO."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import num, retain_term, seq_logps, seq_denom
from obliviate.methods.losses import simnpo_loss


class SimNPOConfig(TrainConfig):
    """`γ·(−(2/β)·E log σ(β·(L̄_θ(a|q) − δ))) + α·NLL(D_r)`, L̄ the length-normalised NLL (no reference model).

    - `beta` β (4.5), `delta` δ margin (0): OpenUnlearning's TOFU settings.
    - `forget_weight` γ (0.125) and `retain_weight` α (1)."""

    beta: float = Field(4.5, gt=0)
    delta: float = 0.0
    forget_weight: float = Field(0.125, gt=0)
    retain_weight: float = Field(1.0, ge=0)


@register_method("simnpo", doc="SimNPO: reference-free, length-normalised NPO + retain NLL.")
class SimNPO(GradientMethod):
    Config = SimNPOConfig
    search_space = {**TRAIN_SPACE, "beta": Space.log(0.5, 10.0), "retain_weight": Space.log(0.1, 10.0)}
    views = ("forget", "retain")

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: SimNPOConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        logps, lengths = seq_logps(model, f)
        forget = simnpo_loss(logps, lengths, cfg.beta, cfg.delta, seq_denom(f))
        keep, terms = retain_term("gd", model, ref, batch["retain"])
        return LossOutput(cfg.forget_weight * forget + cfg.retain_weight * keep, {"simnpo": num(forget), **terms})
