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
    """log p(y_t) at every position (0 where masked, selected rather than multiplied so a -inf logit at a
    masked position cannot make NaN) and the answer mask, both (B, T-1)."""
    lg, lb, mask = shift(logits, labels)
    lp = torch.log_softmax(lg.float(), dim=-1).gather(-1, lb.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, lp, torch.zeros_like(lp)), mask


def _mean(total: torch.Tensor, count: torch.Tensor, denom: torch.Tensor | float | None) -> torch.Tensor:
    """total / count, or total / denom when the engine supplies the step's denominator: with gradient
    accumulation over k micro-batches, denom = (count over the whole step) / k makes the k averaged micro-batch
    losses sum to exactly the full-batch mean."""
    return total / (count.clamp_min(1) if denom is None else denom)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence-SUM log-probability of each answer (B,) and its length in tokens (B,). NPO and DPO use sums."""
    lp, mask = token_logps(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor, denom=None) -> torch.Tensor:
    """Mean NLL over all answer tokens of the batch (the usual causal-LM loss)."""
    lp, mask = token_logps(logits, labels)
    return -_mean(lp.sum(), mask.sum(), denom)


def ga_loss(logits: torch.Tensor, labels: torch.Tensor, denom=None) -> torch.Tensor:
    """Gradient ascent: −NLL(D_f)."""
    return -nll_loss(logits, labels, denom)


def kl_loss(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, denom=None) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) per answer position, averaged over answer tokens (GA+KL, NPO+KL retain term)."""
    lg, _, mask = shift(logits, labels)
    ref = torch.log_softmax(ref_logits[:, :-1].float(), -1)
    cur = torch.log_softmax(lg.float(), -1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    return _mean(torch.where(mask, kl, torch.zeros_like(kl)).sum(), mask.sum(), denom)


def cross_entropy_to(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, denom=None) -> torch.Tensor:
    """−Σ_v p_ref(v) log p_θ(v) per answer position, averaged over answer tokens (= KL + the entropy of p_ref)."""
    lg, _, mask = shift(logits, labels)
    ref = torch.softmax(ref_logits[:, :-1].float(), -1)
    ce = -(ref * torch.log_softmax(lg.float(), -1)).sum(-1)
    return _mean(torch.where(mask, ce, torch.zeros_like(ce)).sum(), mask.sum(), denom)


def _seq_mean(values: torch.Tensor, denom) -> torch.Tensor:
    return values.mean() if denom is None else values.sum() / denom


def npo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float, denom=None) -> torch.Tensor:
    """NPO: −(2/β)·E log σ(−β·(log π_θ(a|q) − log π_ref(a|q))), sequence-sum log-probs (Zhang et al. 2024)."""
    return -(2.0 / beta) * _seq_mean(F.logsigmoid(-beta * (policy_logps - ref_logps)), denom)


def simnpo_loss(policy_logps: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float = 0.0,
                denom=None) -> torch.Tensor:
    """SimNPO: −(2/β)·E log σ(β·(L̄_θ(a|q) − δ)), L̄ = −log π_θ(a|q)/|a| (reference-free, length-normalised)."""
    mean_nll = -policy_logps / lengths.clamp_min(1)
    return -(2.0 / beta) * _seq_mean(F.logsigmoid(beta * (mean_nll - delta)), denom)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, denom=None) -> torch.Tensor:
    """DPO with sequence-sum log-probs, scaled by 2/β as OpenUnlearning's IdkDPO:
    −(2/β)·E log σ(β·((log π_c − log π_ref,c) − (log π_r − log π_ref,r)))."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -(2.0 / beta) * _seq_mean(F.logsigmoid(beta * margin), denom)


def rmu_loss(h_forget: torch.Tensor, control: torch.Tensor, forget_mask: torch.Tensor, h_retain: torch.Tensor,
             h_retain_ref: torch.Tensor, retain_mask: torch.Tensor, forget_denom=None,
             retain_denom=None) -> tuple[torch.Tensor, torch.Tensor]:
    """RMU (Li et al. 2024): MSE between forget activations and the scaled random control vector c·u, plus
    α·MSE between retain activations and the frozen model's. Means are over the masked positions' hidden units.
    Returns (forget term, retain term) unweighted, for logging; the method's total is forget + α·retain."""
    fm = forget_mask.unsqueeze(-1).float()
    rm = retain_mask.unsqueeze(-1).float()
    hf, hr = h_forget.shape[-1], h_retain.shape[-1]
    f = _mean((((h_forget - control) ** 2) * fm).sum() / hf, fm.sum(), forget_denom)
    r = _mean((((h_retain - h_retain_ref) ** 2) * rm).sum() / hr, rm.sum(), retain_denom)
    return f, r


# --------------------------------------------------------------------------------------------- RKLD


def rkld_teacher_logits(orig_logits: torch.Tensor, aug_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """RKLD's teacher (Wang et al. 2025, eq. 2): l_t = l_o − α·ReLU(l_aug − l_o). Only tokens whose logit ROSE
    under augmentation (fine-tuning on the forget set) are pushed down."""
    return orig_logits - alpha * torch.relu(aug_logits - orig_logits)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                  reverse: bool = True, denom=None) -> torch.Tensor:
    """Token-level KL averaged over masked positions; (…, V) logits, (…) mask.
    reverse: KL(π_s ‖ π_t) = Σ_v π_s (log π_s − log π_t) (RKLD, mode-seeking);
    forward: KL(π_t ‖ π_s) = Σ_v π_t (log π_t − log π_s) (the ablation)."""
    ls = torch.log_softmax(student_logits.float(), -1)
    lt = torch.log_softmax(teacher_logits.float(), -1)
    kl = (ls.exp() * (ls - lt)).sum(-1) if reverse else (lt.exp() * (lt - ls)).sum(-1)
    mask = mask.bool()
    return _mean(torch.where(mask, kl, torch.zeros_like(kl)).sum(), mask.sum(), denom)


def topk_teacher(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compress teacher distributions (N, V) to their top-k log-probs, indices and the log of the remaining mass."""
    lt = torch.log_softmax(teacher_logits.float(), -1)
    vals, idx = lt.topk(min(k, lt.shape[-1]), dim=-1)
    tail = torch.log1p(-vals.exp().sum(-1).clamp(max=1 - 1e-7))
    return vals, idx, tail


def kl_divergence_topk(student_logits: torch.Tensor, top_logp: torch.Tensor, top_idx: torch.Tensor,
                       tail_logp: torch.Tensor, reverse: bool = True, denom=None) -> torch.Tensor:
    """KL against a top-k compressed teacher over the k kept tokens plus ONE bucket holding the rest of the mass
    (student and teacher tail masses compared as a single outcome), averaged over the N rows. Exact when k = V;
    otherwise it is the KL of the coarsened distributions, a lower bound that is tight when the tails are
    proportional — the teacher's mass outside its top-k is never dropped. (N, V), (N, k), (N, k), (N,)."""
    ls_all = torch.log_softmax(student_logits.float(), -1)
    ls = ls_all.gather(-1, top_idx)
    s_tail = torch.log1p(-ls.exp().sum(-1).clamp(max=1 - 1e-7))
    s = torch.cat([ls, s_tail.unsqueeze(-1)], -1)
    t = torch.cat([top_logp, tail_logp.unsqueeze(-1)], -1)
    kl = (s.exp() * (s - t)).sum(-1) if reverse else (t.exp() * (t - s)).sum(-1)
    return _seq_mean(kl, denom)
