"""NPO — Negative Preference Optimization (Zhang et al., COLM 2024, arXiv 2404.05868), with +GD / +KL."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import RetainTerm, num, retain_reference, retain_term, retain_views, seq_denom, seq_logps
from obliviate.methods.losses import npo_loss


class NPOConfig(TrainConfig):
    """NPO treats the forget answers as dispreferred responses only:
    `−(2/β)·E log σ(−β·(log π_θ(a|q) − log π₀(a|q)))` with sequence-SUM log-probs. Its gradient is gradient
    ascent re-weighted by how far the answer's likelihood has already fallen, which slows the collapse of GA.

    - `beta` β: inverse temperature (0.1, the paper's TOFU setting).
    - `retain`: none | gd (NPO+GD: + λ·NLL(D_r)) | kl (NPO+KL: + λ·KL(p₀‖p_θ) on D_r).
    - `retain_weight` λ (1)."""

    beta: float = Field(0.1, gt=0)
    retain: RetainTerm = "none"
    retain_weight: float = Field(1.0, ge=0)


@register_method("npo_kl", doc="NPO + KL(p₀‖p_θ) on the retain set.", retain="kl")
@register_method("npo_gd", doc="NPO + NLL on the retain set.", retain="gd")
@register_method("npo", doc="Negative preference optimisation on the forget answers (β = 0.1).")
class NPO(GradientMethod):
    Config = NPOConfig
    search_space = {**TRAIN_SPACE, "beta": Space.log(0.02, 1.0),
                    "retain_weight": Space.log(0.1, 10.0, when=lambda c: c.retain != "none")}
    ref_views = ("forget",)  # log π₀(a|q) of the fixed forget data: computed once before training

    def __init__(self, cfg: NPOConfig) -> None:
        super().__init__(cfg)
        self.views = retain_views(cfg.retain)
        self.reference = retain_reference(cfg.retain, "logps")

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: NPOConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        logps, _ = seq_logps(model, f)
        forget = npo_loss(logps, ref.logps("forget", f["index"]).to(logps.device), cfg.beta, seq_denom(f))
        keep, terms = retain_term(cfg.retain, model, ref, batch.get("retain"))
        return LossOutput(forget + cfg.retain_weight * keep, {"npo": num(forget), **terms})
