"""Golden tests for obliviate.methods.losses: every function against a number derived by hand in the docstring.

Conventions used throughout: logits are (B, T, V), labels (B, T) with -100 on prompt and padding positions; the
loss functions shift by one, so the logits at position t score the label at position t+1 and the last position
scores nothing. Specification: /work/shared/METHODS.md ("Baselines", "Pitfalls already known")."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.methods import losses as L

LN2, LN3 = math.log(2.0), math.log(3.0)
M = -100  # the label mask value


def _logits(*rows) -> torch.Tensor:
    """One sequence (1, T, V) from per-position logit rows."""
    return torch.tensor([list(rows)], dtype=torch.float32)


# The workhorse example, V = 2, T = 3:
#   position 0 logits [0, ln 3] -> softmax [1/4, 3/4] -> log-softmax [ln 1/4, ln 3/4]
#   position 1 logits [0, 0]    -> softmax [1/2, 1/2] -> log-softmax [ln 1/2, ln 1/2]
#   position 2 logits [5, -5]   -> scores nothing (there is no token 3)
# labels [-100, 1, 0]: position 0 scores label 1 (log 3/4), position 1 scores label 0 (log 1/2).
LOGITS = _logits([0.0, LN3], [0.0, 0.0], [5.0, -5.0])
LABELS = torch.tensor([[M, 1, 0]])


def _masked_batch(seed: int = 0):
    """B=2, T=6, V=3 random logits with prompts (-100) and right padding (-100); returns logits, labels and a
    (B, T) bool tensor marking the positions whose logits must NOT matter: those predicting a -100 label, and the
    last position (it predicts nothing)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, 3, generator=g)
    labels = torch.tensor([[M, M, 2, 0, 1, 1],    # prompt of 2, answer of 4
                           [M, M, M, 1, 2, M]])   # prompt of 3, answer of 2, one padding position
    irrelevant = torch.ones(2, 6, dtype=torch.bool)
    irrelevant[:, :-1] = labels[:, 1:] == M
    return logits, labels, irrelevant


def _perturb(logits: torch.Tensor, where: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Add huge random values (±1e4 scale) to the logits at the `where` positions only."""
    g = torch.Generator().manual_seed(seed)
    noise = 1e4 * torch.randn(logits.shape, generator=g)
    return logits + noise * where.unsqueeze(-1)


# ---------------------------------------------------------------------------------------------- shift / token level


def test_shift_aligns_position_t_with_label_t_plus_1():
    """shift drops the last logit row and the first label: logits[:, :T-1] pair with labels[:, 1:], and the
    mask is labels[:, 1:] != -100 (here [True, True])."""
    lg, lb, mask = L.shift(LOGITS, LABELS)
    assert lg.shape == (1, 2, 2) and lb.shape == (1, 2) and mask.shape == (1, 2)
    assert torch.equal(lg, LOGITS[:, :2])
    assert lb.tolist() == [[1, 0]]
    assert mask.tolist() == [[True, True]]


def test_token_logps_hand_values():
    """log-softmax of [0, ln 3] is [ln 1/4, ln 3/4]; label 1 -> ln 3/4 ≈ −0.2877.
    log-softmax of [0, 0] is [ln 1/2, ln 1/2]; label 0 -> ln 1/2 ≈ −0.6931."""
    lp, mask = L.token_logps(LOGITS, LABELS)
    assert lp[0].tolist() == pytest.approx([math.log(3 / 4), math.log(1 / 2)], abs=1e-6)
    assert mask.tolist() == [[True, True]]


def test_token_logps_is_zero_at_masked_positions():
    """labels [-100, -100, 1]: position 0 predicts a prompt token -> 0 (masked); position 1 scores label 1
    under [0, 0] -> ln 1/2."""
    lp, mask = L.token_logps(LOGITS, torch.tensor([[M, M, 1]]))
    assert mask.tolist() == [[False, True]]
    assert lp[0].tolist() == pytest.approx([0.0, -LN2], abs=1e-6)


def test_sequence_logps_is_a_sum_with_length():
    """Sum, not mean: ln 3/4 + ln 1/2 = ln 3/8 ≈ −0.9808; length = 2 answer tokens."""
    total, length = L.sequence_logps(LOGITS, LABELS)
    assert total.tolist() == pytest.approx([math.log(3 / 8)], abs=1e-6)
    assert length.tolist() == [2]


def test_nll_loss_hand_value():
    """NLL = −(ln 3/4 + ln 1/2)/2 = (ln 4/3 + ln 2)/2 = ln(8/3)/2 ≈ 0.4904."""
    assert float(L.nll_loss(LOGITS, LABELS)) == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)


def test_nll_loss_averages_over_all_answer_tokens_of_the_batch():
    """Token mean over the batch, not a mean of per-sequence means. Sequence A scores ln 3/4, ln 1/2 (2 tokens);
    sequence B = [[0,0],[0,0],pad] with labels [-100, 1, -100] scores one token, ln 1/2.
    Token mean: −(ln 3/4 + 2 ln 1/2)/3 = (ln 4/3 + 2 ln 2)/3 = ln(16/3)/3 ≈ 0.5580
    (the mean of means would be (ln(8/3)/2 + ln 2)/2 ≈ 0.5918)."""
    logits = torch.cat([LOGITS, _logits([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])])
    labels = torch.tensor([[M, 1, 0], [M, 1, M]])
    assert float(L.nll_loss(logits, labels)) == pytest.approx(math.log(16 / 3) / 3, abs=1e-6)


def test_nll_loss_matches_torch_cross_entropy_on_shifted_tokens():
    """An independent check: torch's cross_entropy(ignore_index=-100) on logits[:, :-1] vs labels[:, 1:]."""
    logits, labels, _ = _masked_batch()
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 3), labels[:, 1:].reshape(-1),
                                                 ignore_index=M)
    assert float(L.nll_loss(logits, labels)) == pytest.approx(float(expected), abs=1e-6)


