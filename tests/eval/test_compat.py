"""`compat=openunlearning`: each convention where OpenUnlearning's per-item numbers differ from obliviate's
definitions, on hand-built teacher-forced statistics with the values derived by hand in the docstrings; and the
config's rules."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from obliviate.data.records import QA, Split
from obliviate.eval.passes import TokenStats
from obliviate.eval.suite import EvalConfig, item_values

# Item "a": answer tokens + EOS (the last position). log p = [-0.1, -2.0, -0.5, -3.0], argmax hits [T, F, T, T],
# Min-K%++ z = (log p − μ)/σ = [(−0.1+1)/0.5, (−2+1.5)/1, (−0.5+0.8)/0.4, (−3+1)/1] = [1.8, −0.5, 0.75, −2.0].
A = TokenStats(np.array([-0.1, -2.0, -0.5, -3.0]), np.array([True, False, True, True]),
               np.array([-1.0, -1.5, -0.8, -1.0]), np.array([0.5, 1.0, 0.4, 1.0]))
# Item "b": nothing right, EOS included: log p = −1 everywhere.
B = TokenStats(np.full(4, -1.0), np.zeros(4, dtype=bool), np.full(4, -1.0), np.ones(4))
# Item "c": the answer is the EOS alone (an empty answer's sequence).
C = TokenStats(np.array([-0.5]), np.array([True]), np.array([-1.0]), np.array([1.0]))
LABEL_TEXTS = ["the labelled tokens decoded", "b decoded", ""]


class FakeRunner:
    """What `item_values` reads of a ModelRunner: the answers' teacher-forced stats, and the decoded labels."""

    def split_stats(self, split, vocab_stats=False):
        return {"answer": [A, B, C]}

    def label_texts(self, split):
        return LABEL_TEXTS


SPLIT = Split("forget", (QA("a", "q?", "The answer a."), QA("b", "q?", "Answer b."), QA("c", "q?", ".")))


def _values(compat: str) -> dict[str, dict]:
    return item_values(FakeRunner(), SPLIT, EvalConfig(compat=compat), generate=False, el=False, mia=True)


def test_exact_memorization_without_eos():
    """Default: mean of [T, F, T, T] = 3/4. OpenUnlearning leaves the EOS out: [T, F, T] → 2/3; an answer that is
    the EOS alone has no token left: absent (their None), 1.0 by the definition."""
    ours, theirs = _values("none"), _values("openunlearning")
    assert ours["a"]["exact_memorization"] == pytest.approx(0.75)
    assert theirs["a"]["exact_memorization"] == pytest.approx(2 / 3)
    assert ours["c"]["exact_memorization"] == 1.0
    assert math.isnan(theirs["c"]["exact_memorization"])


def test_extraction_strength_without_eos_and_their_floor():
    """a: [T, F, T, T] → smallest all-correct suffix starts at k = 2 → 1 − 2/4 = 0.5; without EOS [T, F, T] →
    k = 2 → 1 − 2/3 = 1/3. b: nothing right → 0 by the definition; theirs [F, F, F] → their loop's k = 2 → 1/3.
    c: no token left → 0 (theirs too)."""
    ours, theirs = _values("none"), _values("openunlearning")
    assert ours["a"]["extraction_strength"] == pytest.approx(0.5)
    assert theirs["a"]["extraction_strength"] == pytest.approx(1 / 3)
    assert ours["b"]["extraction_strength"] == 0.0
    assert theirs["b"]["extraction_strength"] == pytest.approx(1 / 3)
    assert theirs["c"]["extraction_strength"] == 0.0


