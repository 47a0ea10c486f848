"""Which adapter a request names: weighted draws (uniform, Zipf), a cycle in bursts, or a trace.

A `Pick` carries the adapter's popularity rank (1 = most popular) for the TTFT-by-rank plot,
and `cold` when the pattern guarantees the adapter is not resident (the first request of a
burst in a cycle over more adapters than slots); `None` when nothing is known.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loadtest.tool.scenario import Popularity


class TraceError(ValueError):
    """Raised for a trace file that cannot be read (the message names the line)."""


@dataclass(frozen=True)
class Pick:
    adapter: str
    rank: int
    cold: bool | None = None


@dataclass(frozen=True)
class TraceEvent:
    at_s: float
    model: str


class Picker(Protocol):
    def pick(self, rng: random.Random) -> Pick: ...


def zipf_weights(n: int, alpha: float) -> list[float]:
    """P(rank k) ∝ 1 / k^alpha, k = 1..n, normalised."""
    raw = [1.0 / (k**alpha) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class WeightedPicker:
    """Independent draws with the given weights (rank = position in `adapters`, from 1)."""

    def __init__(self, adapters: list[str], weights: list[float]) -> None:
        self.adapters = adapters
        self._cumulative = list(itertools.accumulate(weights))

    def pick(self, rng: random.Random) -> Pick:
        x = rng.random() * self._cumulative[-1]
        index = min(bisect.bisect_right(self._cumulative, x), len(self.adapters) - 1)
        return Pick(self.adapters[index], index + 1)


class CyclePicker:
    """adapter 1 x burst, adapter 2 x burst, …, adapter n x burst, adapter 1 x burst, …"""

    def __init__(self, adapters: list[str], burst: int) -> None:
        self.adapters = adapters
        self.burst = burst
        self._count = itertools.count()

    def pick(self, rng: random.Random) -> Pick:
        n = next(self._count)
        index = (n // self.burst) % len(self.adapters)
        # The first lap starts from whatever happens to be resident, so only later laps count.
        cold = n % self.burst == 0 if n >= self.burst * len(self.adapters) else None
        return Pick(self.adapters[index], index + 1, cold)


class TracePicker:
    """The trace's models in order, round and round (rank: by request count in the trace)."""

    def __init__(self, events: list[TraceEvent]) -> None:
        if not events:
            raise TraceError("the trace has no requests")
        counts = Counter(e.model for e in events)
        self.adapters = [model for model, _ in counts.most_common()]
        self._rank = {model: i + 1 for i, model in enumerate(self.adapters)}
        self._models: Iterator[str] = itertools.cycle([e.model for e in events])

    def pick(self, rng: random.Random) -> Pick:
        model = next(self._models)
        return Pick(model, self._rank[model])


def read_trace(path: Path) -> list[TraceEvent]:
    """CSV `timestamp_s,model` (a header line is allowed) or JSON lines; sorted by time,
    shifted so that the first request is at 0. Raises `TraceError`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TraceError(f"{path}: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    parse = _json_line if lines and lines[0].lstrip().startswith("{") else _csv_line
    events: list[TraceEvent] = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(parse(line))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            if number == 1 and parse is _csv_line:
                continue  # a header
            raise TraceError(f"{path}:{number}: {exc}") from None
    events.sort(key=lambda e: e.at_s)
    start = events[0].at_s if events else 0.0
    return [TraceEvent(e.at_s - start, e.model) for e in events]


def _json_line(line: str) -> TraceEvent:
    item = json.loads(line)
    return TraceEvent(float(item["timestamp_s"]), str(item["model"]))


def _csv_line(line: str) -> TraceEvent:
    row = next(csv.reader([line]))
    return TraceEvent(float(row[0]), row[1].strip())


def picker_for(popularity: Popularity, adapters: list[str]) -> Picker:
    """The picker a scenario asks for. Raises `TraceError` for an unreadable trace and
    ValueError for an empty adapter list."""
    if popularity.kind == "trace":
        assert popularity.trace is not None  # validated by Popularity
        return TracePicker(read_trace(popularity.trace))
    hot = adapters[: popularity.hot_set] if popularity.hot_set else adapters
    if not hot:
        raise ValueError("no adapters to send requests to: list workload.adapters")
    if popularity.hot_set is not None and popularity.hot_set > len(adapters):
        raise ValueError(f"hot_set {popularity.hot_set} > the {len(adapters)} adapters listed")
    if popularity.kind == "cycle":
        return CyclePicker(hot, popularity.burst)
    if popularity.kind == "uniform":
        return WeightedPicker(hot, [1.0] * len(hot))
    return WeightedPicker(hot, zipf_weights(len(hot), popularity.alpha))
