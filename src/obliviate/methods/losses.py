"""The maths of every unlearning method, written once as tensor functions (METHODS.md).

Shapes: B = batch, T = sequence length, V = vocabulary. `labels` use -100 on prompt and padding positions;
every token-level quantity is averaged over ANSWER tokens only (METHODS.md, "Masking")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1: (B, T-1, V) logits, (B, T-1) labels, (B, T-1) answer mask."""
    lg, lb = logits[:, :-1], labels[:, 1:]
    return lg, lb, lb != IGNORE_INDEX


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_t) at every position (0 where masked) and the answer mask, both (B, T-1)."""
    lg, lb, mask = shift(logits, labels)
    lp = torch.log_softmax(lg.float(), dim=-1).gather(-1, lb.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence-SUM log-probability of each answer (B,) and its length in tokens (B,). NPO and DPO use sums."""
    lp, mask = token_logps(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all answer tokens of the batch (the usual causal-LM loss)."""
    lp, mask = token_logps(logits, labels)
    return -(lp.sum() / mask.sum().clamp_min(1))


def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: −NLL(D_f)."""
    return -nll_loss(logits, labels)


def kl_loss(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) per answer position, averaged over answer tokens (GA+KL, NPO+KL retain term)."""
    lg, _, mask = shift(logits, labels)
    ref = torch.log_softmax(ref_logits[:, :-1].float(), -1)
    cur = torch.log_softmax(lg.float(), -1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def cross_entropy_to(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−Σ_v p_ref(v) log p_θ(v) per answer position, averaged over answer tokens (= KL + the entropy of p_ref)."""
    lg, _, mask = shift(logits, labels)
    ref = torch.softmax(ref_logits[:, :-1].float(), -1)
    ce = -(ref * torch.log_softmax(lg.float(), -1)).sum(-1)
    return (ce * mask).sum() / mask.sum().clamp_min(1)


def npo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: −(2/β)·E log σ(−β·(log π_θ(a|q) − log π_ref(a|q))), sequence-sum log-probs (Zhang et al. 2024)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (policy_logps - ref_logps)).mean()


def simnpo_loss(policy_logps: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """SimNPO: −(2/β)·E log σ(β·(L̄_θ(a|q) − δ)), L̄ = −log π_θ(a|q)/|a| (reference-free, length-normalised)."""
    mean_nll = -policy_logps / lengths.clamp_min(1)
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta)).mean()


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """DPO with sequence-sum log-probs, scaled by 2/β as OpenUnlearning's IdkDPO:
    −(2/β)·E log σ(β·((log π_c − log π_ref,c) − (log π_r − log π_ref,r)))."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def rmu_loss(h_forget: torch.Tensor, control: torch.Tensor, forget_mask: torch.Tensor, h_retain: torch.Tensor,
             h_retain_ref: torch.Tensor, retain_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RMU (Li et al. 2024): MSE between forget activations and the scaled random control vector c·u, plus
    α·MSE between retain activations and the frozen model's. Means are over the masked positions' hidden units.
    Returns (forget term, retain term) unweighted, for logging; the method's total is forget + α·retain."""
    fm = forget_mask.unsqueeze(-1).float()
    rm = retain_mask.unsqueeze(-1).float()
    f = (((h_forget - control) ** 2) * fm).sum() / (fm.sum() * h_forget.shape[-1]).clamp_min(1)
    r = (((h_retain - h_retain_ref) ** 2) * rm).sum() / (rm.sum() * h_retain.shape[-1]).clamp_min(1)
    return f, r
