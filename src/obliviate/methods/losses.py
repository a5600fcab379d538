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


# --------------------------------------------------------------------------------------------- token-weighted ascent
# WGA and SatImp (the "gradient perspective" / loss-reweighting family): gradient ascent whose answer tokens are
# weighted by a DETACHED function of the token's own probability p_t = π_θ(y_t | x, y_<t).


def _weighted_ascent(lp: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, denom) -> torch.Tensor:
    """−(1/N) Σ_t w_t · NLL_t = (1/N) Σ_t w_t · log p_t over answer tokens; `lp` is 0 at masked positions."""
    return _mean((weight * lp).sum(), mask.sum(), denom)


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float, denom=None) -> torch.Tensor:
    """Weighted gradient ascent (Wang et al. 2025): −mean_t w_t·NLL_t with w_t = sg(p_t)^β. Confident tokens keep a
    large weight; a token already pushed down (p_t → 0) stops contributing, which bounds GA's runaway."""
    lp, mask = token_logps(logits, labels)
    return _weighted_ascent(lp, mask, lp.detach().exp() ** beta, denom)


def satimp_loss(logits: torch.Tensor, labels: torch.Tensor, beta1: float, beta2: float, denom=None) -> torch.Tensor:
    """SatImp (Yang et al., ICML 2025): −mean_t w_t·NLL_t with w_t = sg(p_t)^β1 · sg(1 − p_t)^β2, the product of a
    saturation weight (p^β1: drop tokens already forgotten) and an importance weight ((1 − p)^β2)."""
    lp, mask = token_logps(logits, labels)
    p = lp.detach().exp()
    return _weighted_ascent(lp, mask, p ** beta1 * (1 - p) ** beta2, denom)


# --------------------------------------------------------------------------------------------- UNDIAL


def undial_teacher_logits(ref_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL's adjusted logits (Dong et al., NAACL 2025): the frozen model's logits with the TRUE token's logit
    lowered by β, z' = z − β·e_y; (…, V) logits, (…) target ids (negative ids are clamped to 0: mask them)."""
    z = ref_logits.float()
    return z.scatter_add(-1, targets.clamp_min(0).unsqueeze(-1), torch.full_like(z[..., :1], -beta))


def undial_loss(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, beta: float,
                denom=None) -> torch.Tensor:
    """Self-distillation to the adjusted teacher: −Σ_v softmax(z')(v)·log π_θ(v) per answer position (cross-entropy
    = forward KL(teacher ‖ student) + the teacher's entropy), averaged over answer tokens."""
    lg, lb, mask = shift(logits, labels)
    teacher = torch.softmax(undial_teacher_logits(ref_logits[:, :-1], lb, beta), -1)  # (B, T-1, V)
    ce = -(teacher * torch.log_softmax(lg.float(), -1)).sum(-1)
    return _mean(torch.where(mask, ce, torch.zeros_like(ce)).sum(), mask.sum(), denom)


# --------------------------------------------------------------------------------------------- CE-U


def drop_first_answer_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """`labels` with the first `n` answer (non -100) tokens of every row masked to -100."""
    if n <= 0:
        return labels
    keep = labels != IGNORE_INDEX
    return labels.masked_fill(keep & (keep.cumsum(-1) <= n), IGNORE_INDEX)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first: int = 0, denom=None) -> torch.Tensor:
    """CE-U (Yang 2025, "Cross Entropy Unlearning"): cross-entropy −Σ_v q(v)·log π_θ(v) to the target
    q = softmax(sg(z) with z_y = −∞), the model's own distribution with the true token removed; averaged over
    answer tokens, skipping each row's first `ignore_first` answer tokens (the paper's training-settings footnote).
    Its gradient on the logits is π_θ − q: bounded, unlike GA's, and zero once the true token has no mass."""
    lg, lb, mask = shift(logits, drop_first_answer_tokens(labels, ignore_first))
    lg = lg.float()
    target = lg.detach().scatter(-1, lb.clamp_min(0).unsqueeze(-1), float("-inf"))
    ce = -(torch.softmax(target, -1) * torch.log_softmax(lg, -1)).sum(-1)
    return _mean(torch.where(mask, ce, torch.zeros_like(ce)).sum(), mask.sum(), denom)


# --------------------------------------------------------------------------------------------- PDU


def logit_margin_loss(logits: torch.Tensor, labels: torch.Tensor, denom=None) -> torch.Tensor:
    """PDU's logit-margin flattening (Entesari et al. 2025): (max_v z_v − mean_v z_v)² per answer position,
    averaged over answer tokens; zero exactly when the logits are flat (the output distribution is uniform)."""
    lg, _, mask = shift(logits, labels)
    lg = lg.float()
    margin = (lg.max(-1).values - lg.mean(-1)) ** 2
    return _mean(torch.where(mask, margin, torch.zeros_like(margin)).sum(), mask.sum(), denom)


def dual_ascent(lam: float, constraint: float, eps: float, step_size: float) -> float:
    """Projected dual ascent on the multiplier of `constraint ≤ eps`: λ ← max(0, λ + η·(constraint − eps))."""
    return max(0.0, lam + step_size * (constraint - eps))


# --------------------------------------------------------------------------------------------- AltPO


def altpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
               beta: float, denom=None) -> torch.Tensor:
    """AltPO (Mekala et al., COLING 2025): DPO with K self-generated alternative answers preferred over the true
    one, scaled by 2/β as OpenUnlearning's DPO: −(2/β)·E_items (1/K) Σ_k log σ(β·((log π_k − log π_ref,k) −
    (log π_true − log π_ref,true))). Sequence-sum log-probs; (K, B) alternatives, (B,) true answers."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected).unsqueeze(0)  # (K, B)
    return -(2.0 / beta) * _seq_mean(F.logsigmoid(beta * margin).mean(0), denom)
