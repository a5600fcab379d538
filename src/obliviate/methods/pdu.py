"""PDU — primal-dual unlearning with a logit-margin flattening loss (Entesari et al. 2025, "Constrained Entropic
Unlearning: A Primal-Dual Framework for Large Language Models", arXiv 2506.05314)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from obliviate.errors import ConfigError
from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import logits_of, num, tok_denom
from obliviate.methods.losses import IGNORE_INDEX, dual_ascent, logit_margin_loss, nll_loss

log = logging.getLogger(__name__)


class PDUConfig(TrainConfig):
    """Unlearning as a constrained problem, `min_θ L_f(θ) s.t. L_r(θ) ≤ ε`, solved on the Lagrangian
    `γ·L_f + λ·(L_r − ε)` by gradient descent on θ and projected dual ascent on λ,
    `λ ← max(0, λ + η·(L_r − ε))`.
    - forget `L_f` = (max_v z_v − mean_v z_v)², the squared gap between the top logit and the mean logit, averaged
      over answer tokens: zero exactly when the output distribution is uniform ("logit-margin flattening").
      OpenUnlearning's PDU trainer averages it over every position, prompt and padding included; we average over
      answer tokens only, as every token-level loss here (METHODS.md, "Masking").
    - retain `L_r` = NLL on D_r.

    Settings: the authors' final TOFU values (OpenUnlearning `community/methods/PDU/run.sh`, Llama-3.2-1B/3B):
    - `dual_init` λ₀ (100): the initial retain preference (`alpha=100`; MUSE: 50) — the forget loss is a squared
      logit gap, so the retain term needs a large weight to matter.
    - `eps` ε (0.3): the retain-loss bound (`retain_loss_eps=0.3`); the authors advise a value somewhat above the
      input model's retain NLL — at tiny scale see bench/presets.py.
    - `dual_step` η (5, `dual_step_size=5`; MUSE: 1), `dual_warmup_epochs` (5): λ stays at λ₀ until that many
      epochs have ended (`dual_warmup_epochs=5`); `dual_update` step (`dual_update_upon="step"`) | epoch (once per
      epoch, from the retain NLL measured after the epoch).
    - `forget_weight` γ (1, `gamma=1.`); `lr` (1e-5), `epochs` (10), batch 32 (4 per device × 8 GPUs).

    λ is saved with every epoch checkpoint, so a resumed run continues from the multiplier it reached. Per-step
    dual updates use the micro-batch's mean retain NLL with step η / grad_accum (exactly the paper's per-step
    update when grad_accum = 1); in multi-process training each process keeps its own λ."""

    lr: float = Field(1e-5, gt=0)
    forget_weight: float = Field(1.0, gt=0)
    dual_init: float = Field(100.0, ge=0)
    eps: float = Field(0.3, ge=0)
    dual_step: float = Field(5.0, ge=0)
    dual_warmup_epochs: int = Field(5, ge=0)
    dual_update: Literal["step", "epoch"] = "step"


@register_method("pdu", doc="Primal-dual unlearning: flatten forget logits, retain NLL ≤ ε by a dual variable.")
class PDU(GradientMethod):
    Config = PDUConfig
    search_space = {**TRAIN_SPACE, "eps": Space.log(0.03, 3.0),  # the retain-loss bound and the dual step
                    "dual_step": Space.log(0.5, 50.0)}
    views = ("forget", "retain")
    constant_terms = ("dual_lambda",)

    def __init__(self, cfg: PDUConfig) -> None:
        super().__init__(cfg)
        self.lam = float(cfg.dual_init)
        self.epochs_done = 0
        self.trace: list[float] = []  # λ at the end of each epoch
        if cfg.dual_step > 0 and cfg.dual_warmup_epochs >= cfg.epochs:
            # the authors' warm-up (5) is half their 10 epochs; with fewer epochs the constraint never binds
            log.warning("pdu: dual_warmup_epochs=%d >= epochs=%d, so λ stays at dual_init=%g for the whole run and "
                        "the retain bound eps=%g is never enforced; set dual_warmup_epochs below epochs (the "
                        "authors': half the run)", cfg.dual_warmup_epochs, cfg.epochs, cfg.dual_init, cfg.eps)

    def setup(self, model, ref, views) -> None:
        from obliviate.utils import dist

        if self.cfg.dual_update == "step" and dist.world_size() > 1:  # type: ignore[attr-defined]
            raise ConfigError("pdu dual_update=step updates λ from each micro-batch's own retain loss, which differs "
                              "between processes; under several processes use dual_update=epoch (λ from the "
                              "epoch's retain NLL, the same on every rank)")

    def _dual_active(self) -> bool:
        return self.epochs_done >= self.cfg.dual_warmup_epochs  # type: ignore[attr-defined]

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: PDUConfig = self.cfg  # type: ignore[assignment]
        f, r = batch["forget"], batch["retain"]
        forget = logit_margin_loss(*logits_of(model, f), tok_denom(f))
        denom = tok_denom(r)
        retain = nll_loss(*logits_of(model, r), denom)
        lam = self.lam
        total = cfg.forget_weight * forget + lam * (retain - cfg.eps)
        if cfg.dual_update == "step" and self._dual_active():
            # the micro-batch's own mean NLL (`retain` is scaled to the step's token count when accumulating)
            n_tok = (r["labels"][:, 1:] != IGNORE_INDEX).sum().clamp_min(1)
            own = num(retain) if denom is None else num(retain * denom / n_tok)
            self.lam = dual_ascent(self.lam, own, cfg.eps, cfg.dual_step / cfg.grad_accum)
        return LossOutput(total, {"margin": num(forget), "retain_nll": num(retain), "dual_lambda": lam})

    def after_epoch(self, model, epoch: int, log: dict[str, float]) -> bool:
        cfg: PDUConfig = self.cfg  # type: ignore[assignment]
        self.epochs_done = epoch
        if cfg.dual_update == "epoch" and self._dual_active():
            measured = log.get("retain_nll_eval", log.get("retain_nll"))
            if measured is not None:
                self.lam = dual_ascent(self.lam, float(measured), cfg.eps, cfg.dual_step)
        self.trace.append(self.lam)
        log["dual_lambda_end"] = self.lam
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "epochs_done": self.epochs_done, "trace": list(self.trace)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.lam, self.epochs_done = float(state["lam"]), int(state["epochs_done"])
            self.trace = list(state.get("trace", []))

    def extras(self) -> dict[str, Any]:
        """Saved next to the model: the multiplier λ at the end of every epoch."""
        return {"pdu": {"dual_init": self.cfg.dual_init, "lambda_by_epoch": self.trace}}  # type: ignore[attr-defined]
