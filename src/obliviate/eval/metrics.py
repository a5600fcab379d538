"""Every metric, written once as a function of cached per-item model outputs (METHODS.md, "Metrics").

Conventions: `nll` means a per-token negative log-likelihood array over ANSWER tokens; L̄ = its mean
(length-normalised NLL). Nothing here calls a model: the evaluation suite feeds these functions the
outputs of the cached teacher-forced and generation passes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

# ------------------------------------------------------------------------------------ probability & TOFU


def mean_nll(token_logps: np.ndarray) -> float:
    """L̄(a|q) = −mean_t log p(a_t | q, a_<t)."""
    return float(-np.mean(token_logps))


def probability(token_logps: np.ndarray) -> float:
    """TOFU probability P(a|q) = exp(−L̄(a|q))."""
    return math.exp(-mean_nll(token_logps))


# OpenUnlearning adds 1e-10 to the denominators of the truth ratio and the normalised probability
# (src/evals/metrics/memorization.py `truth_ratio`, `probability_w_options`). Negligible while P(a) is not tiny, it
# decides the value once a model has pushed P(a) below ~1e-8 (TR → P(pert)/1e-10 instead of P(pert)/P(a)): passed
# as `eps` under compat=openunlearning only.
OPENUNLEARNING_EPS = 1e-10


def normalized_probability(correct_logps: np.ndarray, wrong_logps: Sequence[np.ndarray], eps: float = 0.0) -> float:
    """Real authors / world facts probability: P(a) / (P(a) + Σ_k P(wrong_k) + eps), each P length-normalised."""
    p = probability(correct_logps)
    return p / (p + sum(probability(w) for w in wrong_logps) + eps)


def truth_ratio(para_logps: np.ndarray, pert_logps: Sequence[np.ndarray], eps: float = 0.0) -> float:
    """TR = GeoMean_k P(pert_k)^(1/len) / P(para)^(1/len) = exp(−mean_k L̄_pert,k + L̄_para); with `eps`,
    GeoMean_k P(pert_k)^(1/len) / (P(para)^(1/len) + eps) (OpenUnlearning's)."""
    pert = np.mean([mean_nll(x) for x in pert_logps])
    if eps:
        return math.exp(-pert) / (math.exp(-mean_nll(para_logps)) + eps)
    return math.exp(-pert + mean_nll(para_logps))


def truth_ratio_closer_to_one(trs: Sequence[float]) -> float:
    """Forget-set aggregation: mean min(TR, 1/TR) (1 = the model cannot tell true from false)."""
    a = np.asarray(trs, dtype=float)
    return float(np.mean(np.minimum(a, 1.0 / a)))


def truth_ratio_true_better(trs: Sequence[float]) -> float:
    """Retain/real/world aggregation: mean max(0, 1 − TR) (1 = the true answer is far more likely)."""
    a = np.asarray(trs, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - a)))


def forget_quality(trs_model: Sequence[float], trs_reference: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the per-item truth ratios of the model and of the retain model
    on the SAME forget items (raw TRs, not aggregates)."""
    if len(trs_model) == 0 or len(trs_reference) == 0:
        raise ValueError("forget quality needs per-item truth ratios of both models")
    return float(stats.ks_2samp(np.asarray(trs_model), np.asarray(trs_reference)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Model utility aggregates its 9 numbers with the harmonic mean; any zero makes it zero."""
    a = np.asarray(values, dtype=float)
    if np.any(a <= 0):
        return 0.0
    return float(stats.hmean(a))


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of a generated answer against the reference (rouge-score, Porter stemmer, as TOFU)."""
    return float(_rouge().score(reference, prediction)["rougeL"].recall)


def rouge_l_f1(a: str, b: str) -> float:
    """ROUGE-L F1 (rouge-score, Porter stemmer): symmetric in its arguments, 1.0 for two identical non-empty
    texts, 0.0 when either is empty. Reveal-and-Release's agreement between sampled and greedy answers."""
    return float(_rouge().score(b, a)["rougeL"].fmeasure)


def bleu(prediction: str, reference: str, smooth: bool = False) -> float:
    """Sentence BLEU-4 (nltk) on lower-cased words: ICU's second "forgotten" test. Unsmoothed by default, as
    ICU's official code calls it: (practically) 0 unless some 4-gram of the reference reappears; `smooth` adds
    nltk's method 1 (ε = 0.1 for an n-gram order with no match)."""
    import warnings

    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    pred, ref = prediction.lower().split(), reference.lower().split()
    if not pred or not ref:
        return 0.0
    with warnings.catch_warnings():  # nltk warns on every order without a match when unsmoothed
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref], pred, smoothing_function=SmoothingFunction().method1 if smooth else None))


