"""What loragate's `/metrics` says during a run: adapter loads (per engine), evictions,
thrash reloads, the swap-to-request ratio, load-call and load-wait times.

`parse` is a pure function of the exposition text; `Scraper` polls every URL of a target
on an interval and keeps the points (one per URL per poll) for the plots and the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

# sample name -> key in a point (summed over labels); loads also per engine.
SUMMED = {
    "loragate_adapter_loads_total": "loads",
    "loragate_adapter_evictions_total": "evictions",
    "loragate_adapter_thrash_total": "thrash",
    "loragate_adapter_load_failures_total": "load_failures",
    "loragate_resident_adapters": "resident",
    "loragate_adapter_slots": "slots",
    "loragate_inflight_requests": "inflight",
    "loragate_adapter_load_seconds_sum": "load_seconds_sum",
    "loragate_adapter_load_seconds_count": "load_seconds_count",
    "loragate_load_wait_seconds_sum": "load_wait_seconds_sum",
    "loragate_load_wait_seconds_count": "load_wait_seconds_count",
    "loragate_swap_request_ratio": "swap_ratio",
}
COUNTERS = ("loads", "evictions", "thrash", "load_failures")


def parse(text: str) -> dict[str, float]:
    """Totals of the registry's metrics; `loads@<engine>` per engine; lookups by result."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = SUMMED.get(sample.name)
            if key is not None:
                values[key] = values.get(key, 0.0) + sample.value
            if sample.name == "loragate_adapter_loads_total":
                engine_key = f"loads@{sample.labels.get('engine', '')}"
                values[engine_key] = values.get(engine_key, 0.0) + sample.value
            elif sample.name == "loragate_registry_lookups_total":
                lookup_key = f"lookups_{sample.labels.get('result', '')}"
                values[lookup_key] = values.get(lookup_key, 0.0) + sample.value
    return values


@dataclass
class ScrapePoint:
    t_s: float  # since the start of the round
    url: str
    values: dict[str, float]


@dataclass
class Scraper:
    """Polls `urls` every `interval_s` until cancelled; failed polls are skipped."""

    session: aiohttp.ClientSession
    urls: tuple[str, ...]
    interval_s: float
    round_start: float
    headers: dict[str, str] = field(default_factory=dict)
    points: list[ScrapePoint] = field(default_factory=list)

    async def poll_once(self) -> None:
        for url in self.urls:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self.session.get(f"{url}/metrics", headers=self.headers) as response:
                    text = await response.text()
                if response.status == 200:
                    t = time.perf_counter() - self.round_start
                    self.points.append(ScrapePoint(t, url, parse(text)))

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    def latest(self) -> dict[str, float]:
        """Each URL's last point, summed (the live display)."""
        last: dict[str, dict[str, float]] = {}
        for point in self.points:
            last[point.url] = point.values
        total: dict[str, float] = {}
        for values in last.values():
            for key, value in values.items():
                total[key] = total.get(key, 0.0) + value
        return total


def deltas(points: list[ScrapePoint], since_s: float = 0.0) -> dict[str, float]:
    """Per URL, the last value minus the one of the last poll at or before `since_s` (the
    first poll if none was that early), summed over URLs: what happened during the measured
    part of a round, to within one scrape interval (counters and histogram sums)."""
    first: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, float]] = {}
    for point in points:
        if point.t_s <= since_s or point.url not in first:
            first[point.url] = point.values
        last[point.url] = point.values
    total: dict[str, float] = {}
    for url, end in last.items():
        start = first[url]
        for key, value in end.items():
            if key in ("resident", "slots", "inflight", "swap_ratio"):
                continue
            total[key] = total.get(key, 0.0) + value - start.get(key, 0.0)
    return total