def test_ga_loss_is_negative_nll():
    """Gradient ascent minimises −NLL: −ln(8/3)/2 ≈ −0.4904 on the workhorse example."""
    assert float(L.ga_loss(LOGITS, LABELS)) == pytest.approx(-math.log(8 / 3) / 2, abs=1e-6)


def test_masked_positions_do_not_change_any_token_level_value():
    """Prompt, padding and last-position logits perturbed by ~1e4 (policy and reference alike) leave every
    token-level quantity unchanged: answer-token log-probs, sums, lengths, NLL, GA, KL and cross-entropy."""
    logits, labels, irrelevant = _masked_batch()
    ref = _masked_batch(seed=5)[0]
    wild, wild_ref = _perturb(logits, irrelevant), _perturb(ref, irrelevant, seed=2)
    assert not torch.allclose(wild, logits)  # the perturbation is real

    lp, mask = L.token_logps(logits, labels)
    lp_w, mask_w = L.token_logps(wild, labels)
    assert torch.equal(mask, mask_w)
    assert torch.allclose(lp, lp_w, atol=1e-6, rtol=0)
    for fn in (L.sequence_logps,):
        for a, b in zip(fn(logits, labels), fn(wild, labels), strict=True):
            assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=0)
    for fn in (L.nll_loss, L.ga_loss):
        assert float(fn(wild, labels)) == pytest.approx(float(fn(logits, labels)), abs=1e-6)
    for fn in (L.kl_loss, L.cross_entropy_to):
        assert float(fn(wild_ref, wild, labels)) == pytest.approx(float(fn(ref, logits, labels)), abs=1e-6)


def test_masked_positions_with_minus_inf_logits_do_not_produce_nan():
    """A -inf logit (a model that hard-suppresses a token) at a prompt/padding position must not leak into the
    loss: masked positions contribute exactly 0."""
    logits, labels, irrelevant = _masked_batch()
    wild = logits.clone()
    wild[..., 0] = torch.where(irrelevant, torch.tensor(float("-inf")), wild[..., 0])
    assert float(L.nll_loss(wild, labels)) == pytest.approx(float(L.nll_loss(logits, labels)), abs=1e-6)


# ---------------------------------------------------------------------------------------------- KL / cross-entropy


def test_kl_of_a_distribution_with_itself_is_zero():
    """KL(p ‖ p) = Σ p (ln p − ln p) = 0 at every position, for any logits."""
    logits, labels, _ = _masked_batch()
    assert float(L.kl_loss(logits, logits.clone(), labels)) == pytest.approx(0.0, abs=1e-6)


