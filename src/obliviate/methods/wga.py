"""WGA — weighted gradient ascent (Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", arXiv 2502.19301)."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import RetainTerm, logits_of, num, retain_reference, retain_term, retain_views, tok_denom
from obliviate.methods.losses import wga_loss


class WGAConfig(TrainConfig):
    """`γ·(−mean_t sg(p_t)^β·NLL_t) + α·R(D_r)` on answer tokens, p_t = π_θ(y_t | q, y_<t): gradient ascent whose
    tokens are weighted by their own (detached) probability, so a token stops pulling once it is forgotten — the
    paper's remedy for GA's unbounded, collapse-prone objective.

    - `beta` β (1): the weight's exponent [OpenUnlearning `configs/trainer/WGA.yaml`, `beta: 1.0`]; β = 0 is
      plain GA.
    - `forget_weight` γ (1), `retain_weight` α (1), `retain` gd (NLL on D_r) | kl | none [OpenUnlearning WGA.yaml:
      gamma 1, alpha 1, retain_loss_type NLL].
    - `lr` (1e-5), `epochs` (5) [OpenUnlearning WGA.yaml]; batch 32, warm-up 1 epoch, weight decay 0.01:
      OpenUnlearning's TOFU finetune defaults, which WGA.yaml inherits."""

    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(5, ge=1)
    beta: float = Field(1.0, ge=0)
    forget_weight: float = Field(1.0, gt=0)
    retain: RetainTerm = "gd"
    retain_weight: float = Field(1.0, ge=0)


@register_method("wga", doc="Weighted gradient ascent: GA with detached token weights p^β (+ retain NLL).")
class WGA(GradientMethod):
    Config = WGAConfig
    search_space = {**TRAIN_SPACE, "beta": Space.uniform(0.0, 4.0),
                    "retain_weight": Space.log(0.1, 10.0, when=lambda c: c.retain != "none")}

    def __init__(self, cfg: WGAConfig) -> None:
        super().__init__(cfg)
        self.views = retain_views(cfg.retain)
        self.reference = retain_reference(cfg.retain)

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: WGAConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        forget = wga_loss(*logits_of(model, f), cfg.beta, tok_denom(f))
        keep, terms = retain_term(cfg.retain, model, ref, batch.get("retain"))
        return LossOutput(cfg.forget_weight * forget + cfg.retain_weight * keep, {"wga": num(forget), **terms})
