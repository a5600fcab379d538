"""The bandits of REVEAL: which instructions to pull this round.

Both are contextual only in the loosest sense: an arm is an instruction template, and its reward (how much the
model revealed when asked it, reveal.py) is observed each time it is pulled. The model changes after every round
(what it revealed was released), so old rewards go stale; both bandits therefore DISCOUNT their statistics by γ
at the start of every round (discounted UCB, Garivier & Moulines 2011; γ = 1 is the stationary textbook case)."""

from __future__ import annotations

import math

import numpy as np
import torch


class UCB1:
    """UCB1 (Auer et al. 2002): pull arg max_i  mean_i + c·sqrt(2·ln N / n_i); arms never pulled come first."""

    def __init__(self, n_arms: int, c: float = 1.0, discount: float = 1.0, seed: int = 0) -> None:
        self.counts = np.zeros(n_arms)
        self.sums = np.zeros(n_arms)
        self.c = c
        self.discount = discount
        self.rng = np.random.default_rng(seed)

    def new_round(self) -> None:
        self.counts *= self.discount
        self.sums *= self.discount

    def scores(self) -> np.ndarray:
        total = max(self.counts.sum(), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(self.counts > 0, self.sums / self.counts, 0.0)
            bonus = np.where(self.counts > 0, self.c * np.sqrt(2 * math.log(max(total, 1.0 + 1e-9)) / self.counts),
                             np.inf)
        return mean + bonus

    def select(self, k: int) -> list[int]:
        """The k arms of highest upper confidence bound; ties (e.g. all unpulled arms) broken at random."""
        s = self.scores()
        jitter = self.rng.random(len(s)) * 1e-9
        order = np.lexsort((-jitter, -s))  # primary key: score (descending), then random
        return order[: min(k, len(s))].tolist()

    def update(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1
        self.sums[arm] += reward

    def fit(self) -> None:
        """UCB1 keeps running sums only: nothing to refit."""

    def means(self) -> np.ndarray:
        return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1e-12), np.nan)


class NeuralUCB:
    """NeuralUCB (Zhou et al., ICML 2020) over instruction embeddings x_i: a one-hidden-layer MLP f(x; θ) predicts
    the reward, and the arm's score is f(x_i) + ν·sqrt(g_iᵀ Z⁻¹ g_i / m), g_i = ∇_θ f(x_i), Z = λI + Σ g gᵀ over the
    pulls so far (diagonal approximation, as the authors' code). After each round the network is refit on all
    observed (x, reward) pairs (discounted by γ per round through sample weights) with Adam.

    `hidden` m (32), `nu` ν (exploration scale), `lam` λ (prior precision), `steps`/`lr` of each refit."""

    def __init__(self, features: np.ndarray, hidden: int = 32, nu: float = 1.0, lam: float = 1.0, lr: float = 1e-2,
                 steps: int = 100, discount: float = 1.0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.as_tensor(features, dtype=torch.float32)  # (n_arms, d)
        d = self.x.shape[1]
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1] if p.ndim > 1 else hidden)))
        self.m, self.nu, self.lam, self.lr, self.steps, self.discount = hidden, nu, lam, lr, steps, discount
        n_params = sum(p.numel() for p in self.net.parameters())
        self.z = torch.full((n_params,), lam)  # diagonal of Z
        self.obs: list[tuple[int, float, float]] = []  # (arm, reward, weight)
        self.counts = np.zeros(len(self.x))
        self.sums = np.zeros(len(self.x))

    def _grad(self, i: int) -> tuple[float, torch.Tensor]:
        self.net.zero_grad()
        out = self.net(self.x[i:i + 1]).squeeze()
        out.backward()
        g = torch.cat([p.grad.flatten() for p in self.net.parameters()])
        return float(out.detach()), g

    def new_round(self) -> None:
        self.obs = [(a, r, w * self.discount) for a, r, w in self.obs]
        self.counts *= self.discount
        self.sums *= self.discount

    def scores(self) -> np.ndarray:
        out = np.zeros(len(self.x))
        for i in range(len(self.x)):
            f, g = self._grad(i)
            out[i] = f + self.nu * math.sqrt(float((g * g / self.z).sum()) / self.m)
        return out

    def select(self, k: int) -> list[int]:
        return np.argsort(-self.scores(), kind="stable")[: min(k, len(self.x))].tolist()

    def update(self, arm: int, reward: float) -> None:
        _, g = self._grad(arm)
        self.z += g * g
        self.obs.append((arm, reward, 1.0))
        self.counts[arm] += 1
        self.sums[arm] += reward

    def fit(self) -> None:
        """Refit f on every observation so far (weighted by its discount), from the current weights."""
        if not self.obs:
            return
        idx = torch.tensor([a for a, _, _ in self.obs])
        y = torch.tensor([r for _, r, _ in self.obs])
        w = torch.tensor([w for _, _, w in self.obs])
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        for _ in range(self.steps):
            opt.zero_grad()
            pred = self.net(self.x[idx]).squeeze(-1)
            loss = (w * (pred - y) ** 2).sum() / w.sum().clamp_min(1e-12)
            loss.backward()
            opt.step()

    def means(self) -> np.ndarray:
        return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1e-12), np.nan)
