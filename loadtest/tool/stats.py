"""Small statistics over request records: percentiles, summaries, time buckets."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from loadtest.tool.records import RequestRecord


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(value: float) -> float | None:
    """Seconds → milliseconds rounded for JSON; None for NaN."""
    return None if math.isnan(value) else round(value * 1000, 2)


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/max in ms."""
    return {
        "p50_ms": ms(percentile(values, 0.5)),
        "p90_ms": ms(percentile(values, 0.9)),
        "p99_ms": ms(percentile(values, 0.99)),
        "mean_ms": ms(statistics.fmean(values)) if values else None,
        "max_ms": ms(max(values)) if values else None,
    }


def measured(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Records outside the warm-up."""
    return [r for r in records if not r.warmup]


def buckets(
    records: Iterable[RequestRecord], width_s: float, *, by: str = "end"
) -> dict[int, list[RequestRecord]]:
    """Records grouped by `floor(time / width_s)`, time = end (default) or start."""
    grouped: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        t = record.end_s if by == "end" else record.start_s
        grouped[math.floor(t / width_s)].append(record)
    return grouped


def outcomes(records: Iterable[RequestRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.outcome for r in records).items()))
