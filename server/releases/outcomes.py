"""What the gateway saw of each version's requests while its adapter runs a canary: errors,
latency and output checks over a sliding window, for `server.releases.canary` to compare.

`OutcomeLog` is the gateway's outcome sink (`server.serving.outcomes.OutcomeSink`, wired by the
runtime): the gateway reports every finished request; only versions of adapters with a live
canary are kept (stable, canary and pinned calls alike), at most `max_samples` per version.
Per gateway: several gateways each judge their own share of the traffic.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from server.releases.checks import PASSED, Checks
from server.store.snapshot import AdapterVersion, Snapshot

MAX_SAMPLES = 20_000  # per version: p99 over up to this many requests; memory ~2 MB


@dataclass(frozen=True)
class Sample:
    at: float  # time.time() seconds, comparable with the channels' UTC timestamps
    failed: bool  # 5xx: engine error, timeout, no capacity
    ttft_s: float | None  # streams: request to the first byte
    total_s: float  # request to the last byte
    violation: bool  # the answer failed an output check of the version's manifest


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class WindowStats:
    """One version's outcomes in a window. Latencies are of its successful requests."""

    requests: int = 0
    errors: int = 0
    violations: int = 0
    total_s: tuple[float, ...] = ()
    ttft_s: tuple[float, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def violation_rate(self) -> float:
        answered = self.requests - self.errors
        return self.violations / answered if answered else 0.0

    def p(self, q: float, ttft: bool = False) -> float | None:
        return percentile(list(self.ttft_s if ttft else self.total_s), q)

    @classmethod
    def of(cls, samples: list[Sample]) -> WindowStats:
        ok = [s for s in samples if not s.failed]
        return cls(
            requests=len(samples),
            errors=len(samples) - len(ok),
            violations=sum(s.violation for s in ok),
            total_s=tuple(s.total_s for s in ok),
            ttft_s=tuple(s.ttft_s for s in ok if s.ttft_s is not None),
        )


class OutcomeLog:
    """Recent outcomes per version (`name@version`) of the adapters under a canary."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        checks: Checks | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        self._snapshot = snapshot
        self.checks = checks or Checks()
        self._clock = clock
        self._max = max_samples
        self._samples: dict[str, deque[Sample]] = {}

    def watching(self, version: AdapterVersion) -> bool:
        adapter = self._snapshot().adapters.get(version.name)
        canary = adapter.channels.canary if adapter is not None else None
        return canary is not None and canary.weight > 0

    # --- OutcomeSink --------------------------------------------------------------------

    def wants_text(self, version: AdapterVersion) -> bool:
        return self.checks.declared(version) and self.watching(version)

    def record(
        self,
        version: AdapterVersion,
        *,
        failed: bool,
        ttft_s: float | None,
        total_s: float,
        text: str | None,
    ) -> None:
        if not self.watching(version):
            return
        result = PASSED if text is None or failed else self.checks.apply(version, text)
        violation = result.schema_error or result.policy_violation
        samples = self._samples.get(version.engine_name)
        if samples is None:
            samples = self._samples[version.engine_name] = deque(maxlen=self._max)
        samples.append(Sample(self._clock(), failed, ttft_s, total_s, violation))

    # --- reading ------------------------------------------------------------------------

    def stats(self, key: str, since: float) -> WindowStats:
        """Outcomes of `key` (`name@version`) at or after `since` (time.time() seconds);
        older ones are dropped."""
        samples = self._samples.get(key)
        if not samples:
            return WindowStats()
        while samples and samples[0].at < since:
            samples.popleft()
        return WindowStats.of(list(samples))

    def retain(self, keys: set[str]) -> None:
        """Forget every version but `keys` (those still under a canary)."""
        self._samples = {k: v for k, v in self._samples.items() if k in keys}
        self.checks.retain(keys)