def test_kl_hand_value_v2_and_its_direction():
    """p_ref = softmax([0, ln 3]) = [1/4, 3/4], p_θ = softmax([0, 0]) = [1/2, 1/2], one answer position:
    KL(p_ref ‖ p_θ) = 1/4·ln((1/4)/(1/2)) + 3/4·ln((3/4)/(1/2)) = −1/4·ln 2 + 3/4·ln(3/2) = 3/4·ln 3 − ln 2
    ≈ 0.1308. The reverse KL(p_θ ‖ p_ref) = 1/2·ln 2 + 1/2·ln(2/3) = 1/2·ln(4/3) ≈ 0.1438 differs, so this also
    pins the argument order (reference first)."""
    ref = _logits([0.0, LN3], [9.0, 9.0])
    cur = _logits([0.0, 0.0], [-9.0, 9.0])
    labels = torch.tensor([[M, 1]])
    assert float(L.kl_loss(ref, cur, labels)) == pytest.approx(0.75 * LN3 - LN2, abs=1e-6)
    assert float(L.kl_loss(cur, ref, labels)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_cross_entropy_to_hand_value_v2():
    """Same p_ref = [1/4, 3/4], p_θ = [1/2, 1/2]: −Σ p_ref ln p_θ = −(1/4 + 3/4)·ln(1/2) = ln 2 ≈ 0.6931.
    Entropy of p_ref: H = −(1/4 ln 1/4 + 3/4 ln 3/4) = 2 ln 2 − 3/4 ln 3 ≈ 0.5623; KL + H = (3/4 ln 3 − ln 2)
    + (2 ln 2 − 3/4 ln 3) = ln 2 ✓."""
    ref = _logits([0.0, LN3], [1.0, 2.0])
    cur = _logits([0.0, 0.0], [3.0, 4.0])
    labels = torch.tensor([[M, 0]])
    assert float(L.cross_entropy_to(ref, cur, labels)) == pytest.approx(LN2, abs=1e-6)


def test_cross_entropy_to_equals_kl_plus_reference_entropy():
    """CE(p_ref, p_θ) = KL(p_ref ‖ p_θ) + H(p_ref), both averaged over the same answer positions; the entropy is
    computed here independently from softmax probabilities."""
    logits, labels, _ = _masked_batch(seed=3)
    ref = _masked_batch(seed=4)[0]
    p = torch.softmax(ref[:, :-1], -1)
    ent = -(p * p.log()).sum(-1)  # (B, T-1)
    mask = labels[:, 1:] != M
    h = float(ent[mask].mean())
    ce = float(L.cross_entropy_to(ref, logits, labels))
    kl = float(L.kl_loss(ref, logits, labels))
    assert ce == pytest.approx(kl + h, abs=1e-5)
    assert kl > 0  # different distributions


# ---------------------------------------------------------------------------------------------- NPO


@pytest.mark.parametrize("beta", [0.1, 1.0, 4.5])
def test_npo_at_reference_is_two_over_beta_log_2(beta):
    """π_θ = π_ref ⇒ −(2/β)·ln σ(0) = −(2/β)·ln(1/2) = (2/β)·ln 2 (13.86 at β = 0.1)."""
    logps = torch.tensor([-3.0, -7.5])
    assert float(L.npo_loss(logps, logps.clone(), beta)) == pytest.approx(2 / beta * LN2, rel=1e-6)


def test_npo_hand_value_off_reference():
    """β = 1, items with log π_θ − log π_ref = 0 and = ln 3:
    item 1: −2·ln σ(0) = 2 ln 2; item 2: σ(−ln 3) = 1/(1+3) = 1/4 -> −2·ln(1/4) = 4 ln 2; mean = 3 ln 2 ≈ 2.0794."""
    policy = torch.tensor([-5.0, -5.0 + LN3])
    ref = torch.tensor([-5.0, -5.0])
    assert float(L.npo_loss(policy, ref, 1.0)) == pytest.approx(3 * LN2, abs=1e-6)


def test_npo_gradient_pushes_policy_likelihood_down():
    """d/dx[−(2/β) ln σ(−βx)] = 2σ(βx), averaged over N items: at x = 0 each item's gradient is 2·(1/2)/N = 1/N
    (> 0, so LOWERING the policy log-prob lowers the loss); at x = ln 3 with β = 1 it is 2·(3/4)/N = 1.5/N."""
    policy = torch.tensor([-4.0, -4.0 + LN3], requires_grad=True)
    ref = torch.tensor([-4.0, -4.0])
    L.npo_loss(policy, ref, 1.0).backward()
    assert policy.grad.tolist() == pytest.approx([0.5, 0.75], abs=1e-6)
    lower = L.npo_loss(policy.detach() - 1.0, ref, 1.0)
    assert float(lower) < float(L.npo_loss(policy.detach(), ref, 1.0))


def test_npo_is_bounded_below_by_zero():
    """As log π_θ → −∞, σ(−β(x)) → 1 and the loss → 0 from above (unlike GA's unbounded −NLL)."""
    assert 0.0 <= float(L.npo_loss(torch.tensor([-1e4]), torch.tensor([0.0]), 0.1)) < 1e-6


# ---------------------------------------------------------------------------------------------- SimNPO


def test_simnpo_hand_value_is_length_normalised():
    """β = 1, δ = 0. Both items have sum log-prob −2 ln 3 (no reference involved):
    item A, length 2: L̄ = ln 3, σ(ln 3) = 3/4 -> −2 ln(3/4) = 2 ln(4/3);
    item B, length 1: L̄ = 2 ln 3, σ(2 ln 3) = 9/10 -> −2 ln(9/10) = 2 ln(10/9);
    mean = ln(4/3) + ln(10/9) = ln(40/27) ≈ 0.3930."""
    logps = torch.tensor([-2 * LN3, -2 * LN3])
    lengths = torch.tensor([2, 1])
    assert float(L.simnpo_loss(logps, lengths, beta=1.0)) == pytest.approx(math.log(40 / 27), abs=1e-6)


def test_simnpo_beta_and_delta():
    """β = 2, δ = ln 3, one item with L̄ = 2 ln 3 (sum −4 ln 3 over 2 tokens): β(L̄ − δ) = 2 ln 3,
    σ(2 ln 3) = 9/10 -> −(2/2)·ln(9/10) = ln(10/9) ≈ 0.1054."""
    val = L.simnpo_loss(torch.tensor([-4 * LN3]), torch.tensor([2]), beta=2.0, delta=LN3)
    assert float(val) == pytest.approx(math.log(10 / 9), abs=1e-6)


def test_simnpo_gradient_pushes_likelihood_down():
    """Raising the mean NLL raises σ(β L̄), so the loss falls: the gradient w.r.t. the sum log-prob is positive."""
    logps = torch.tensor([-1.0, -6.0], requires_grad=True)
    L.simnpo_loss(logps, torch.tensor([2, 3]), beta=4.5).backward()
    assert (logps.grad > 0).all()
    # By hand: loss = −(2/β)·mean_i ln σ(β·L̄_i), L̄_i = −logp_i/len_i, so ∂/∂logp_i = (2/N)·σ(−β·L̄_i)/len_i:
    # L̄ = (0.5, 2): (σ(−2.25)/2, σ(−9)/3) = (0.047675, 4.1132e-5).
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert logps.grad.tolist() == pytest.approx([sig(-2.25) / 2, sig(-9.0) / 3], rel=1e-5)
    assert logps.grad.tolist() == pytest.approx([0.047675, 4.1132e-5], rel=1e-4)


# ---------------------------------------------------------------------------------------------- DPO


def test_dpo_hand_value():
    """chosen/ref_chosen = (ln 3 − 5) / −5 (+ln 3), rejected/ref_rejected = −7 / −7 (0): margin = ln 3.
    β = 1: −(2/1)·ln σ(ln 3) = −2 ln(3/4) = 2 ln(4/3) ≈ 0.5754.
    β = 0.5 with margin 2 ln 3: β·margin = ln 3 again -> −(2/0.5)·ln(3/4) = 4 ln(4/3) ≈ 1.1507."""
    t = torch.tensor
    assert float(L.dpo_loss(t([LN3 - 5.0]), t([-7.0]), t([-5.0]), t([-7.0]), 1.0)) == pytest.approx(
        2 * math.log(4 / 3), abs=1e-6)
    assert float(L.dpo_loss(t([2 * LN3 - 5.0]), t([-7.0]), t([-5.0]), t([-7.0]), 0.5)) == pytest.approx(
        4 * math.log(4 / 3), abs=1e-6)


def test_dpo_at_reference_and_gradient_signs():
    """At π_θ = π_ref the margin is 0 -> (2/β) ln 2; raising the chosen log-prob lowers the loss (negative
    gradient), raising the rejected one raises it: ∂/∂chosen = −2σ(−β·margin)/N = −1 at margin 0, N = 1."""
    chosen, rejected = torch.tensor([-3.0], requires_grad=True), torch.tensor([-4.0], requires_grad=True)
    loss = L.dpo_loss(chosen, rejected, torch.tensor([-3.0]), torch.tensor([-4.0]), 0.1)
    assert float(loss) == pytest.approx(20 * LN2, rel=1e-6)
    loss.backward()
    assert float(chosen.grad) == pytest.approx(-1.0, abs=1e-6)
    assert float(rejected.grad) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- RMU


def test_rmu_loss_hand_values_on_2d_hidden_states():
    """Forget: h = [[1, 2], [3, 4]] (T = 2, d = 2), control c·u = [1, 0], mask [T, F] -> only position 0:
    ((1−1)² + (2−0)²) / (1 position · 2 units) = 4/2 = 2.
    Retain: h = [[0, 0], [5, 5]], h₀ = [[1, 1], [0, 0]], both positions -> (1 + 1 + 25 + 25) / (2 · 2) = 13.
    Both terms come back unweighted (α is applied by the method)."""
    f, r = L.rmu_loss(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), torch.tensor([1.0, 0.0]),
                      torch.tensor([[True, False]]),
                      torch.tensor([[[0.0, 0.0], [5.0, 5.0]]]), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]),
                      torch.tensor([[True, True]]))
    assert float(f) == pytest.approx(2.0, abs=1e-6)
    assert float(r) == pytest.approx(13.0, abs=1e-6)


