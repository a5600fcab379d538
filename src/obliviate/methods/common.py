"""Small functions gradient methods share: running a view through a model, retain terms."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from obliviate.eval.passes import answer_nll, compact_logits
from obliviate.methods.base import GradientMethod, LossOutput, TrainConfig
from obliviate.methods.losses import IGNORE_INDEX, kl_loss, nll_loss, sequence_logps

RetainTerm = Literal["none", "gd", "kl"]


def num(t: torch.Tensor) -> float:
    """A loss term as a plain float for logging (detached: no autograd warning, no graph kept)."""
    return float(t.detach())


def tok_denom(view: dict[str, torch.Tensor]):
    """The engine's per-step answer-token denominator for this view (exact gradient accumulation), if any."""
    return view.get("tok_denom")


def seq_denom(view: dict[str, torch.Tensor]):
    """The engine's per-step sequence denominator for this view, if any."""
    return view.get("seq_denom")


def logits_of(model, view: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits where the view's answers are predicted, and the labels to read them with:
    ((B, A+1, V), (B, A+1)), A = the longest answer (eval.passes.compact_logits). Every loss in `losses` takes
    them as it would take the full (B, T, V) logits and the view's labels, with the same value; the LM head
    runs on the answers' positions only (the prompts, here often the chat template's system prompt, are most of
    a sequence)."""
    return compact_logits(model, view["input_ids"], view["attention_mask"], view["labels"])


def seq_logps(model, view: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence-sum answer log-probs (B,) and answer lengths (B,) under `model`."""
    return sequence_logps(*logits_of(model, view))


def retain_views(kind: str) -> tuple[str, ...]:
    """The data views of a method with an optional retain term: the forget set, plus the retain set unless the
    term is "none"."""
    return ("forget",) if kind == "none" else ("forget", "retain")


def retain_reference(kind: str, otherwise: str = "none") -> str:
    """The reference a method with an optional retain term needs: a frozen model for a KL retain term, else
    `otherwise` (what its forget term needs)."""
    return "model" if kind == "kl" else otherwise


def retain_term(kind: RetainTerm, model, ref, view: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The retain-side regulariser: NLL on D_r ("gd", gradient descent) or KL(p₀ ‖ p_θ) on D_r ("kl")."""
    if kind == "none" or view is None:
        return torch.zeros(()), {}
    logits, labels = logits_of(model, view)
    if kind == "gd":
        val = nll_loss(logits, labels, tok_denom(view))
        return val, {"retain_nll": num(val)}
    val = kl_loss(ref.logits(view), logits, labels, tok_denom(view))
    return val, {"retain_kl": num(val)}


class FinetuneNLL(GradientMethod):
    """Plain fine-tuning on the forget answers through the shared loop (not a registered unlearning method):
    the model builder, RKLD's augmentation step and the relearning attack. The LM head runs on answer positions
    only (eval.passes.answer_nll), a large share of a small model's compute."""

    Config = TrainConfig
    views = ("forget",)

    def loss(self, batch, model, ref) -> LossOutput:
        f = batch["forget"]
        total = answer_nll(model, f, "sum")
        denom = tok_denom(f)
        val = total / (denom if denom is not None else (f["labels"][:, 1:] != IGNORE_INDEX).sum().clamp_min(1))
        return LossOutput(val, {"nll": num(val)})


class AnchoredConfig(TrainConfig):
    anchor_weight: float = 1.0
    anchor_batch: int | None = Field(None, ge=1, description="anchor pairs per optimiser step (None: as many as "
                                                              "the step's training pairs)")


class FinetuneAnchored(FinetuneNLL):
    """Fine-tuning (as FinetuneNLL) with a soft anchor to the model it starts from: NLL on the forget view plus
    `anchor_weight` × KL(p₀ ‖ p_θ) over the answer tokens of the retain view (the model builder's rehearsal with
    loss=kl: the base's own answers to general questions, whose full next-token distributions the fine-tuned model
    is held to, rather than their greedy tokens)."""

    Config = AnchoredConfig
    views = ("forget", "retain")
    reference = "model"

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: AnchoredConfig = self.cfg  # type: ignore[assignment]
        fit = super().loss(batch, model, ref)
        keep, terms = retain_term("kl", model, ref, batch.get("retain"))
        return LossOutput(fit.loss + cfg.anchor_weight * keep, {**fit.terms, **terms})

    def retain_batch(self) -> int | None:
        return self.cfg.anchor_batch  # type: ignore[attr-defined]
