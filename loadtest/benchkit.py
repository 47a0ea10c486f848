"""What the standalone benchmarks (`loadtest/bench_*.py`) share: servers in their own
processes, a tiny adapter store, Poisson/Zipf arrivals, and reading Prometheus text.

(`loragate loadtest`, in `loadtest/tool/`, is the general tool; these benchmarks each answer
one question of an issue.)"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.tool.popularity import zipf_weights
from loadtest.tool.stats import percentile as percentile
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore

START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def process(
    args: list[str], health_url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process (its own GIL, as in production), ready once `health_url`
    answers 200; stopped on exit."""
    out = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(health_url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[:4]} did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        if log:
            out.close()  # type: ignore[union-attr]


def build_store(root: Path, names: list[str]) -> AdapterStore:
    """A store under `root` with one tiny version `v1` (stable) of each adapter in `names`."""
    from tests.factory import TINY_SPEC, add_version

    store = AdapterStore(root / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for name in names:
        add_version(store, root, name, "v1")
        store.update_channels(
            name, lambda c: Channels(stable="v1"), actor="bench", action="promote"
        )
    return store


@dataclass(frozen=True)
class Arrival:
    at_s: float  # seconds after the start
    model: str
    prompt: str
    max_tokens: int


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
    while (t := t + rng.expovariate(rate_per_s)) < duration_s:
        model = rng.choices(models, weights)[0]
        words = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(8))
        arrivals.append(Arrival(t, model, words, max_tokens))
    return arrivals


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample called `name` in a Prometheus text exposition."""
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )
