"""Gradient ascent and its retain-regularised variants (GradDiff, GA+KL): the field's simplest baselines."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import RetainTerm, logits_of, num, retain_reference, retain_term, retain_views, tok_denom
from obliviate.methods.losses import ga_loss


class GAConfig(TrainConfig):
    """GA: `−NLL(D_f)` (Jang et al. 2022). GradDiff adds `+ λ·NLL(D_r)`, GA+KL adds `+ λ·KL(p₀‖p_θ)` on D_r
    (Maini et al. 2024, TOFU).

    - `retain`: the retain term (none | gd | kl).
    - `retain_weight` λ: its weight (1, as OpenUnlearning).
    - `forget_weight`: the weight of the ascent term (1)."""

    retain: RetainTerm = "none"
    retain_weight: float = Field(1.0, ge=0)
    forget_weight: float = Field(1.0, gt=0)


@register_method("ga_kl", doc="Gradient ascent with a KL(p₀‖p_θ) retain term on D_r.", retain="kl")
@register_method("graddiff", doc="Gradient difference: −NLL(D_f) + λ·NLL(D_r).", retain="gd")
@register_method("ga", doc="Gradient ascent on the forget set: −NLL(D_f).")
class GradientAscent(GradientMethod):
    Config = GAConfig
    search_space = {**TRAIN_SPACE,  # + λ of the retain term (graddiff, ga_kl)
                    "retain_weight": Space.log(0.1, 10.0, when=lambda c: c.retain != "none")}

    def __init__(self, cfg: GAConfig) -> None:
        super().__init__(cfg)
        self.views = retain_views(cfg.retain)
        self.reference = retain_reference(cfg.retain)

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: GAConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        forget = ga_loss(*logits_of(model, f), tok_denom(f))
        keep, terms = retain_term(cfg.retain, model, ref, batch.get("retain"))
        return LossOutput(cfg.forget_weight * forget + cfg.retain_weight * keep, {"forget_nll": -num(forget), **terms})
