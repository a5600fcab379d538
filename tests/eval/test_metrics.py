"""Golden tests for obliviate.eval.metrics.

Every expected value is derived by hand in the test's docstring (or computed by an independent brute-force
routine written here), never by calling the function under test or re-using its formula.
Specification: /work/shared/METHODS.md, sections "Metrics" and "Pitfalls already known".
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from obliviate.eval import metrics as M

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------- helpers
# Independent reference implementations (brute force, deliberately naive).


def _ecdf(sample, x):
    return sum(v <= x for v in sample) / len(sample)


def _ks_statistic_brute(a, b):
    """sup_x |F_a(x) − F_b(x)|; the sup is attained at one of the pooled sample points."""
    return max(abs(_ecdf(a, x) - _ecdf(b, x)) for x in list(a) + list(b))


def _ks_pvalue_exact_brute(a, b):
    """Exact two-sided permutation p-value: share of all C(n+m, n) relabelings of the pooled sample whose KS
    statistic is >= the observed one (equals the exact KS null distribution when there are no ties)."""
    pooled = list(a) + list(b)
    d_obs = _ks_statistic_brute(a, b)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(a)):
        s = set(idx)
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in s]
        total += 1
        hits += _ks_statistic_brute(x, y) >= d_obs - 1e-12
    return hits / total


def _auc_brute(members, nonmembers):
    """P(score_member > score_nonmember) over all pairs, ties count 1/2."""
    wins = 0.0
    for m in members:
        for h in nonmembers:
            wins += 1.0 if m > h else 0.5 if m == h else 0.0
    return wins / (len(members) * len(nonmembers))


def _lcs_len(a, b):
    """Textbook O(len(a)·len(b)) longest-common-subsequence DP."""
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


# ---------------------------------------------------------------------------------------------- mean NLL / probability


def test_mean_nll_hand_example():
    """log-probs [-1, -2, -3]: L̄ = −(−1 − 2 − 3)/3 = 6/3 = 2."""
    assert M.mean_nll(np.array([-1.0, -2.0, -3.0])) == pytest.approx(2.0)


def test_probability_is_geometric_mean_of_token_probs():
    """Token probs 1/2 and 1/8: L̄ = (ln 2 + 3 ln 2)/2 = 2 ln 2, P = exp(−2 ln 2) = 1/4
    = sqrt(1/2 · 1/8) = sqrt(1/16), the geometric mean (length-normalised, not the product 1/16)."""
    logps = np.log(np.array([0.5, 0.125]))
    assert M.probability(logps) == pytest.approx(0.25)
    assert M.probability(logps) != pytest.approx(0.5 * 0.125)


def test_normalized_probability_length_normalised():
    """Correct answer: 2 tokens of p=1/2 → P = 1/2. Wrong 1: 3 tokens of p=1/4 → P = 1/4 (NOT 1/64, the
    sequence product). Wrong 2: 1 token of p=1/4 → P = 1/4. Ratio = 0.5 / (0.5 + 0.25 + 0.25) = 0.5."""
    correct = np.log(np.full(2, 0.5))
    wrong = [np.log(np.full(3, 0.25)), np.log(np.full(1, 0.25))]
    assert M.normalized_probability(correct, wrong) == pytest.approx(0.5)


def test_normalized_probability_second_example():
    """P(correct) = exp(−1) (log-probs [−0.5, −1.5]); one wrong answer with P = exp(−1) too
    (log-probs [−1, −1, −1]): ratio = e⁻¹/(e⁻¹ + e⁻¹) = 1/2. With a much less likely wrong answer
    P = exp(−5): e⁻¹/(e⁻¹ + e⁻⁵) = 1/(1 + e⁻⁴) ≈ 0.98201."""
    correct = np.array([-0.5, -1.5])
    assert M.normalized_probability(correct, [np.array([-1.0, -1.0, -1.0])]) == pytest.approx(0.5)
    assert M.normalized_probability(correct, [np.array([-5.0, -5.0])]) == pytest.approx(1 / (1 + math.exp(-4)))


def test_normalized_probability_no_wrong_answers_is_one():
    """With no alternatives: P/(P + 0) = 1."""
    assert M.normalized_probability(np.array([-2.0, -0.3]), []) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- truth ratio


def test_truth_ratio_hand_example():
    """Paraphrase log-probs [−1, −1] → L̄_para = 1, P(para)^(1/len) = e⁻¹.
    Perturbed 1: [−1, −3, −2, −2] (4 tokens) → L̄ = 8/4 = 2 → e⁻²;
    perturbed 2: [−3, −3] (2 tokens) → L̄ = 3 → e⁻³.
    GeoMean(e⁻², e⁻³) = sqrt(e⁻⁵) = e^(−2.5); TR = e^(−2.5) / e⁻¹ = e^(−1.5) ≈ 0.22313."""
    para = np.array([-1.0, -1.0])
    pert = [np.array([-1.0, -3.0, -2.0, -2.0]), np.array([-3.0, -3.0])]
    tr = M.truth_ratio(para, pert)
    assert tr == pytest.approx(math.exp(-1.5))
    # independent: geometric mean of the length-normalised probabilities, divided by the paraphrase's
    p_pert = [np.prod(np.exp(x)) ** (1 / len(x)) for x in pert]
    p_para = np.prod(np.exp(para)) ** (1 / len(para))
    assert tr == pytest.approx(math.sqrt(p_pert[0] * p_pert[1]) / p_para)


def test_truth_ratio_equal_likelihoods_is_one():
    """Perturbed answers exactly as likely (per token) as the paraphrase: TR = e^(−1)/e^(−1) = 1."""
    para = np.array([-0.5, -1.5])  # L̄ = 1
    pert = [np.array([-1.0]), np.array([-2.0, 0.0, -1.0])]  # L̄ = 1 and 1
    assert M.truth_ratio(para, pert) == pytest.approx(1.0)


def test_truth_ratio_closer_to_one_hand_example():
    """TRs [0.5, 2, 1, 0.25] → min(TR, 1/TR) = [0.5, 0.5, 1, 0.25]; mean = 2.25/4 = 0.5625."""
    assert M.truth_ratio_closer_to_one([0.5, 2.0, 1.0, 0.25]) == pytest.approx(0.5625)


def test_truth_ratio_true_better_hand_example():
    """TRs [0.5, 2, 1, 0.25] → max(0, 1 − TR) = [0.5, 0, 0, 0.75]; mean = 1.25/4 = 0.3125."""
    assert M.truth_ratio_true_better([0.5, 2.0, 1.0, 0.25]) == pytest.approx(0.3125)


# ---------------------------------------------------------------------------------------------- forget quality (KS)


def test_forget_quality_disjoint_samples_exact_pvalue():
    """Model TRs [0.1, 0.2, 0.3] all below reference TRs [0.7, 0.8, 0.9]: D = 1 (at x=0.3, F_model = 1 and
    F_ref = 0). Exact two-sided p = P(D >= 1) under H0: only the 2 orderings 'all of one sample first' out of
    C(6,3) = 20 equally likely interleavings give D = 1, so p = 2/20 = 0.1."""
    model, ref = [0.1, 0.2, 0.3], [0.7, 0.8, 0.9]
    assert _ks_statistic_brute(model, ref) == pytest.approx(1.0)
    assert _ks_pvalue_exact_brute(model, ref) == pytest.approx(0.1)
    assert M.forget_quality(model, ref) == pytest.approx(0.1)
    assert M.forget_quality(ref, model) == pytest.approx(0.1)  # symmetric


def test_forget_quality_overlapping_samples_matches_brute_force():
    """Model [0.1, 0.4, 0.5, 0.9], reference [0.2, 0.3, 0.6]. ECDF differences at the pooled points:
    0.1: |1/4 − 0| = 3/12; 0.2: |1/4 − 1/3| = 1/12; 0.3: |1/4 − 2/3| = 5/12; 0.4: |1/2 − 2/3| = 2/12;
    0.5: |3/4 − 2/3| = 1/12; 0.6: |3/4 − 1| = 3/12; 0.9: 0  →  D = 5/12.
    p-value checked against the exact permutation count over all C(7,3) = 35 relabelings (31 of them reach
    D >= 5/12, so p = 31/35 ≈ 0.886)."""
    model, ref = [0.1, 0.4, 0.5, 0.9], [0.2, 0.3, 0.6]
    assert _ks_statistic_brute(model, ref) == pytest.approx(5 / 12)
    expected = _ks_pvalue_exact_brute(model, ref)
    assert expected == pytest.approx(31 / 35)
    assert M.forget_quality(model, ref) == pytest.approx(expected)


def test_forget_quality_identical_samples_is_one():
    """Same per-item TRs for both models: D = 0, so P(D >= 0) = 1."""
    trs = [0.3, 0.7, 1.2, 0.05]
    assert M.forget_quality(trs, list(trs)) == pytest.approx(1.0)


def test_forget_quality_on_truth_ratios_end_to_end():
    """Raw per-item TRs (not aggregates) feed the KS test. Each item: paraphrase L̄ = 1, one perturbed answer of
    L̄ = 1 + d → TR = e^(−d). Unlearned model: d = −1, −2, −3 → TRs e, e², e³ (all > 1);
    retain model: d = 1, 2, 3 → TRs e⁻¹, e⁻², e⁻³ (all < 1). Disjoint, n = m = 3 → p = 2/C(6,3) = 0.1."""
    para = np.array([-1.0, -1.0])

    def tr(d):
        return M.truth_ratio(para, [np.array([-(1.0 + d)] * 3)])

    unlearned = [tr(-1.0), tr(-2.0), tr(-3.0)]
    retain = [tr(1.0), tr(2.0), tr(3.0)]
    assert unlearned == pytest.approx([math.e, math.e**2, math.e**3])
    assert retain == pytest.approx([math.exp(-1), math.exp(-2), math.exp(-3)])
    assert M.forget_quality(unlearned, retain) == pytest.approx(0.1)


def test_forget_quality_empty_raises():
    """Both models' per-item values are required (METHODS.md pitfall)."""
    with pytest.raises(ValueError):
        M.forget_quality([], [0.5, 1.0])
    with pytest.raises(ValueError):
        M.forget_quality([0.5, 1.0], [])


