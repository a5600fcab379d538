"""The closed-form algebra of locate-then-edit (edit/algebra.py) on small random matrices, in float64."""

from __future__ import annotations

import torch

from obliviate.edit.algebra import alphaedit_update, null_space_projector

torch.set_num_threads(1)


def _cov_with_spectrum(d: int, big: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A PSD matrix with `big` eigenvalues in [1, 5] and d − big in [1e-4, 1e-3]; returns (cov, U_big, U_small)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    evals = torch.cat([1 + 4 * torch.rand(big, generator=g, dtype=torch.float64),
                       1e-4 + 9e-4 * torch.rand(d - big, generator=g, dtype=torch.float64)])
    return q @ torch.diag(evals) @ q.T, q[:, :big], q[:, big:]


def test_projector_spans_exactly_the_small_eigenvalue_directions():
    """P is symmetric and idempotent, has rank = #eigenvalues below the threshold, annihilates the large-
    eigenvalue eigenvectors and keeps the small-eigenvalue ones."""
    cov, u_big, u_small = _cov_with_spectrum(12, 5)
    p = null_space_projector(cov, threshold=1e-2)
    assert torch.allclose(p, p.T, atol=1e-12)
    assert torch.allclose(p @ p, p, atol=1e-10)
    assert round(float(torch.trace(p))) == 7
    assert torch.allclose(p @ u_big, torch.zeros_like(u_big), atol=1e-10)
    assert torch.allclose(p @ u_small, u_small, atol=1e-10)


def test_closed_form_matches_a_direct_least_squares_solve():
    """AlphaEdit eq. 10 is the minimiser of ‖Δ K − R‖² + λ‖Δ‖² + ‖Δ K_p‖² over Δ = Z U₀ᵀ (updates in the null
    space, U₀ its orthonormal basis). Stacking the three terms as one least-squares problem in Z,
    Z [U₀ᵀK, √λ I, U₀ᵀK_p] ≈ [R, 0, 0], and solving it with torch.linalg.lstsq gives the same Δ."""
    d_k, d_v, n, n_p, lam = 10, 6, 3, 4, 0.7
    g = torch.Generator().manual_seed(1)
    cov, _, u0 = _cov_with_spectrum(d_k, 4, seed=1)
    p = null_space_projector(cov, threshold=1e-2)
    k = torch.randn(d_k, n, generator=g, dtype=torch.float64)
    k_p = torch.randn(d_k, n_p, generator=g, dtype=torch.float64)
    r = torch.randn(d_v, n, generator=g, dtype=torch.float64)

    closed = alphaedit_update(r, k, p, k_p @ k_p.T, l2=lam)

    r0 = u0.shape[1]
    a = torch.cat([u0.T @ k, lam ** 0.5 * torch.eye(r0, dtype=torch.float64), u0.T @ k_p], dim=1)  # (r0, n+r0+n_p)
    b = torch.cat([r, torch.zeros(d_v, r0 + n_p, dtype=torch.float64)], dim=1)  # (d_v, n+r0+n_p)
    z = torch.linalg.lstsq(a.T, b.T).solution.T  # Z a ≈ b  ⇔  aᵀ Zᵀ ≈ bᵀ
    assert torch.allclose(closed, z @ u0.T, atol=1e-10)


def test_keys_in_the_preserved_subspace_map_to_unchanged_outputs():
    """Δ k₀ = 0 (to float64 precision) for every key k₀ in the span of the preserved keys' large-eigenvalue
    directions, while the new keys do move toward their residuals."""
    cov, u_big, _ = _cov_with_spectrum(16, 9, seed=2)
    g = torch.Generator().manual_seed(2)
    p = null_space_projector(cov, threshold=1e-2)
    k = torch.randn(16, 2, generator=g, dtype=torch.float64)
    r = torch.randn(5, 2, generator=g, dtype=torch.float64)
    delta = alphaedit_update(r, k, p, None, l2=1e-3)
    k0 = u_big @ torch.randn(9, 7, generator=g, dtype=torch.float64)
    assert float((delta @ k0).abs().max()) < 1e-10
    assert torch.allclose(delta @ k, r, atol=1e-2)  # λ small: the residual is met on the new keys


def test_earlier_edits_keys_are_kept_by_the_preserved_term():
    """With K_p K_pᵀ of an earlier edit in the system, a new update leaves that edit's keys (nearly) where they
    were; without it the new update moves them."""
    g = torch.Generator().manual_seed(3)
    p = torch.eye(8, dtype=torch.float64)  # no preserved text: only the sequential term protects
    k_old = torch.randn(8, 2, generator=g, dtype=torch.float64) * 10
    k_new = k_old + torch.randn(8, 2, generator=g, dtype=torch.float64)  # a related new request
    r = torch.randn(4, 2, generator=g, dtype=torch.float64)
    free = alphaedit_update(r, k_new, p, None, l2=1e-3)
    kept = alphaedit_update(r, k_new, p, k_old @ k_old.T, l2=1e-3)
    assert float((kept @ k_old).norm()) < 0.05 * float((free @ k_old).norm())
