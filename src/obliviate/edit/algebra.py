"""The closed-form algebra of locate-then-edit: the null-space projector and the AlphaEdit update.

A Llama MLP's down-projection is a linear key-value memory: v = W k with k (d_k,) its input and v (d_v,) its
output. An edit asks W to map new keys K (d_k, n) to new values W K + R, R (d_v, n) the residuals. AlphaEdit
(Fang et al., ICLR 2025, arXiv 2410.02355) restricts the update to the null space of the preserved keys'
covariance, so every preserved key k₀ (P k₀ = 0) keeps its output exactly:

    Δ = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + λ I)⁻¹                                                       (AlphaEdit eq. 10)

It is the minimiser of ‖Δ K − R‖² + λ‖Δ‖² + ‖Δ K_p‖² over updates with Δ = Δ P: the residual is met on the new
keys, the update stays small, and the keys of earlier edits K_p (sequential editing) keep their new values."""

from __future__ import annotations

import torch


def null_space_projector(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = U₀ U₀ᵀ with U₀ the eigenvectors of the (symmetric, PSD) key second moment `cov` (d_k, d_k) whose
    eigenvalue is below `threshold`: keys of the preserved text have (on average) almost no component in P's
    range, so an update of the form Δ P barely changes their outputs. Returned in float64, (d_k, d_k)."""
    evals, evecs = torch.linalg.eigh(cov.double())  # ascending eigenvalues, orthonormal columns
    u0 = evecs[:, evals < threshold]  # (d_k, r)
    return u0 @ u0.T


def alphaedit_update(resid: torch.Tensor, keys: torch.Tensor, projector: torch.Tensor,
                     preserved: torch.Tensor | None = None, l2: float = 10.0) -> torch.Tensor:
    """AlphaEdit eq. 10: Δ (d_v, d_k) from residuals `resid` R (d_v, n), new keys `keys` K (d_k, n), the projector
    P (d_k, d_k), and `preserved` = K_p K_pᵀ (d_k, d_k), the summed outer products of earlier edits' keys.

    Solved as a linear system in float64 (the official code's `solve(P (K Kᵀ + K_p K_pᵀ) + λI, P K Rᵀ)`, then
    transposed) rather than by forming an inverse."""
    k = keys.double()
    p = projector.double()
    d_k = k.shape[0]
    m = k @ k.T  # (d_k, d_k)
    if preserved is not None:
        m = m + preserved.double()
    lhs = p @ m + l2 * torch.eye(d_k, dtype=torch.float64, device=k.device)
    rhs = p @ k @ resid.double().T  # (d_k, d_v)
    return torch.linalg.solve(lhs, rhs).T  # (d_v, d_k)
