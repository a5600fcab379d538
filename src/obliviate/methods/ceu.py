"""CE-U — cross-entropy unlearning (Yang 2025, "CE-U: Cross Entropy Unlearning", arXiv 2503.01224)."""

from __future__ import annotations

from pydantic import Field

from obliviate.methods.base import GradientMethod, LossOutput, TrainConfig, register_method
from obliviate.methods.common import logits_of, num, tok_denom
from obliviate.methods.losses import ceu_loss


class CEUConfig(TrainConfig):
    """`−Σ_v q(v)·log π_θ(v)` on every answer position of the forget set, with the target
    `q = softmax(sg(z) with z_y = −∞)`: the model's own (detached) distribution with the true token removed. The
    gradient on the logits is π_θ − q, bounded where gradient ascent's explodes; no retain set and no reference
    model [paper].

    - `ignore_first` (1): skip each answer's first n tokens [the paper's footnote in "Training Settings", as
      implemented by OpenUnlearning's CEU trainer, `ignore_first_n_answer_tokens=1`].
    - lr, epochs, batch, warm-up, weight decay: OpenUnlearning's TOFU defaults (lr 1e-5, 10 epochs, batch 32,
      1 warm-up epoch, wd 0.01); this project has not checked them against the paper's own schedule.

    The loss is the token mean over the whole step's counted tokens (the skipped ones left out of the count), so
    gradient accumulation and several processes give the single-batch mean exactly."""

    ignore_first: int = Field(1, ge=0)


@register_method("ceu", doc="CE-U: cross-entropy to the model's own distribution with the true token removed.")
class CEU(GradientMethod):
    Config = CEUConfig
    views = ("forget",)

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: CEUConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        val = ceu_loss(*logits_of(model, f), cfg.ignore_first, tok_denom(f))
        return LossOutput(val, {"ceu": num(val)})

    def answer_tokens(self, views, view: str, indices) -> int:
        skip = self.cfg.ignore_first  # type: ignore[attr-defined]
        return sum(max(0, views.n_answer_tokens(view, [i]) - skip) for i in indices)
