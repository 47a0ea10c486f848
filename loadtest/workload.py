"""Workloads: Zipf adapter popularity, Poisson arrivals, deterministic for a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Arrival:
    at_s: float  # seconds after the start
    model: str
    prompt: str
    max_tokens: int


def zipf_weights(n: int, s: float) -> list[float]:
    """P(rank k) ∝ 1 / k^s, k = 1..n (rank 1 = most popular)."""
    raw = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def poisson_zipf(
    models: list[str],
    *,
    rate_per_s: float,
    duration_s: float,
    zipf_s: float = 1.1,
    max_tokens: int = 16,
    seed: int = 0,
) -> list[Arrival]:
    """Arrivals with exponential gaps (Poisson process) and Zipf-distributed adapters."""
    rng = random.Random(seed)
    weights = zipf_weights(len(models), zipf_s)
    arrivals: list[Arrival] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            return arrivals
        model = rng.choices(models, weights)[0]
        words = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(8))
        arrivals.append(Arrival(t, model, words, max_tokens))