def test_rmu_loss_ignores_masked_positions():
    """Masked positions (prompt/padding) can hold anything: the forget term of the example above stays 2 and the
    retain term, with its second position masked, is (1 + 1)/(1·2) = 1, whatever sits at masked positions."""
    control = torch.tensor([1.0, 0.0])
    for junk in (0.0, 1e4, -3e5):
        f, r = L.rmu_loss(torch.tensor([[[1.0, 2.0], [junk, junk]]]), control, torch.tensor([[True, False]]),
                          torch.tensor([[[0.0, 0.0], [junk, 5.0]]]), torch.tensor([[[1.0, 1.0], [0.0, -junk]]]),
                          torch.tensor([[True, False]]))
        assert float(f) == pytest.approx(2.0, abs=1e-6)
        assert float(r) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- RKLD
# (functions added to losses.py for RKLD, METHODS.md §1; hand values in the same style)


def test_rkld_teacher_lowers_only_the_logits_that_rose():
    """l_o = [1, 2, 3], l_aug = [2, 1, 3], α = 8: ReLU(l_aug − l_o) = ReLU([1, −1, 0]) = [1, 0, 0], so
    l_t = [1 − 8·1, 2, 3] = [−7, 2, 3]: only token 0, whose logit rose under augmentation, is pushed down."""
    t = L.rkld_teacher_logits(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 1.0, 3.0]]), 8.0)
    assert t[0].tolist() == pytest.approx([-7.0, 2.0, 3.0], abs=1e-6)


