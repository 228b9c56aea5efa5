"""Thompson sampling on delayed rewards: the bandit mode's traffic allocation.

Each arm has a posterior over its mean reward: Beta(1 + successes, 1 + failures) while every
reward is 0 or 1 (the default reward: the served prediction was correct), else a normal
approximation N(mean, var/n) of the sample mean. The probability that each arm is best is
estimated by Monte Carlo draws from the posteriors (Thompson 1933; Russo et al. 2018, "A
Tutorial on Thompson Sampling"); traffic goes to the arms in proportion to it
("probability matching"), with a floor so every arm keeps being explored. The draws use a
generator seeded from the experiment's name and the number of rewards, so a replay gives the
same allocation as the live worker.

>>> arms = Posteriors(["a", "b"])
>>> for i in range(400):
...     _ = arms.update("a", float(i % 2 == 0)).update("b", float(i % 5 != 0))
>>> p = arms.prob_best(seed=1)
>>> p["b"] > 0.99
True
>>> allocation(p, min_share=0.05)
{'a': 0.05, 'b': 0.95}
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

DRAWS = 4000


class ArmPosterior:
    """Sufficient statistics of one arm's rewards."""

    __slots__ = ("n", "total", "squares", "binary")

    def __init__(self) -> None:
        self.n, self.total, self.squares, self.binary = 0, 0.0, 0.0, True

    def update(self, reward: float) -> None:
        self.n += 1
        self.total += reward
        self.squares += reward * reward
        if reward not in (0.0, 1.0):
            self.binary = False

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.binary:
            return rng.beta(1.0 + self.total, 1.0 + self.n - self.total, size)
        mean = self.total / self.n if self.n else 0.0
        var = (self.squares / self.n - mean * mean) if self.n > 1 else 1.0
        return rng.normal(mean, math.sqrt(max(var, 1e-12) / max(self.n, 1)), size)

    def describe(self) -> dict[str, Any]:
        if self.binary:
            return {"n": self.n, "posterior": "beta", "a": 1.0 + self.total,
                    "b": 1.0 + self.n - self.total,
                    "mean": (1.0 + self.total) / (2.0 + self.n)}
        mean = self.total / self.n if self.n else 0.0
        var = (self.squares / self.n - mean * mean) if self.n > 1 else 1.0
        # the normal posterior draw() samples from: its mean and standard deviation
        return {"n": self.n, "posterior": "normal", "mean": mean,
                "sd": math.sqrt(max(var, 1e-12) / max(self.n, 1))}


class Posteriors:
    """The posteriors of all arms of a bandit experiment."""

    def __init__(self, arms: list[str]) -> None:
        self.arms = {arm: ArmPosterior() for arm in arms}

    def update(self, arm: str, reward: float) -> "Posteriors":
        self.arms[arm].update(reward)
        return self

    @property
    def rewards(self) -> int:
        return sum(a.n for a in self.arms.values())

    def prob_best(self, seed: int) -> dict[str, float]:
        """P(arm has the highest mean reward), by Monte Carlo with a fixed seed."""
        rng = np.random.default_rng(seed)
        names = list(self.arms)
        draws = np.stack([self.arms[a].draw(rng, DRAWS) for a in names])
        wins = np.bincount(np.argmax(draws, axis=0), minlength=len(names))
        return {a: float(w) / DRAWS for a, w in zip(names, wins)}

    def describe(self) -> dict[str, Any]:
        return {arm: post.describe() for arm, post in self.arms.items()}

    def to_dict(self) -> dict[str, Any]:
        return {arm: [p.n, p.total, p.squares, p.binary] for arm, p in self.arms.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Posteriors":
        new = cls(list(d))
        for arm, (n, total, squares, binary) in d.items():
            post = new.arms[arm]
            post.n, post.total, post.squares, post.binary = int(n), float(total), float(squares), bool(binary)
        return new


def seed_for(experiment: str, rewards: int) -> int:
    """A reproducible seed for the draws made after ``rewards`` rewards."""
    digest = hashlib.sha256(f"{experiment}/{rewards}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def allocation(prob_best: dict[str, float], min_share: float) -> dict[str, float]:
    """Shares proportional to P(best), each at least ``min_share``, summing to 1 (rounded to
    1e-6, the last arm taking the remainder)."""
    arms = list(prob_best)
    k = len(arms)
    floor = min(min_share, 1.0 / k)
    free = 1.0 - floor * k
    total = sum(prob_best.values()) or 1.0
    raw = {a: floor + free * prob_best[a] / total for a in arms}
    shares = {a: round(raw[a], 6) for a in arms[:-1]}
    shares[arms[-1]] = round(1.0 - sum(shares.values()), 6)
    return shares
