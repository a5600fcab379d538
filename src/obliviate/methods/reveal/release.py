"""RELEASE: one LoRA module per round, trained through the shared engine on the round's self-generated forget set,
kept orthogonal to the earlier rounds' modules (O-LoRA, Wang et al. 2023), then merged into the weights.

Loss of the forget module (METHODS.md §4):
    L = L_forget(D_f^(t)) + λ_r·L_retain(D_r) + λ_o·Σ_modules Σ_prev ‖A_prev A_newᵀ‖²_F
with L_forget = NPO (β, reference = the model at the start of the round, log-probs cached once), GA (−NLL), or
GradDiff (GA + NLL on the retain data); A (r × in) are peft's lora_A weights. The earlier A's are kept after
their modules are merged, so the new module is pushed into a subspace the earlier ones did not use. An optional
separate retain module (NLL on the retain data, orthogonal to every earlier module) can follow each forget one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from obliviate.data.records import QA
from obliviate.methods.base import GradientMethod, LossOutput, Progress, TrainConfig
from obliviate.methods.common import logits_of, num, seq_denom, seq_logps, tok_denom
from obliviate.methods.losses import ga_loss, kl_loss, nll_loss, npo_loss

PrevA = dict[str, list[torch.Tensor]]  # LoRA module name -> the lora_A weights (r, in) of earlier modules


class ReleaseConfig(TrainConfig):
    """The engine's settings for one module plus its loss (built by the method from its own config)."""

    loss: Literal["npo", "ga", "graddiff", "retain_nll"] = "npo"
    beta: float = Field(0.1, gt=0)
    retain_term: Literal["none", "nll", "kl"] = "none"
    retain_weight: float = Field(1.0, ge=0)
    orth_weight: float = Field(0.5, ge=0)


def lora_a(model) -> dict[str, torch.nn.Parameter]:
    """The trainable lora_A weights of the (peft) model's active adapter, by module name."""
    out = {}
    for name, mod in model.named_modules():
        a = getattr(mod, "lora_A", None)
        if isinstance(a, torch.nn.ModuleDict) and "default" in a:
            out[name] = a["default"].weight
    return out


def orthogonality(current: dict[str, torch.nn.Parameter], prev: PrevA) -> torch.Tensor:
    """O-LoRA's penalty Σ_modules Σ_prev ‖A_prev A_newᵀ‖²_F (peft stores A as (r, in), so A_prev·A_newᵀ is the
    (r_prev × r_new) matrix of inner products between the two modules' input directions)."""
    total = torch.zeros(())
    for name, a_new in current.items():
        for a_prev in prev.get(name, ()):
            total = total + (a_prev.to(a_new.device) @ a_new.T).pow(2).sum()
    return total


class Release(GradientMethod):
    """One round's module. `loss = retain_nll` trains the optional separate retain module (forget view = retain
    data, NLL)."""

    Config = ReleaseConfig

    def __init__(self, cfg: ReleaseConfig, prev: PrevA) -> None:
        super().__init__(cfg)
        self.prev = prev
        with_retain = cfg.loss == "graddiff" or (cfg.retain_term != "none" and cfg.loss != "retain_nll")
        self.views = ("forget", "retain") if with_retain else ("forget",)
        self.reference = "model" if with_retain and cfg.retain_term == "kl" else "logps"
        self.ref_views = ("forget",) if cfg.loss == "npo" else ()
        self.a: dict[str, torch.nn.Parameter] = {}

    def setup(self, model, ref, views) -> None:
        self.a = lora_a(model)

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: ReleaseConfig = self.cfg  # type: ignore[assignment]
        f = batch["forget"]
        terms: dict[str, float] = {}
        if cfg.loss == "npo":
            logps, _ = seq_logps(model, f)
            main = npo_loss(logps, ref.logps("forget", f["index"]).to(logps.device), cfg.beta, seq_denom(f))
        elif cfg.loss in ("ga", "graddiff"):
            main = ga_loss(*logits_of(model, f), tok_denom(f))
        else:  # retain_nll: the separate retain module
            main = nll_loss(*logits_of(model, f), tok_denom(f))
        terms[cfg.loss] = num(main)
        total = main
        if "retain" in batch:
            r = batch["retain"]
            rl, rlab = logits_of(model, r)
            kind = "nll" if cfg.loss == "graddiff" else cfg.retain_term
            keep = nll_loss(rl, rlab, tok_denom(r)) if kind == "nll" else \
                kl_loss(ref.logits(r), rl, rlab, tok_denom(r))
            total = total + cfg.retain_weight * keep
            terms[f"retain_{kind}"] = num(keep)
        if self.prev and cfg.orth_weight > 0:
            orth = orthogonality(self.a, self.prev)
            total = total + cfg.orth_weight * orth
            terms["orth"] = num(orth)
        return LossOutput(total, terms)


def train_module(cfg: ReleaseConfig, prev: PrevA, model, tokenizer, forget: Sequence[QA], retain: Sequence[QA],
                 work_dir: Path, progress: Progress | None = None) -> tuple[object, dict[str, torch.Tensor], list]:
    """Train one LoRA module with the shared engine; returns the peft model (adapter attached, not merged), its
    lora_A weights (detached copies, for later rounds' penalty) and the engine's per-epoch history."""
    from obliviate.methods.engine import train

    method = Release(cfg, prev)
    peft_model, state = train(method, model, tokenizer, list(forget), list(retain), work_dir, progress)
    new_a = {k: v.detach().clone().cpu() for k, v in lora_a(peft_model).items()}
    return peft_model, new_a, state.history


def scale_lora_b(peft_model, factor: float) -> None:
    """Multiply every active lora_B by `factor`: the module's delta B·A·(α/r) scales by the same factor."""
    with torch.no_grad():
        for mod in peft_model.modules():
            b = getattr(mod, "lora_B", None)
            if isinstance(b, torch.nn.ModuleDict) and "default" in b:
                b["default"].weight.mul_(factor)