def test_kl_divergence_reverse_and_forward_hand_values():
    """Student softmax([0, 0]) = [1/2, 1/2], teacher softmax([0, ln 3]) = [1/4, 3/4]:
    reverse KL(s ‖ t) = 1/2·ln((1/2)/(1/4)) + 1/2·ln((1/2)/(3/4)) = 1/2·ln 2 + 1/2·ln(2/3) = 1/2·ln(4/3) ≈ 0.1438;
    forward KL(t ‖ s) = 3/4·ln 3 − ln 2 ≈ 0.1308 (as in test_kl_hand_value_v2_and_its_direction).
    A second, masked position holding anything does not count."""
    student = torch.tensor([[[0.0, 0.0], [1e4, -1e4]]])
    teacher = torch.tensor([[[0.0, LN3], [-1e4, 1e4]]])
    mask = torch.tensor([[True, False]])
    assert float(L.kl_divergence(student, teacher, mask, reverse=True)) == pytest.approx(0.5 * math.log(4 / 3),
                                                                                          abs=1e-6)
    assert float(L.kl_divergence(student, teacher, mask, reverse=False)) == pytest.approx(0.75 * LN3 - LN2, abs=1e-6)


def test_topk_teacher_keeps_top_k_and_the_tail_mass():
    """Teacher logits ln[1, 3, 4] -> probs [1/8, 3/8, 1/2]. k = 2 keeps log-probs [ln 1/2, ln 3/8] at indices
    [2, 1] and the rest of the mass as one bucket: ln(1 − 1/2 − 3/8) = ln(1/8)."""
    vals, idx, tail = L.topk_teacher(torch.log(torch.tensor([[1.0, 3.0, 4.0]])), 2)
    assert idx[0].tolist() == [2, 1]
    assert vals[0].tolist() == pytest.approx([math.log(1 / 2), math.log(3 / 8)], abs=1e-6)
    assert tail.tolist() == pytest.approx([math.log(1 / 8)], abs=1e-5)


def test_kl_divergence_topk_hand_value_is_the_kl_of_the_coarsened_distributions():
    """Teacher [1/2, 1/4, 3/16, 1/16], k = 2 -> kept {0: 1/2, 1: 1/4} + tail 1/4. Student uniform [1/4]*4 ->
    kept [1/4, 1/4] + tail 1/2. Reverse KL of the coarsened pair: 1/4·ln((1/4)/(1/2)) + 1/4·ln 1 +
    1/2·ln((1/2)/(1/4)) = −1/4·ln 2 + 1/2·ln 2 = 1/4·ln 2 ≈ 0.1733; forward: 1/2·ln 2 + 0 + 1/4·ln(1/2) = 1/4·ln 2.
    The full reverse KL is 1/4·(ln(1/2) + 0 + ln(4/3) + ln 4) = 1/4·ln(8/3) ≈ 0.2452 ≥ 0.1733 (a lower bound)."""
    teacher = torch.log(torch.tensor([[1 / 2, 1 / 4, 3 / 16, 1 / 16]]))
    student = torch.zeros(1, 4)
    top, idx, tail = L.topk_teacher(teacher, 2)
    rev = float(L.kl_divergence_topk(student, top, idx, tail, reverse=True))
    fwd = float(L.kl_divergence_topk(student, top, idx, tail, reverse=False))
    assert rev == pytest.approx(0.25 * LN2, abs=1e-5)
    assert fwd == pytest.approx(0.25 * LN2, abs=1e-5)
    full = float(L.kl_divergence(student, teacher, torch.tensor([True]), reverse=True))
    assert full == pytest.approx(0.25 * math.log(8 / 3), abs=1e-6)
    assert rev <= full


