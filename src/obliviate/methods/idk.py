"""Refusal-target baselines: IdkNLL and IdkDPO (Maini et al. 2024; Rafailov et al. 2023). The "I don't know"
answers are this project's own refusal phrasings (data/refusals.py), naming the subject when it is known."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import num, logits_of, retain_term, seq_logps, seq_denom, tok_denom
from obliviate.methods.losses import dpo_loss, nll_loss


class IdkNLLConfig(TrainConfig):
    """`NLL(refusal | forget question) + α·NLL(D_r)`. `retain_weight` α (1)."""

    retain_weight: float = Field(1.0, ge=0)


@register_method("idknll", doc="NLL toward refusals on forget questions + NLL on the retain set.")
class IdkNLL(GradientMethod):
    Config = IdkNLLConfig
    search_space = {**TRAIN_SPACE, "retain_weight": Space.log(0.1, 10.0)}
    views = ("forget_idk", "retain")

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: IdkNLLConfig = self.cfg  # type: ignore[assignment]
        v = batch["forget_idk"]
        idk = nll_loss(*logits_of(model, v), tok_denom(v))
        keep, terms = retain_term("gd", model, ref, batch["retain"])
        return LossOutput(idk + cfg.retain_weight * keep, {"idk_nll": num(idk), **terms})


class IdkDPOConfig(TrainConfig):
    """DPO with the refusal preferred over the true answer, plus a retain NLL term:
    `γ·(−(2/β)·E log σ(β·((log π_idk − log π₀,idk) − (log π_true − log π₀,true)))) + α·NLL(D_r)`.

    - `beta` β (0.1), `forget_weight` γ (1), `retain_weight` α (1): OpenUnlearning's TOFU settings."""

    beta: float = Field(0.1, gt=0)
    forget_weight: float = Field(1.0, gt=0)
    retain_weight: float = Field(1.0, ge=0)


@register_method("idkdpo", doc="DPO preferring a refusal over the true answer (β = 0.1) + retain NLL.")
class IdkDPO(GradientMethod):
    Config = IdkDPOConfig
    search_space = {**TRAIN_SPACE, "beta": Space.log(0.02, 1.0), "retain_weight": Space.log(0.1, 10.0)}
    views = ("forget", "forget_idk", "retain")
    reference = "logps"
    ref_views = ("forget", "forget_idk")

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: IdkDPOConfig = self.cfg  # type: ignore[assignment]
        f, idk = batch["forget"], batch["forget_idk"]
        rejected, _ = seq_logps(model, f)
        chosen, _ = seq_logps(model, idk)
        dev = chosen.device
        pref = dpo_loss(chosen, rejected, ref.logps("forget_idk", idk["index"]).to(dev),
                        ref.logps("forget", f["index"]).to(dev), cfg.beta, seq_denom(f))
        keep, terms = retain_term("gd", model, ref, batch["retain"])
        return LossOutput(cfg.forget_weight * pref + cfg.retain_weight * keep, {"dpo": num(pref), **terms})