def test_min_k_and_min_k_plus_plus_without_eos():
    """k = 0.4. Default over 4 tokens: int(1.6) = 1 lowest → Min-K% −3.0, Min-K%++ −2.0 (the EOS's). Without
    EOS over 3: int(1.2) = 1 lowest → Min-K% −2.0, Min-K%++ −0.5. c without tokens: 0 (their empty score)."""
    ours, theirs = _values("none"), _values("openunlearning")
    assert ours["a"]["mia_mink"] == pytest.approx(-3.0)
    assert theirs["a"]["mia_mink"] == pytest.approx(-2.0)
    assert ours["a"]["mia_minkpp"] == pytest.approx(-2.0)
    assert theirs["a"]["mia_minkpp"] == pytest.approx(-0.5)
    assert theirs["c"]["mia_mink"] == 0.0 and theirs["c"]["mia_minkpp"] == 0.0


def test_probability_and_loss_keep_eos():
    """Both conventions: L̄ over all 4 tokens = (0.1 + 2 + 0.5 + 3)/4 = 1.4; P = e^-1.4; LOSS score −1.4."""
    for v in (_values("none")["a"], _values("openunlearning")["a"]):
        assert v["mean_nll"] == pytest.approx(1.4)
        assert v["prob"] == pytest.approx(math.exp(-1.4))
        assert v["mia_loss"] == pytest.approx(-1.4)


def test_zlib_compresses_the_decoded_labels():
    """Default: −L̄ / len(zlib(answer text)); OpenUnlearning: the labelled tokens decoded instead."""
    ours, theirs = _values("none"), _values("openunlearning")
    assert ours["a"]["mia_zlib"] == pytest.approx(-1.4 / len(zlib.compress(b"The answer a.")))
    assert theirs["a"]["mia_zlib"] == pytest.approx(-1.4 / len(zlib.compress(LABEL_TEXTS[0].encode())))


def test_compat_tokenizes_jointly_and_rejects_separate():
    from obliviate.config import build_config
    from obliviate.errors import ConfigError

    cfg = EvalConfig(compat="openunlearning")
    assert cfg.tokenize_for("/any/model") == "joint"
    with pytest.raises(ConfigError, match="tokenises prompt and answer jointly.*tokenize=separate"):
        build_config(EvalConfig, {"compat": "openunlearning", "tokenize": "separate"}, where="eval config")
    with pytest.raises(ConfigError, match="compat: Input should be 'none' or 'openunlearning'"):
        build_config(EvalConfig, {"compat": "open-unlearning"}, where="eval config")


def _stats(logps) -> TokenStats:
    n = len(logps)
    return TokenStats(np.array(logps, dtype=float), np.ones(n, dtype=bool), np.zeros(n), np.ones(n))


class PerturbedRunner(FakeRunner):
    """One item whose answer, paraphrase and two perturbed answers have different mean NLLs: answer L̄ 0.5,
    paraphrase L̄ 1.0, perturbed L̄ 2.0 and 3.0."""

    def split_stats(self, split, vocab_stats=False):
        return {"answer": [_stats([-0.5])], "para": [_stats([-1.0, -1.0])],
                "pert": [[_stats([-2.0]), _stats([-3.0, -3.0])]]}


@pytest.mark.parametrize("compat", ["none", "openunlearning"])
def test_truth_ratio_reads_the_paraphrase_and_norm_prob_the_answer(compat):
    """TR = exp(−mean(2, 3) + L̄_para 1.0) = e^−1.5 = 0.22313 (the ANSWER's L̄ would give e^−2); the normalised
    probability reads the answer: e^−0.5 / (e^−0.5 + e^−2 + e^−3) = 0.766157 (with the paraphrase: 0.665); the
    probability e^−0.5 = 0.60653. OpenUnlearning's 1e-10 moves neither at these sizes."""
    split = Split("retain", (QA("x", "q?", "a."),))
    v = item_values(PerturbedRunner(), split, EvalConfig(compat=compat), generate=False, el=False, mia=False)["x"]
    assert v["truth_ratio"] == pytest.approx(0.223130, abs=1e-6)
    assert v["norm_prob"] == pytest.approx(0.766157, abs=1e-6)
    assert v["prob"] == pytest.approx(0.606531, abs=1e-6)