def test_kl_divergence_topk_is_exact_when_k_covers_the_vocabulary():
    """k = V keeps every token (the tail bucket is empty up to the 1e-7 clamp), so it equals kl_divergence, row
    mean over N = 3 random rows, both directions."""
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, generator=g), 3 * torch.randn(3, 5, generator=g)
    top, idx, tail = L.topk_teacher(teacher, 5)
    mask = torch.ones(3, dtype=torch.bool)
    for reverse in (True, False):
        exact = float(L.kl_divergence(student, teacher, mask, reverse=reverse))
        assert float(L.kl_divergence_topk(student, top, idx, tail, reverse=reverse)) == pytest.approx(exact,
                                                                                                     abs=1e-5)


# ---------------------------------------------------------------------------------------------- WGA / SatImp
# (token-weighted gradient ascent; on the workhorse example p = [3/4, 1/2] at the two answer tokens)


def test_wga_hand_values():
    """w_t = p_t^β. β = 1: w = [3/4, 1/2], loss = −(3/4·ln(4/3) + 1/2·ln 2)/2 ≈ −0.2812.
    β = 2: w = [9/16, 1/4], loss = −(9/16·ln(4/3) + 1/4·ln 2)/2 ≈ −0.1676. β = 0 is plain GA, −ln(8/3)/2."""
    assert float(L.wga_loss(LOGITS, LABELS, 1.0)) == pytest.approx(-(0.75 * math.log(4 / 3) + 0.5 * LN2) / 2,
                                                                    abs=1e-6)
    assert float(L.wga_loss(LOGITS, LABELS, 2.0)) == pytest.approx(-(9 / 16 * math.log(4 / 3) + 0.25 * LN2) / 2,
                                                                    abs=1e-6)
    assert float(L.wga_loss(LOGITS, LABELS, 0.0)) == pytest.approx(float(L.ga_loss(LOGITS, LABELS)), abs=1e-6)


def test_wga_weights_are_detached():
    """With sg(w) the gradient is the weighted GA gradient: ∂loss/∂z_t = (w_t/N)·(onehot(y_t) − p_t), N = 2.
    Position 0: (3/4)/2 · ([0, 1] − [1/4, 3/4]) = 3/8·[−1/4, 1/4] = [−3/32, 3/32];
    position 1: (1/2)/2 · ([1, 0] − [1/2, 1/2]) = 1/4·[1/2, −1/2] = [1/8, −1/8]; position 2 scores nothing: 0.
    (Without the stop-gradient a w·∂w/∂z·log p term would be added.)"""
    logits = LOGITS.clone().requires_grad_(True)
    L.wga_loss(logits, LABELS, 1.0).backward()
    assert logits.grad[0].tolist() == [pytest.approx([-3 / 32, 3 / 32], abs=1e-6),
                                       pytest.approx([1 / 8, -1 / 8], abs=1e-6), pytest.approx([0.0, 0.0], abs=1e-9)]


def test_satimp_hand_values():
    """w_t = p_t^β1 · (1 − p_t)^β2. β1 = β2 = 1: w = [3/4·1/4, 1/2·1/2] = [3/16, 1/4],
    loss = −(3/16·ln(4/3) + 1/4·ln 2)/2 ≈ −0.1136. β2 = 0 leaves p^β1, i.e. WGA with β = β1."""
    assert float(L.satimp_loss(LOGITS, LABELS, 1.0, 1.0)) == pytest.approx(
        -(3 / 16 * math.log(4 / 3) + 0.25 * LN2) / 2, abs=1e-6)
    assert float(L.satimp_loss(LOGITS, LABELS, 5.0, 0.0)) == pytest.approx(float(L.wga_loss(LOGITS, LABELS, 5.0)),
                                                                          abs=1e-7)


