"""What each engine says it holds and runs: the cached view every gateway replica reads.

The engines are the truth about residency. Per engine, `Residency` keeps the latest
`EngineView`: the LoRAs it lists (`/v1/models`), the ones running or waiting there and its
request counts (`/metrics`, see `scrape`), and whether it answers `/health`. One task per
engine refreshes it every `interval_s` (about a second) and soon after a `kick()` (this
gateway's own loads and unloads); nothing on a request's path ever waits for it. `look()`
fetches a fresh view now: the registry takes one under the engine's swap lock before it
evicts, so an eviction never rests on a second-old picture.

Every fetch carries an `epoch`, a per-engine counter taken when the fetch *starts*: a view
can only overrule what the registry did before that epoch (a slot that became ready after a
fetch started is not dropped because that fetch did not list it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from server.engines.client import EngineClient
from server.engines.scrape import EngineLoad, parse_engine_metrics
from server.errors import LoragateError

log = logging.getLogger(__name__)

ViewListener = Callable[[str, "EngineView"], None]


@dataclass(frozen=True)
class EngineView:
    """One engine as it answered a fetch that started at `epoch`."""

    epoch: int
    healthy: bool
    held: frozenset[str] = frozenset()  # LoRA names it lists (parent is the base model)
    load: EngineLoad = field(default_factory=EngineLoad)

    @property
    def busy(self) -> frozenset[str]:
        """LoRAs with a request running or waiting on the engine (any gateway's)."""
        return self.load.busy_loras


async def fetch_view(client: EngineClient, epoch: int) -> EngineView:
    """Health and listing of one engine (concurrently), then its metrics: last, so that an
    eviction decided on this view acts on the freshest picture of what runs there. An engine
    that does not answer, or answers `/health` with an error, is an unhealthy view."""
    try:
        healthy, models = await asyncio.gather(client.health(), client.models())
    except LoragateError:
        return EngineView(epoch, healthy=False)
    metrics = await _metrics_or_empty(client)
    held = frozenset(m.id for m in models if m.parent is not None)
    return EngineView(epoch, healthy, held, parse_engine_metrics(metrics))


async def _metrics_or_empty(client: EngineClient) -> str:
    # An engine without /metrics (or with it disabled) still has a listing: treat it as idle.
    try:
        return await client.metrics_text()
    except LoragateError:
        return ""


class _Tracked:
    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self.epoch = 0
        self.view: EngineView | None = None
        self.kicked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Residency:
    """Per engine, the latest `EngineView`; listeners hear every new one."""

    def __init__(self, interval_s: float = 1.0, min_gap_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s  # kicks never make an engine's refresh more frequent
        self._engines: dict[str, _Tracked] = {}
        self._listeners: list[ViewListener] = []

    def listen(self, listener: ViewListener) -> None:
        self._listeners.append(listener)

    def track(self, name: str, client: EngineClient) -> None:
        """Start watching `name` (no refresh task until `start`)."""
        if name not in self._engines:
            self._engines[name] = _Tracked(client)

    def start(self, name: str) -> None:
        """Refresh `name` every `interval_s` in a background task."""
        tracked = self._engines[name]
        if tracked.task is None:
            tracked.task = asyncio.create_task(self._refresh_loop(name, tracked))

    async def untrack(self, name: str) -> None:
        tracked = self._engines.pop(name, None)
        if tracked is not None and tracked.task is not None:
            tracked.task.cancel()
            await asyncio.gather(tracked.task, return_exceptions=True)

    def view(self, name: str) -> EngineView | None:
        tracked = self._engines.get(name)
        return tracked.view if tracked else None

    def epoch(self, name: str) -> int:
        """The epoch of the latest fetch started for `name` (0 before any)."""
        tracked = self._engines.get(name)
        return tracked.epoch if tracked else 0

    def kick(self, name: str) -> None:
        """Refresh `name` soon (its task wakes up); never waits."""
        tracked = self._engines.get(name)
        if tracked is not None:
            tracked.kicked.set()

    async def look(self, name: str) -> EngineView:
        """Fetch a fresh view of `name` now, publish it and return it."""
        tracked = self._engines[name]
        tracked.epoch += 1
        view = await fetch_view(tracked.client, tracked.epoch)
        self._publish(name, tracked, view)
        return view

    def _publish(self, name: str, tracked: _Tracked, view: EngineView) -> None:
        if self._engines.get(name) is not tracked:
            return  # untracked while fetching
        if tracked.view is not None and tracked.view.epoch > view.epoch:
            return  # a newer fetch finished first
        tracked.view = view
        for listener in self._listeners:
            listener(name, view)

    async def _refresh_loop(self, name: str, tracked: _Tracked) -> None:
        while True:
            tracked.kicked.clear()  # a kick during the fetch below wakes the next one at once
            try:
                await self.look(name)
            except Exception:
                log.exception("engine view refresh failed", extra={"engine": name})
            await asyncio.sleep(min(self.min_gap_s, self.interval_s))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracked.kicked.wait(), self.interval_s)

    async def aclose(self) -> None:
        for name in list(self._engines):
            await self.untrack(name)