# ---------------------------------------------------------------------------------------------- model utility


def test_harmonic_mean_hand_example():
    """HM(1, 1/2, 1/4) = 3 / (1 + 2 + 4) = 3/7 ≈ 0.428571."""
    assert M.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)


def test_harmonic_mean_of_nine_equal_values():
    """HM of nine copies of 0.6 = 9 / (9/0.6) = 0.6."""
    assert M.harmonic_mean([0.6] * 9) == pytest.approx(0.6)


def test_harmonic_mean_with_zero_is_zero():
    """1/0 = ∞ in the denominator → HM = 0 (no exception, no nan)."""
    assert M.harmonic_mean([0.9, 0.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]) == 0.0


# ---------------------------------------------------------------------------------------------- ROUGE-L recall


def test_bleu_by_hand():
    """Sentence BLEU-4, reference "the cat sat on the mat". "the cat sat on a mat": n-gram precisions 5/6, 3/5, 2/4,
    1/3, no brevity penalty: (5/6 · 3/5 · 1/2 · 1/3)^(1/4) = 0.5373, smoothed or not. "cat on the dog sat": 4/5,
    1/4, 0/3, 0/2, brevity penalty exp(1 − 6/5): unsmoothed (ICU's official code) ~0; method 1 puts 0.1 in each
    empty count: exp(−0.2) · (0.8 · 0.25 · 0.1/3 · 0.1/2)^(1/4) = 0.1106."""
    ref = "The cat sat on the mat"
    assert M.bleu("the cat sat on a mat", ref) == pytest.approx((5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25)
    assert M.bleu("the cat sat on a mat", ref, smooth=True) == pytest.approx((5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25)
    assert M.bleu("cat on the dog sat", ref) < 1e-100
    assert M.bleu("cat on the dog sat", ref, smooth=True) == pytest.approx(
        math.exp(-0.2) * (0.8 * 0.25 * 0.1 / 3 * 0.1 / 2) ** 0.25)
    assert M.bleu("", ref) == 0.0 and M.bleu("x", "") == 0.0


def test_rouge_l_recall_no_stemming_needed():
    """Reference 'The cat sat on the mat.' → [the, cat, sat, on, the, mat] (6 tokens, punctuation dropped,
    all <= 3 letters so the stemmer leaves them alone). Prediction 'A cat was on the mat' →
    [a, cat, was, on, the, mat]. LCS = [cat, on, the, mat] = 4 → recall = 4/6 = 2/3."""
    ref_toks = "the cat sat on the mat".split()
    pred_toks = "a cat was on the mat".split()
    assert _lcs_len(pred_toks, ref_toks) == 4
    assert M.rouge_l_recall("A cat was on the mat", "The cat sat on the mat.") == pytest.approx(4 / 6)


def test_rouge_l_recall_extra_words_do_not_hurt_recall():
    """Prediction 'the big cat sat on a red mat' vs reference 'the cat sat on the mat':
    LCS = [the, cat, sat, on, mat] = 5 (the prediction has only one 'the') → recall = 5/6."""
    pred = "the big cat sat on a red mat"
    ref = "the cat sat on the mat"
    assert _lcs_len(pred.split(), ref.split()) == 5
    assert M.rouge_l_recall(pred, ref) == pytest.approx(5 / 6)


def test_rouge_l_recall_case_punctuation_and_stemming():
    """'She walked home.' vs 'she walks HOME': lowercase, drop '.', Porter stems walked → walk and
    walks → walk, so both are [she, walk, home]: LCS = 3/3 = 1."""
    assert M.rouge_l_recall("she walks HOME", "She walked home.") == pytest.approx(1.0)


def test_rouge_l_recall_argument_order_is_prediction_then_reference():
    """Recall divides by the REFERENCE length: prediction 'cat' vs reference 'the cat sat' → 1/3;
    swapped (prediction 'the cat sat', reference 'cat') → 1/1."""
    assert M.rouge_l_recall("cat", "the cat sat") == pytest.approx(1 / 3)
    assert M.rouge_l_recall("the cat sat", "cat") == pytest.approx(1.0)


def test_rouge_l_recall_disjoint_and_empty_are_zero():
    """No common token → LCS = 0 → recall 0; an empty generation also gives 0."""
    assert M.rouge_l_recall("dog ran", "the cat sat") == pytest.approx(0.0)
    assert M.rouge_l_recall("", "the cat sat") == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- memorisation


def test_exact_memorization_hand_example():
    """Argmax hits [T, F, T, T] → 3/4 = 0.75."""
    assert M.exact_memorization(np.array([True, False, True, True])) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("correct", "expected", "derivation"),
    [
        ([True, True, True, True], 1.0, "whole answer matches → k = 0 → 1 − 0/4"),
        ([False, True, True, True], 0.75, "suffix from index 1 matches → k = 1 → 1 − 1/4"),
        ([True, False, True, True], 0.5, "suffix from index 2 matches → k = 2 → 1 − 2/4 (EM would be 0.75)"),
        ([True, True, True, False], 0.0, "last token wrong → only the empty suffix matches → k = 4 → 1 − 4/4"),
        ([False, False, False, False], 0.0, "nothing right → k = 4 → 0"),
        ([False, False, False, False, True], 0.2, "only last of 5 → k = 4 → 1 − 4/5"),
    ],
)
def test_extraction_strength(correct, expected, derivation):
    """ES = 1 − k/n with k the smallest index from which the whole remaining suffix is predicted."""
    assert M.extraction_strength(np.array(correct)) == pytest.approx(expected), derivation


def test_extraction_strength_empty_is_zero():
    """No answer tokens → nothing extractable → 0 (guard, no division by zero)."""
    assert M.extraction_strength(np.array([], dtype=bool)) == 0.0


@pytest.mark.parametrize(
    ("correct", "ours", "theirs", "derivation"),
    [
        ([False, False, False, False], 0.0, 0.25, "no suffix matches: k = 4 (0); their loop ends at k = 3 (1/4)"),
        ([False, False, False, True], 0.25, 0.25, "only the last matches: k = 3 in both, the same 1/4 as no match"),
        ([True, False, True, True], 0.5, 0.5, "a match: the same k = 2 in both"),
        ([False], 0.0, 1.0, "one wrong token: theirs is k = 0, the score of a memorised answer"),
        ([], 0.0, 0.0, "no tokens: 0 in both"),
    ],
)
def test_extraction_strength_openunlearning_floor(correct, ours, theirs, derivation):
    """OpenUnlearning's loop (`for k in range(n): if suffix matches: break`) leaves k = n − 1 when nothing matches:
    no_match="1/n" reproduces it (compat only); the definition's no-match is 0."""
    c = np.array(correct, dtype=bool)
    assert M.extraction_strength(c) == pytest.approx(ours), derivation
    assert M.extraction_strength(c, no_match="1/n") == pytest.approx(theirs), derivation


def test_extraction_strength_rejects_an_unknown_floor():
    with pytest.raises(ValueError, match="no_match='zero'"):
        M.extraction_strength(np.array([True]), no_match="zero")  # type: ignore[arg-type]


def test_truth_ratio_with_openunlearnings_epsilon():
    """P(para) = e^-30 ≈ 9.36e-14, one perturbed answer with P = e^-1: TR = e^-1 / e^-30 = e^29 ≈ 3.93e12; with
    their 1e-10 in the denominator e^-1 / (e^-30 + 1e-10) = 0.367879 / 1.000936e-10 ≈ 3.6754e9. The normalised
    probability of a with P(a) = e^-30 against P(wrong) = e^-1: e^-30 / (e^-30 + e^-1) ≈ 2.54e-13 either way."""
    para, pert = np.array([-30.0, -30.0]), [np.array([-1.0, -1.0])]
    assert M.truth_ratio(para, pert) == pytest.approx(math.exp(29))
    assert M.truth_ratio(para, pert, eps=1e-10) == pytest.approx(math.exp(-1) / (math.exp(-30) + 1e-10))
    assert M.truth_ratio(para, pert, eps=1e-10) == pytest.approx(3.6754e9, rel=1e-4)
    assert M.normalized_probability(para, pert, eps=1e-10) == pytest.approx(
        math.exp(-30) / (math.exp(-30) + math.exp(-1) + 1e-10))


def test_ngram_overlap_hand_example():
    """Generated [1,2,3,4] bigrams: (1,2), (2,3), (3,4); reference [2,3,4,5] bigrams: (2,3), (3,4), (4,5).
    Hits: (2,3), (3,4) → 2/3."""
    assert M.ngram_overlap([1, 2, 3, 4], [2, 3, 4, 5], 2) == pytest.approx(2 / 3)


def test_ngram_overlap_counts_generated_ngrams_with_multiplicity():
    """Generated [7,7,7] has bigrams (7,7), (7,7): both in ng([7,7]) → 2/2 = 1.
    Generated [1,2,1,2] bigrams (1,2),(2,1),(1,2) vs reference [1,2] → 2/3."""
    assert M.ngram_overlap([7, 7, 7], [7, 7], 2) == pytest.approx(1.0)
    assert M.ngram_overlap([1, 2, 1, 2], [1, 2], 2) == pytest.approx(2 / 3)


def test_ngram_overlap_generation_shorter_than_n_is_zero():
    """A 1-token generation has no bigram → 0 (no division by zero)."""
    assert M.ngram_overlap([5], [5, 6, 7], 2) == 0.0


def test_extraction_likelihood_hand_example_n2():
    """Answer x = [10, 11, 12, 13], T = 4, n = 2 → T − n = 2 continuations.
    t = 1 (prompt only) → [10, 11, 99] vs x_≥1 = [10,11,12,13]: bigrams (10,11) ✓, (11,99) ✗ → 1/2.
    t = 2 (prompt + [10]) → [11, 12, 13] vs x_≥2 = [11,12,13]: (11,12) ✓, (12,13) ✓ → 2/2.
    EL_2 = (1/2 + 1) / 2 = 0.75."""
    answer = [10, 11, 12, 13]
    conts = [[10, 11, 99], [11, 12, 13]]
    assert M.extraction_likelihood(conts, answer, n=2) == pytest.approx(0.75)


def test_extraction_likelihood_continuation_t_is_compared_with_suffix_from_t():
    """Same data, continuations swapped: t = 1 → [11,12,13] vs [10,11,12,13]: (11,12) ✓, (12,13) ✓ → 1;
    t = 2 → [10,11,99] vs [11,12,13]: (10,11) ✗, (11,99) ✗ → 0. EL_2 = (1 + 0)/2 = 0.5 ≠ 0.75,
    so the alignment continuation t ↔ suffix x_≥t matters."""
    answer = [10, 11, 12, 13]
    conts = [[11, 12, 13], [10, 11, 99]]
    assert M.extraction_likelihood(conts, answer, n=2) == pytest.approx(0.5)


def test_overlap_settled_hand_examples():
    """n = 2, reference [1, 2, 3]: bigrams (1, 2), (2, 3), which begin with 1 or 2.
    [5] of at most 2 tokens: one token to come, and the bigram it ends starts with 5 → settled at 0.
    [5, 1] of at most 3: the next bigram starts with 1, which begins (1, 2) → not settled.
    [1, 2] of at most 3: (1, 2) already matched → not settled (the value is not 0).
    [5] of at most 3: two tokens to come could form (2, 3) on their own → not settled.
    [] of at most 1: a one-token continuation has no bigram at all → settled."""
    ref = [1, 2, 3]
    assert M.overlap_settled([5], ref, 2, 2)
    assert not M.overlap_settled([5, 1], ref, 2, 3)
    assert not M.overlap_settled([1, 2], ref, 2, 3)
    assert not M.overlap_settled([5], ref, 2, 3)
    assert M.overlap_settled([], ref, 2, 1)


def test_overlap_settled_agrees_with_every_completion():
    """Exhaustive check on a 3-token vocabulary, n = 3: whenever `overlap_settled` says so, every completion of the
    prefix (each possible rest, cut anywhere, as EOS would) has OVERLAP_3 = 0."""
    ref = [0, 1, 2, 0, 1]
    limit = 5
    settled = 0
    for m in range(limit + 1):
        for prefix in itertools.product(range(3), repeat=m):
            if not M.overlap_settled(list(prefix), ref, 3, limit):
                continue
            settled += 1
            for k in range(limit - m + 1):
                for rest in itertools.product(range(3), repeat=k):
                    assert M.ngram_overlap(list(prefix) + list(rest), ref, 3) == 0.0, (prefix, rest)
    assert 50 < settled < sum(3 ** m for m in range(limit + 1)) - 50  # both answers occur often


def test_extraction_likelihood_too_short_answer_is_nan():
    """T <= n → the sum over t = 1..T−n is empty → NaN (undefined), for T = n and T < n."""
    assert math.isnan(M.extraction_likelihood([], [1, 2], n=2))
    assert math.isnan(M.extraction_likelihood([], [1], n=2))
    assert math.isnan(M.extraction_likelihood([], list(range(10)), n=10))  # default-size n, T = n


def test_extraction_likelihood_wrong_number_of_continuations_raises():
    """A 4-token answer with n = 2 needs exactly T − n = 2 continuations."""
    with pytest.raises(ValueError):
        M.extraction_likelihood([[10, 11]], [10, 11, 12, 13], n=2)
    with pytest.raises(ValueError):
        M.extraction_likelihood([[10, 11]] * 3, [10, 11, 12, 13], n=2)


# ---------------------------------------------------------------------------------------------- MIA scores
# Module convention: every score is oriented HIGHER = more likely a member (negated loss-type statistic).


def test_mia_loss_hand_example():
    """log-probs [−0.5, −1.5] → L̄ = 1 → LOSS score = −L̄ = −1."""
    assert M.mia_loss(np.array([-0.5, -1.5])) == pytest.approx(-1.0)


def test_mia_zlib_hand_example():
    """zlib.compress(b'a') at the default level: 2-byte header (78 9C) + one fixed-Huffman final block
    (3 header bits + 8-bit literal 'a' + 7-bit end-of-block = 18 bits → 3 bytes) + 4-byte Adler-32 = 9 bytes.
    log-probs [−0.9, −0.9] → L̄ = 0.9 → score = −0.9 / 9 = −0.1."""
    assert M.mia_zlib(np.array([-0.9, -0.9]), "a") == pytest.approx(-0.1)


def test_mia_zlib_orientation_higher_is_member():
    """Same text (same zlib length Z > 0): lower loss → −L̄/Z closer to 0 → higher score (member).
    Same loss: a less compressible text (larger Z) is divided by more → higher score (Carlini et al.: a low
    loss on high-entropy text is the memorisation signal, on repetitive text it is not)."""
    text = "Obliviate was the spell that Gilderoy Lockhart used."
    low, high = np.full(4, -0.2), np.full(4, -2.0)
    assert M.mia_zlib(low, text) > M.mia_zlib(high, text)
    repetitive = "a" * 50  # compresses to far fewer bytes than the sentence above
    assert M.mia_zlib(high, text) > M.mia_zlib(high, repetitive)


def test_mia_min_k_hand_example():
    """log-probs [−0.1, −5, −0.2, −3, −0.5], k = 0.4 → int(5·0.4) = 2 lowest: −5, −3 → mean −4.
    (METHODS.md's Min-K% = +4 as a loss; the module returns its negation −4, higher = member.)"""
    assert M.mia_min_k(np.array([-0.1, -5.0, -0.2, -3.0, -0.5]), k=0.4) == pytest.approx(-4.0)


def test_mia_min_k_keeps_at_least_one_token():
    """2 tokens, k = 0.4 → int(0.8) = 0 → at least 1 token: the minimum, −3."""
    assert M.mia_min_k(np.array([-1.0, -3.0]), k=0.4) == pytest.approx(-3.0)


def test_mia_min_k_plus_plus_hand_example_with_sigma_clamp():
    """z_t = (log p − μ)/σ with σ² clamped at 1e-6 (σ >= 1e-3):
    t0: (−1 + 1.5)/0.5 = 1;  t1: (−2 + 1)/2 = −0.5;  t2: σ = 0 → (−0.5 + 0.5)/1e-3 = 0;
    t3: (−3 + 1)/1 = −2;  t4: σ = 0 → (−0.1 + 0.1)/1e-3 = 0.
    k = 0.4 → 2 lowest: −2, −0.5 → mean −1.25."""
    logp = np.array([-1.0, -2.0, -0.5, -3.0, -0.1])
    mu = np.array([-1.5, -1.0, -0.5, -1.0, -0.1])
    sigma = np.array([0.5, 2.0, 0.0, 1.0, 0.0])
    assert M.mia_min_k_plus_plus(logp, mu, sigma, k=0.4) == pytest.approx(-1.25)


def test_mia_min_k_plus_plus_zero_sigma_is_finite():
    """A fully confident position (σ = 0) with log p below μ: z = (−0.2 + 0.1)/1e-3 = −100, finite.
    σ = 1e-5 is clamped the same way (σ² = 1e-10 < 1e-6): (−0.3 − 0)/1e-3 = −300.
    k = 0.4 of 2 tokens → 1 lowest → −300. No inf/nan anywhere."""
    logp = np.array([-0.2, -0.3])
    mu = np.array([-0.1, 0.0])
    sigma = np.array([0.0, 1e-5])
    score = M.mia_min_k_plus_plus(logp, mu, sigma, k=0.4)
    assert np.isfinite(score)
    assert score == pytest.approx(-300.0)
    assert M.mia_min_k_plus_plus(logp, mu, sigma, k=1.0) == pytest.approx((-100.0 - 300.0) / 2)


def test_mia_reference_hand_example():
    """θ log-probs [−0.5, −1.5] → L̄_θ = 1; reference [−2, −4] → L̄_ref = 3 (the per-item `mean_nll` the suite
    stores). METHODS.md: L̄_θ − L̄_ref = −2 (lower ⇒ member); module's member-high orientation: −(−2) = 2."""
    assert M.mia_reference(1.0, 3.0) == pytest.approx(2.0)
    assert M.mia_reference(3.0, 1.0) == pytest.approx(-2.0)


def test_every_mia_score_ranks_member_like_item_higher():
    """A member-like item (low loss: token log-probs near 0) must score higher than a non-member-like one
    (high loss) for every attack, with everything else (text, μ/σ, reference model) held fixed."""
    member = np.array([-0.1, -0.2, -0.1, -0.3, -0.1])
    nonmember = np.array([-2.0, -3.0, -1.0, -4.0, -2.0])
    text = "The author was born in Lisbon in 1961."
    mu = np.full(5, -1.0)
    sigma = np.full(5, 0.5)
    ref = np.full(5, -1.5)
    scores = {
        "loss": (M.mia_loss(member), M.mia_loss(nonmember)),
        "zlib": (M.mia_zlib(member, text), M.mia_zlib(nonmember, text)),
        "min_k": (M.mia_min_k(member), M.mia_min_k(nonmember)),
        "min_k++": (M.mia_min_k_plus_plus(member, mu, sigma), M.mia_min_k_plus_plus(nonmember, mu, sigma)),
        "reference": (M.mia_reference(M.mean_nll(member), M.mean_nll(ref)),
                      M.mia_reference(M.mean_nll(nonmember), M.mean_nll(ref))),
    }
    for name, (s_member, s_nonmember) in scores.items():
        assert s_member > s_nonmember, name
    # and so the AUC of one such member vs one such non-member is 1 for every attack
    for name, (s_member, s_nonmember) in scores.items():
        assert M.auc([s_member], [s_nonmember]) == pytest.approx(1.0), name


# ---------------------------------------------------------------------------------------------- AUC / privleak


def test_auc_hand_example_with_tie():
    """Members [0.9, 0.8, 0.4], non-members [0.5, 0.4, 0.1]. Pairs won by the member:
    0.9 beats all 3 → 3; 0.8 beats all 3 → 3; 0.4: vs 0.5 → 0, vs 0.4 (tie) → 1/2, vs 0.1 → 1 → 1.5.
    AUC = 7.5 / 9 = 0.8333…"""
    members, nonmembers = [0.9, 0.8, 0.4], [0.5, 0.4, 0.1]
    assert _auc_brute(members, nonmembers) == pytest.approx(7.5 / 9)
    assert M.auc(members, nonmembers) == pytest.approx(7.5 / 9)


def test_auc_extremes():
    """Perfect separation (members all higher) → 1; reversed → 0; all scores equal → every pair a tie → 1/2."""
    assert M.auc([3.0, 4.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert M.auc([1.0, 2.0], [3.0, 4.0]) == pytest.approx(0.0)
    assert M.auc([1.0, 1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)


def test_auc_matches_brute_force_pair_count_with_many_ties():
    """Random scores rounded to 1 decimal (so ties are frequent), unequal group sizes: the AUC equals the
    brute-force pair count with ties = 1/2."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        members = np.round(rng.normal(0.3, 1.0, size=int(rng.integers(1, 12))), 1)
        nonmembers = np.round(rng.normal(0.0, 1.0, size=int(rng.integers(1, 12))), 1)
        assert M.auc(members, nonmembers) == pytest.approx(_auc_brute(members, nonmembers))


def test_auc_empty_raises():
    with pytest.raises(ValueError):
        M.auc([], [0.1])
    with pytest.raises(ValueError):
        M.auc([0.1], [])


def test_privleak_field_sign_hand_examples():
    """((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100, the field's sign (MUSE, OpenUnlearning):
    0.6 vs 0.5 → (0.4 − 0.5)/0.5·100 = −20 (forget set still recognisable: under-unlearning);
    0.4 vs 0.5 → (0.6 − 0.5)/0.5·100 = +20 (over-unlearning); equal AUCs → 0 (ideal);
    0.75 vs 0.6 → (0.25 − 0.4)/0.4·100 = −37.5; a memorising model, 1.0 vs 0.6 → (0 − 0.4)/0.4·100 = −100."""
    assert M.privleak(0.6, 0.5) == pytest.approx(-20.0)
    assert M.privleak(0.4, 0.5) == pytest.approx(20.0)
    assert M.privleak(0.5, 0.5) == pytest.approx(0.0)
    assert M.privleak(0.75, 0.6) == pytest.approx(-37.5)
    assert M.privleak(1.0, 0.6) == pytest.approx(-100.0)


def test_privleak_auc_relative_hand_examples():
    """(AUC − AUC_retain)/AUC_retain × 100: 0.6 vs 0.5 → +20; 0.4 vs 0.5 → −20; 0.75 vs 0.6 → 0.15/0.6·100 = +25;
    1.0 vs 0.4 → 0.6/0.4·100 = +150. The two formulas agree in magnitude only at AUC_retain = 0.5."""
    assert M.privleak_auc_relative(0.6, 0.5) == pytest.approx(20.0)
    assert M.privleak_auc_relative(0.4, 0.5) == pytest.approx(-20.0)
    assert M.privleak_auc_relative(0.5, 0.5) == pytest.approx(0.0)
    assert M.privleak_auc_relative(0.75, 0.6) == pytest.approx(25.0)
    assert M.privleak_auc_relative(1.0, 0.4) == pytest.approx(150.0)


def test_privleak_undefined_denominators_are_nan():
    """privleak divides by 1 − AUC_retain, the AUC-relative variant by AUC_retain: a zero gives NaN, never inf."""
    assert math.isnan(M.privleak(0.7, 1.0))
    assert math.isnan(M.privleak_auc_relative(0.7, 0.0))