# ------------------------------------------------------------------------------------ memorisation


def exact_memorization(correct: np.ndarray) -> float:
    """mean_t 1[argmax p(·|q, a_<t) = a_t] over answer tokens (teacher forced)."""
    return float(np.mean(np.asarray(correct, dtype=float)))


def extraction_strength(correct: np.ndarray, no_match: Literal["0", "1/n"] = "0") -> float:
    """1 − k/n with k the smallest index from which the teacher-forced argmax matches the whole rest of the
    answer (k = n when even the last token is wrong, giving 0; k = 0 for a perfectly memorised answer).

    `no_match="1/n"` reproduces OpenUnlearning's loop (src/evals/metrics/memorization.py, `extraction_strength`:
    `for k in range(n): ... break` leaves k = n − 1 when no suffix matches), which scores an answer the model gets
    wholly wrong 1/n, the same as one whose last token alone is right: a bug, used only under compat=openunlearning.
    An empty answer scores 0 either way (theirs too)."""
    if no_match not in ("0", "1/n"):
        raise ValueError(f"no_match={no_match!r}; expected '0' (the definition) or '1/n' (OpenUnlearning's loop)")
    c = np.asarray(correct, dtype=bool)
    n = len(c)
    if n == 0:
        return 0.0
    k = n
    while k > 0 and c[k - 1]:
        k -= 1
    if k == n and no_match == "1/n":
        k = n - 1
    return 1.0 - k / n


def ngram_overlap(generated: Sequence[int], reference: Sequence[int], n: int) -> float:
    """OVERLAP_n(a, b) = Σ_{c ∈ ng(a)} 1[c ∈ ng(b)] / |ng(a)| (Jang et al. 2022), a = generated."""
    gen = [tuple(generated[i:i + n]) for i in range(len(generated) - n + 1)]
    if not gen:
        return 0.0
    ref = {tuple(reference[i:i + n]) for i in range(len(reference) - n + 1)}
    return sum(g in ref for g in gen) / len(gen)


@lru_cache(maxsize=4096)
def _ngram_starts(reference: tuple[int, ...], n: int) -> tuple[frozenset[tuple[int, ...]], ...]:
    """For j = 0..n: the set of the first j tokens of the reference's n-grams (j = n: the n-grams themselves)."""
    grams = [reference[i:i + n] for i in range(len(reference) - n + 1)]
    return tuple(frozenset(g[:j] for g in grams) for j in range(n + 1))


def overlap_settled(generated: Sequence[int], reference: Sequence[int], n: int, limit: int) -> bool:
    """Whether OVERLAP_n(c, reference) is already known to be 0 for every continuation c of `generated` of at most
    `limit` tokens in all, so that decoding can stop without changing EL_n: no n-gram of `generated` is a
    reference n-gram, and every n-gram still to come would include generated tokens that begin none (that takes
    fewer than n tokens to come: the n-gram ending k tokens ahead starts with the last n − k generated ones)."""
    m, starts = len(generated), _ngram_starts(tuple(reference), n)
    if limit - m >= n:  # an n-gram made of tokens still to come could match anything
        return False
    g = tuple(generated)
    if any(g[i:i + n] in starts[n] for i in range(m - n + 1)):
        return False
    return not any(g[m - (n - k):] in starts[n - k] for k in range(1, limit - m + 1) if m + k >= n)


def extraction_likelihood(continuations: Sequence[Sequence[int]], answer: Sequence[int], n: int = 10) -> float:
    """EL_n = Σ_{t=1}^{T−n} OVERLAP_n(f(x_<t), x_≥t) / (T − n): `continuations[t-1]` is the greedy continuation
    generated from the prompt plus the first t−1 answer tokens. NaN when the answer has <= n tokens."""
    T = len(answer)
    if T <= n:
        return float("nan")
    if len(continuations) != T - n:
        raise ValueError(f"EL_{n} needs {T - n} continuations for a {T}-token answer, got {len(continuations)}")
    return float(np.mean([ngram_overlap(continuations[t], answer[t:], n) for t in range(T - n)]))