def test_satimp_gives_no_weight_to_a_certain_token():
    """A token with p = 1 (logits [0, 1e4], label 1) has importance weight (1 − 1)^β2 = 0, so it adds nothing:
    the loss is the other token's alone, −(1/2·1/2·ln 2)/2 (N still counts both answer tokens) ≈ −0.0866."""
    logits = _logits([0.0, 1e4], [0.0, 0.0], [0.0, 0.0])
    assert float(L.satimp_loss(logits, LABELS, 1.0, 1.0)) == pytest.approx(-0.25 * LN2 / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------- UNDIAL


def test_undial_teacher_lowers_only_the_true_token():
    """z = [1, 2, 3], true token 2, β = 2: z' = [1, 2, 3 − 2] = [1, 2, 1]; the other logits are untouched."""
    t = L.undial_teacher_logits(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([2]), 2.0)
    assert t[0].tolist() == pytest.approx([1.0, 2.0, 1.0], abs=1e-6)


def test_undial_loss_hand_value():
    """Reference logits [0, ln 3] (label 1) and [ln 3, 0] (label 0), β = ln 3: both adjusted teachers are [0, 0],
    i.e. [1/2, 1/2]. Student = the workhorse: position 0 log p = [ln 1/4, ln 3/4] ->
    CE = −(1/2·ln 1/4 + 1/2·ln 3/4) = 1/2·ln(16/3); position 1 log p = [ln 1/2, ln 1/2] -> CE = ln 2.
    Mean = (1/2·ln(16/3) + ln 2)/2 = ln(64/3)/4 ≈ 0.7651. With β = 0 the teacher is θ₀ itself: cross_entropy_to."""
    ref = _logits([0.0, LN3], [LN3, 0.0], [7.0, -7.0])
    assert float(L.undial_loss(ref, LOGITS, LABELS, LN3)) == pytest.approx(math.log(64 / 3) / 4, abs=1e-6)
    assert float(L.undial_loss(ref, LOGITS, LABELS, 0.0)) == pytest.approx(float(L.cross_entropy_to(ref, LOGITS,
                                                                                                    LABELS)), abs=1e-6)


# ---------------------------------------------------------------------------------------------- CE-U


def test_drop_first_answer_tokens():
    """The first answer token of each row (the first non -100 label) becomes -100; prompt and padding stay."""
    labels = torch.tensor([[M, M, 5, 6, 7], [M, 4, 5, M, M]])
    assert L.drop_first_answer_tokens(labels, 1).tolist() == [[M, M, M, 6, 7], [M, M, 5, M, M]]
    assert torch.equal(L.drop_first_answer_tokens(labels, 0), labels)


def test_ceu_hand_values():
    """V = 3, labels [-100, 2, 0]. Position 0: z = [0, 0, ln 2], p = [1/4, 1/4, 1/2], target (z_2 = −∞) q =
    [1/2, 1/2, 0] -> CE = −(1/2·ln 1/4 + 1/2·ln 1/4) = ln 4. Position 1: z = [ln 3, 0, 0], p = [3/5, 1/5, 1/5],
    q = [0, 1/2, 1/2] -> CE = −ln(1/5) = ln 5.
    ignore_first 0: (ln 4 + ln 5)/2 = ln(20)/2 ≈ 1.4979; ignore_first 1 (the first answer token skipped): ln 5 ≈
    1.6094; ignore_first 2: no token left -> 0."""
    logits = _logits([0.0, 0.0, LN2], [LN3, 0.0, 0.0], [0.0, 0.0, 0.0])
    labels = torch.tensor([[M, 2, 0]])
    assert float(L.ceu_loss(logits, labels, 0)) == pytest.approx(math.log(20) / 2, abs=1e-6)
    assert float(L.ceu_loss(logits, labels, 1)) == pytest.approx(math.log(5), abs=1e-6)
    assert float(L.ceu_loss(logits, labels, 2)) == pytest.approx(0.0, abs=1e-9)


def test_ceu_gradient_is_p_minus_q_with_a_detached_target():
    """One scored position, z = [0, 0, ln 2], label 2: ∂CE/∂z = p − q = [1/4, 1/4, 1/2] − [1/2, 1/2, 0] =
    [−1/4, −1/4, 1/2] — the target does not move with z (it is built from detached logits)."""
    logits = _logits([0.0, 0.0, LN2], [9.0, 9.0, 9.0]).requires_grad_(True)
    L.ceu_loss(logits, torch.tensor([[M, 2]])).backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([-0.25, -0.25, 0.5], abs=1e-6)


# ---------------------------------------------------------------------------------------------- PDU


def test_logit_margin_loss_hand_value():
    """(max z − mean z)²: position 0 [0, ln 3] -> (ln 3 − ln 3/2)² = (ln 3)²/4; position 1 [0, 0] -> 0;
    mean over the 2 answer tokens = (ln 3)²/8 ≈ 0.1509. Flat logits give exactly 0."""
    assert float(L.logit_margin_loss(LOGITS, LABELS)) == pytest.approx(LN3 ** 2 / 8, abs=1e-6)
    assert float(L.logit_margin_loss(torch.full((1, 3, 4), 2.5), LABELS)) == pytest.approx(0.0, abs=1e-9)


def test_dual_ascent_hand_values():
    """λ ← max(0, λ + η·(L_r − ε)) with λ = 1, η = 5, ε = 0.3: L_r = 0.5 -> 1 + 5·0.2 = 2; L_r = 0.1 ->
    1 + 5·(−0.2) = 0; L_r = 0.05 -> 1 − 1.25 < 0 -> projected to 0."""
    assert L.dual_ascent(1.0, 0.5, 0.3, 5.0) == pytest.approx(2.0, abs=1e-12)
    assert L.dual_ascent(1.0, 0.1, 0.3, 5.0) == pytest.approx(0.0, abs=1e-12)
    assert L.dual_ascent(1.0, 0.05, 0.3, 5.0) == 0.0


# ---------------------------------------------------------------------------------------------- AltPO


def test_altpo_hand_value_averages_over_alternatives():
    """β = 1, one item, K = 2 alternatives with policy−reference log-ratios 0 and ln 3, the true answer at its
    reference (ratio 0): margins 0 and ln 3, σ = 1/2 and 3/4. Loss = −(2/β)·(1/2)(ln 1/2 + ln 3/4) =
    ln 2 + ln(4/3) = ln(8/3) ≈ 0.9808. With K = 1 it is dpo_loss exactly."""
    t = torch.tensor
    chosen, ref_chosen = t([[-5.0], [-5.0 + LN3]]), t([[-5.0], [-5.0]])
    assert float(L.altpo_loss(chosen, t([-7.0]), ref_chosen, t([-7.0]), 1.0)) == pytest.approx(math.log(8 / 3),
                                                                                              abs=1e-6)
    one = L.altpo_loss(chosen[1:], t([-7.0]), ref_chosen[1:], t([-7.0]), 0.1)
    assert float(one) == pytest.approx(float(L.dpo_loss(chosen[1], t([-7.0]), ref_chosen[1], t([-7.0]), 0.1)),
                                       abs=1e-6)


def test_new_token_losses_ignore_masked_positions():
    """Prompt, padding and last-position logits perturbed by ~1e4 leave WGA, SatImp, UNDIAL, CE-U and the PDU
    margin unchanged (only answer positions count)."""
    logits, labels, irrelevant = _masked_batch()
    ref = _masked_batch(seed=5)[0]
    wild, wild_ref = _perturb(logits, irrelevant), _perturb(ref, irrelevant, seed=2)
    pairs = [(lambda lg, rf: L.wga_loss(lg, labels, 1.0)), (lambda lg, rf: L.satimp_loss(lg, labels, 5.0, 1.0)),
             (lambda lg, rf: L.undial_loss(rf, lg, labels, 10.0)), (lambda lg, rf: L.ceu_loss(lg, labels, 0)),
             (lambda lg, rf: L.ceu_loss(lg, labels, 1)), (lambda lg, rf: L.logit_margin_loss(lg, labels))]
    for fn in pairs:
        assert float(fn(wild, wild_ref)) == pytest.approx(float(fn(logits, ref)), abs=1e-5)


# ---------------------------------------------------------------------------------------------- step denominators


def test_denominator_replaces_the_token_count():
    """With `denom` the engine's step denominator divides the sum instead of this batch's own token count:
    nll_loss on the workhorse example sums −(ln ¾ + ln ½) = ln(8/3) over 2 tokens; denom 4 gives ln(8/3)/4 = 0.245207
    (without it ln(8/3)/2)."""
    assert float(L.nll_loss(LOGITS, LABELS, denom=4)) == pytest.approx(math.log(8 / 3) / 4, abs=1e-6)
    assert float(L.nll_loss(LOGITS, LABELS, denom=4)) == pytest.approx(0.245207, abs=1e-6)
    assert float(L.nll_loss(LOGITS, LABELS)) == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)


