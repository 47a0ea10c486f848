"""Run a scenario: rounds alternating between targets, each round one workload sent open loop
(at its send times) or closed loop (a fixed number of clients), with loragate's metrics
scraped, admin actions at their times, and the live display refreshed.

Round r sends the same requests (seed + r) to every target, in the order A, B in even rounds
and B, A in odd ones, so drift on a shared machine does not always favour the same target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from loadtest.tool.actions import ActionRecord, ActionRunner
from loadtest.tool.client import Sender
from loadtest.tool.progress import LiveStats, NoProgress, Progress
from loadtest.tool.records import RequestRecord
from loadtest.tool.scenario import Scenario
from loadtest.tool.scrape import ScrapePoint, Scraper, deltas
from loadtest.tool.targets import Target, probe
from loadtest.tool.workload import RequestSpec, Workload

REFRESH_S = 0.5
Send = Callable[[RequestSpec], Coroutine[Any, Any, None]]
SIM_COUNTERS = ("loads", "unloads", "cpu_cache_reloads", "cpu_cache_evictions", "requests_failed")


@dataclass
class RoundResult:
    target: str
    index: int
    started_at: str  # ISO 8601, UTC
    send_s: float = 0.0  # when sending stopped, seconds into the round
    wall_s: float = 0.0  # until the last answer (or the drain limit)
    abandoned: int = 0  # still unanswered after drain_s (cancelled, not recorded)
    scrapes: list[ScrapePoint] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    sim_engine: dict[str, float] = field(default_factory=dict)  # /sim/stats deltas


@dataclass
class RunResult:
    scenario: Scenario
    targets: list[Target]
    rounds: list[RoundResult]
    records: list[RequestRecord]
    started_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _session() -> aiohttp.ClientSession:
    # No connection limit: an open-loop generator must not queue requests on its own side.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


async def run(
    scenario: Scenario,
    targets: list[Target],
    adapters: list[str],
    progress: Progress | None = None,
) -> RunResult:
    """Every round of `scenario` against `targets`; `adapters` in popularity order."""
    shown = progress or NoProgress()
    async with _session() as session:
        need_base = scenario.workload.base_share > 0
        targets = [await probe(session, t, need_base) for t in targets]
    result = RunResult(scenario, targets, [], [], _now())
    live: list[LiveStats] = []
    shown.start()
    try:
        for index in range(scenario.rounds):
            order = targets if index % 2 == 0 else targets[::-1]
            for target in order:
                runner = RoundRunner(scenario, target, index, adapters, live, shown)
                result.rounds.append(await runner.run(result.records))
    finally:
        shown.refresh(live)
        shown.stop()
    return result


class RoundRunner:
    """One round: one target, one workload."""

    def __init__(
        self,
        scenario: Scenario,
        target: Target,
        index: int,
        adapters: list[str],
        live: list[LiveStats],
        progress: Progress,
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.index = index
        self.workload = Workload(scenario, adapters, seed=scenario.workload.seed + index)
        self.stats = LiveStats(target.name, index)
        self.live = live
        self.progress = progress
        self.pending: set[asyncio.Task[None]] = set()

    async def run(self, records: list[RequestRecord]) -> RoundResult:
        result = RoundResult(self.target.name, self.index, _now())
        async with _session() as session:
            sim_before = await _sim_counters(session, self.target.sim_urls)
            start = time.perf_counter()
            self.stats.started = start
            self.live.append(self.stats)
            sender = Sender(
                session,
                self.target,
                self.scenario.workload.endpoint,
                self.scenario.workload.timeout_s,
            )
            scraper = self._scraper(session, start)
            actions = ActionRunner(session, self.target, start)
            background = [asyncio.create_task(self._refresh(scraper))]
            if scraper is not None:
                background.append(asyncio.create_task(scraper.run()))
            action_task = asyncio.create_task(actions.run(self.scenario.actions))
            try:
                await self._drive(lambda spec: self._send(sender, spec, start, records), start)
                result.send_s = time.perf_counter() - start
                result.abandoned = await self._drain()
                await action_task
            finally:
                for task in (*background, action_task):
                    task.cancel()
                await asyncio.gather(*background, action_task, return_exceptions=True)
            result.wall_s = time.perf_counter() - start
            if scraper is not None:
                await scraper.poll_once()
                result.scrapes = scraper.points
            result.actions = actions.records
            sim_after = await _sim_counters(session, self.target.sim_urls)
        result.sim_engine = {k: sim_after[k] - sim_before.get(k, 0.0) for k in sim_after}
        self.stats.finished = True
        return result

    def _scraper(self, session: aiohttp.ClientSession, start: float) -> Scraper | None:
        if self.target.kind != "loragate":
            return None
        token = self.target.admin_token or self.target.api_key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        interval = self.scenario.scrape_interval_s
        return Scraper(session, self.target.urls, interval, start, headers)

    async def _send(
        self, sender: Sender, spec: RequestSpec, start: float, records: list[RequestRecord]
    ) -> None:
        self.stats.sent += 1
        record = await sender.send(spec, self.index, start, self.scenario.bounds.warmup_s)
        records.append(record)
        self.stats.add(record)

    async def _drive(self, send: Send, start: float) -> None:
        specs = self.workload.requests()
        duration = self.scenario.bounds.duration_s
        deadline = start + duration if duration is not None else None
        if self.scenario.arrivals.open_loop:
            await self._open_loop(specs, send, start)
        else:
            clients = self.scenario.arrivals.clients or 1
            await asyncio.gather(*(self._client(specs, send, deadline) for _ in range(clients)))

    async def _open_loop(
        self,
        specs: Iterator[RequestSpec],
        send: Send,
        start: float,
    ) -> None:
        for spec in specs:
            assert spec.at_s is not None
            delay = spec.at_s - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(spec))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _client(
        self,
        specs: Iterator[RequestSpec],
        send: Send,
        deadline: float | None,
    ) -> None:
        for spec in specs:  # one shared iterator: each client takes the next request
            if deadline is not None and time.perf_counter() >= deadline:
                return
            await send(spec)

    async def _drain(self) -> int:
        """Wait up to drain_s for open-loop answers; cancel the rest, return how many."""
        if not self.pending:
            return 0
        _, late = await asyncio.wait(set(self.pending), timeout=self.scenario.bounds.drain_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    async def _refresh(self, scraper: Scraper | None) -> None:
        while True:
            if scraper is not None and scraper.points:
                self.stats.scraped = deltas(scraper.points)
            self.progress.refresh(self.live)
            await asyncio.sleep(REFRESH_S)


async def _sim_counters(session: aiohttp.ClientSession, urls: tuple[str, ...]) -> dict[str, float]:
    """Sum of the simulated engines' /sim/stats counters (empty for other targets)."""
    total: dict[str, float] = {}
    for url in urls:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with session.get(f"{url}/sim/stats") as response:
                stats: dict[str, Any] = await response.json()
            for key in SIM_COUNTERS:
                total[key] = total.get(key, 0.0) + float(stats.get(key, 0))
    return total