# ------------------------------------------------------------------------------------ membership inference
# Every score is oriented so that HIGHER = more likely a member (the negated loss-type statistic).


def mia_loss(token_logps: np.ndarray) -> float:
    """LOSS attack: −L̄ (members have lower loss)."""
    return -mean_nll(token_logps)


def mia_zlib(token_logps: np.ndarray, text: str) -> float:
    """ZLib attack: −L̄ / len(zlib(text)) (Carlini et al. 2021): loss calibrated by the text's compressibility."""
    return -mean_nll(token_logps) / len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: np.ndarray, k: float) -> float:
    n = max(1, int(len(values) * k))
    return float(np.mean(np.sort(values)[:n]))


def mia_min_k(token_logps: np.ndarray, k: float = 0.4) -> float:
    """Min-K%: mean of the lowest k share of token log-probs (members have few very unlikely tokens)."""
    return _lowest_mean(np.asarray(token_logps, dtype=float), k)


def mia_min_k_plus_plus(token_logps: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float = 0.4) -> float:
    """Min-K%++: Min-K% on (log p(y_t) − μ_t)/σ_t, μ_t and σ_t the mean/std of log p(·) under p itself;
    σ² is clamped at 1e-6 so confident positions don't blow up (METHODS.md pitfalls)."""
    sig = np.sqrt(np.maximum(np.asarray(sigma, dtype=float) ** 2, 1e-6))
    return _lowest_mean((np.asarray(token_logps, dtype=float) - np.asarray(mu, dtype=float)) / sig, k)


def mia_reference(mean_nll_model: float, mean_nll_reference: float) -> float:
    """Reference attack: −(L̄_θ − L̄_ref), from one item's answer L̄ under θ and under the reference model
    (`mean_nll` of each): members are much more likely under θ than under the reference."""
    return -(mean_nll_model - mean_nll_reference)


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC with members as the positive class and higher score = member (Mann-Whitney U / n1·n0; ties
    count one half). 0.5 = indistinguishable from non-members."""
    m = np.asarray(member_scores, dtype=float)
    h = np.asarray(nonmember_scores, dtype=float)
    if len(m) == 0 or len(h) == 0:
        raise ValueError("AUC needs at least one member and one non-member score")
    ranks = stats.rankdata(np.concatenate([m, h]))
    u = ranks[: len(m)].sum() - len(m) * (len(m) + 1) / 2
    return float(u / (len(m) * len(h)))


def privleak(auc_model: float, auc_retain: float) -> float:
    """privleak in the field's sign (MUSE, Shi et al. 2024; OpenUnlearning's `privleak`):
    ((1 − AUC_unlearned) − (1 − AUC_retain)) / (1 − AUC_retain) × 100, the AUCs those of `auc` (forget = members).

    MUSE reports the AUC of the attack the other way round (1 − ours), and this is the relative change of that number.
    A model that memorised the forget set (AUC → 1) scores −100; the retain model 0, which is ideal. Negative:
    the forget set is still recognisable as training data (under-unlearning); positive: it looks less like training
    data than it does to the retain model (over-unlearning). NaN when AUC_retain = 1 (the relative change of a zero
    is undefined; OpenUnlearning adds 1e-10 to the denominator instead, a relative difference of
    1e-10/(1 − AUC_retain) otherwise)."""
    if auc_retain == 1.0:
        return float("nan")
    return ((1.0 - auc_model) - (1.0 - auc_retain)) / (1.0 - auc_retain) * 100.0


def privleak_auc_relative(auc_model: float, auc_retain: float) -> float:
    """(AUC_unlearned − AUC_retain) / AUC_retain × 100: the relative change of the AUC itself (OpenUnlearning's
    `rel_diff` on the AUC). Opposite in sign to `privleak` and on another scale: a memorising model (AUC 1)
    scores (1 − AUC_retain)/AUC_retain × 100 (+100 at a retain AUC of 0.5), the retain model 0 (ideal); positive =
    under-unlearning. NaN when AUC_retain = 0."""
    if auc_retain == 0.0:
        return float("nan")
    return (auc_model - auc_retain) / auc_retain * 100.0