_REF = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(7))  # a frozen model's logits
TOKEN_MEAN_LOSSES = {  # (logits, labels, reference logits, denom) -> loss
    "nll": lambda lg, lb, ref, d: L.nll_loss(lg, lb, d),
    "kl": lambda lg, lb, ref, d: L.kl_loss(ref, lg, lb, d),
    "cross_entropy_to": lambda lg, lb, ref, d: L.cross_entropy_to(ref, lg, lb, d),
    "wga": lambda lg, lb, ref, d: L.wga_loss(lg, lb, 1.5, d),
    "satimp": lambda lg, lb, ref, d: L.satimp_loss(lg, lb, 5.0, 1.0, d),
    "undial": lambda lg, lb, ref, d: L.undial_loss(ref, lg, lb, 3.0, d),
    "ceu": lambda lg, lb, ref, d: L.ceu_loss(lg, lb, 0, d),
    "logit_margin": lambda lg, lb, ref, d: L.logit_margin_loss(lg, lb, d),
}


@pytest.mark.parametrize("name", sorted(TOKEN_MEAN_LOSSES))
def test_micro_batches_with_the_step_denominator_average_to_the_full_batch(name):
    """Exact gradient accumulation (and the all-reduced token count under DDP/FSDP): the batch of 2 rows (4 + 2
    answer tokens) split into k = 2 micro-batches of one row, each with denom = 6 / k = 3, which the engine
    averages: (Σ₀/3 + Σ₁/3)/2 = (Σ₀ + Σ₁)/6, the full batch's token mean; the rows' own means averaged would not
    be (row 2's tokens would weigh double)."""
    fn = TOKEN_MEAN_LOSSES[name]
    logits, labels, _ = _masked_batch()
    full = float(fn(logits, labels, _REF, None))
    rows = [slice(r, r + 1) for r in (0, 1)]
    parts = [float(fn(logits[r], labels[r], _REF[r], 3.0)) for r in rows]
    assert sum(parts) / 2 == pytest.approx(full, rel=1e-6)
    own = [float(fn(logits[r], labels[r], _REF[r], None)) for r in rows]
    assert sum(own) / 2 != pytest.approx(full, rel=1e-3)
