"""The engine calls that change residency: loads, evictions, drains, trims.

Every change runs under the engine's swap lock (shared by all gateway replicas, see
`swaplock`) and starts with a fresh look at the engine (`Residency.look`), so the decision
"is there room, which slot goes" rests on what the engine holds and runs *now*, not on a
second-old view: capacity is never exceeded by two replicas filling the same free slot, and
a version the engine reports running or waiting is never unloaded.

A load of a version the engine already lists (another replica was faster) is a hit; vLLM's
"already loaded" answer to a load is one too. A load counts only once the engine lists the
version (an engine that answers 200 without registering is caught).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from server.engines.residency import Residency
from server.engines.slots import Demand, EngineSlots, Slot, SlotState
from server.engines.swaplock import SwapLocks
from server.errors import AdapterLoadFailed, LoragateError, NotFound, Unavailable, UpstreamError
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion

log = logging.getLogger(__name__)

FAILED_LOAD_BACKOFF_S = 1.0  # after a refused load; doubles on each failure in a row ...
MAX_BACKOFF_S = 60.0  # ... up to this

Pins = Callable[[], Mapping[str, AdapterVersion]]


class NoRoom(Unavailable):
    """Raised to the requests waiting on a load when, under the lock, the engine turned out
    to have no idle slot after all (they go back to waiting until their deadline)."""


@dataclass(frozen=True)
class ColdLoadHold:
    """While the gateway thrashes (adapter loads per adapter request over the metrics window
    above `ratio`), a cold load waits `seconds` before it evicts anything."""

    ratio: float
    seconds: float

    def applies(self, metrics: Metrics) -> bool:
        requests = metrics.adapter_requests.count()
        return requests > 0 and metrics.swaps.count() / requests > self.ratio


class Swaps:
    """Loads, evictions, drains and trims over the registry's engines."""

    def __init__(
        self,
        engines: dict[str, EngineSlots],
        metrics: Metrics,
        residency: Residency,
        locks: SwapLocks,
        *,
        clock: Callable[[], float],
        check: Callable[[AdapterVersion], Awaitable[None]] | None,
        pins: Pins,
        thrash_window_s: float,
        wait_s: float,
        demand: Demand | None = None,
        hold: ColdLoadHold | None = None,
    ) -> None:
        self.engines = engines
        self.demand = demand  # evict by recent demand (None: least recently used)
        self.hold = hold
        self.metrics = metrics
        self.residency = residency
        self.locks = locks
        self._clock = clock
        self._check = check  # runs before anything is evicted: a broken version costs no slot
        self._pins = pins
        self.thrash_window_s = thrash_window_s
        self.wait_s = wait_s  # the longest a load waits for a drain or the lock, seconds
        self._tasks: set[asyncio.Task[None]] = set()

    # --- slots -----------------------------------------------------------------------------

    def start_load(self, engine: str, version: AdapterVersion, drained: Slot | None) -> None:
        """A LOADING slot for `version` and the task that fills it (evicting `drained` once it
        is idle, if given)."""
        eng = self.engines[engine]
        slot = Slot(
            key=version.engine_name,
            adapter=version.name,
            state=SlotState.LOADING,
            done=asyncio.get_running_loop().create_future(),
        )
        # Nobody may be waiting when a prewarm's load fails: mark the exception retrieved.
        slot.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        eng.slots[slot.key] = slot
        task = asyncio.create_task(self._fill(engine, slot, version, drained))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def adopted(self, key: str, now: float, epoch: int) -> Slot:
        """A READY slot for a version the engine lists that this gateway did not load."""
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return Slot(key, key.partition("@")[0], SlotState.READY, done, now, now, epoch)

    @staticmethod
    def begin(victim: Slot, state: SlotState) -> None:
        """`victim` starts DRAINING or UNLOADING: requests for it wait on its new `done`."""
        victim.state = state
        victim.done = asyncio.get_running_loop().create_future()

    def restore(self, engine: str, victim: Slot) -> None:
        """A drain or unload did not happen (or may not have): the victim stays READY."""
        victim.state = SlotState.READY
        if not victim.done.done():
            victim.done.set_result(None)
        if engine in self.engines:
            self.engines[engine].notify()

    def set_resident(self, engine: str) -> None:
        eng = self.engines.get(engine)
        if eng is not None:
            ready = eng.count(SlotState.READY) + eng.count(SlotState.DRAINING)
            self.metrics.resident_adapters.labels(engine).set(ready)

    # --- the load task ---------------------------------------------------------------------

    async def _fill(
        self, engine: str, slot: Slot, version: AdapterVersion, drained: Slot | None
    ) -> None:
        eng = self.engines[engine]
        deadline = time.monotonic() + self.wait_s
        try:
            await self._check_version(version)
            if self.hold is not None and self.hold.applies(self.metrics):
                # Thrashing: let this version's requests gather on the load, and let a victim
                # that gets a request meanwhile stay, before anything is evicted for it.
                await asyncio.sleep(self.hold.seconds)
            elapsed, loaded = await self._attempts(engine, eng, slot, version, drained, deadline)
        except Exception as exc:
            if drained is not None and drained.state is SlotState.DRAINING:
                self.restore(engine, drained)
            self._finish_failed(engine, eng, slot, exc)
            return
        self._finish_loaded(engine, eng, slot, elapsed, loaded)

    async def _attempts(
        self,
        engine: str,
        eng: EngineSlots,
        slot: Slot,
        version: AdapterVersion,
        drained: Slot | None,
        deadline: float,
    ) -> tuple[float, bool]:
        while True:
            if drained is not None:
                while drained.inflight > 0:
                    await self._until_changed(eng, slot, deadline)
            async with self.locks.hold(eng.client.url, deadline):
                outcome = await self._swap_in(engine, eng, slot, version, drained)
            if outcome is not None:
                return outcome
            await self._pause(slot, deadline)  # drained: still busy for another gateway

    async def _swap_in(
        self,
        engine: str,
        eng: EngineSlots,
        slot: Slot,
        version: AdapterVersion,
        drained: Slot | None,
    ) -> tuple[float, bool] | None:
        """Under the lock: room for `slot` (evictions), then the load. (seconds, True) once
        loaded; (0.0, False) when the engine already held it; None while `drained` is still
        running or waiting on the engine (for another gateway)."""
        view = await self.residency.look(engine)  # applied to `eng` by the registry
        if not view.healthy:
            raise Unavailable(f"engine {engine} does not answer", retry_after_s=5)
        if slot.key in view.held:  # another gateway loaded it meanwhile: nothing to evict
            self.metrics.adapter_already_loaded.labels(engine).inc()
            if drained is not None and drained.state is SlotState.DRAINING:
                self.restore(engine, drained)
            return 0.0, False
        victims: list[Slot] = []
        if drained is not None:
            if drained.key not in view.held:
                self._gone(engine, eng, drained)  # another gateway unloaded it meanwhile
            elif drained.key in eng.busy or drained.inflight:
                return None
            else:
                victims.append(drained)
        pins = self._pins()
        while len(view.held) - len(victims) >= eng.capacity:
            victim = eng.victim(pins, self.demand, self._clock())
            if victim is None:
                for chosen in victims:
                    self.restore(engine, chosen)
                raise NoRoom(f"no idle slot on {engine}", retry_after_s=1)
            self.begin(victim, SlotState.UNLOADING)
            victims.append(victim)
        for i, victim in enumerate(victims):
            try:
                await self._unload(engine, victim)
            except LoragateError:
                for rest in victims[i + 1 :]:
                    self.restore(engine, rest)
                raise
        return await self._load_call(engine, eng, slot, version)

    async def _until_changed(self, eng: EngineSlots, slot: Slot, deadline: float) -> None:
        """Wait for a change on the engine; `NoRoom` at `deadline` or once nobody waits."""
        remaining = self._remaining(slot, deadline)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(eng.changed.wait(), remaining)

    async def _pause(self, slot: Slot, deadline: float) -> None:
        """Between two looks at an engine while a drained slot is busy there."""
        await asyncio.sleep(min(self._remaining(slot, deadline), self.residency.interval_s / 4))

    @staticmethod
    def _remaining(slot: Slot, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or slot.waiters == 0:
            raise NoRoom("the drained slot did not become idle in time", retry_after_s=1)
        return remaining

    async def _load_call(
        self, engine: str, eng: EngineSlots, slot: Slot, version: AdapterVersion
    ) -> tuple[float, bool]:
        start = self._clock()
        try:
            await eng.client.load_lora(slot.key, str(version.path))
            failure: LoragateError | None = None
        except AdapterLoadFailed as exc:
            failure = exc  # vLLM's "already loaded" is a success if the engine lists it
        elapsed = self._clock() - start
        listed = {m.id for m in await eng.client.models()}
        self.residency.kick(engine)
        if slot.key not in listed:
            raise failure or AdapterLoadFailed(
                f"engine {engine} answered success loading {slot.key} but does not list it"
            )
        if failure is not None:
            self.metrics.adapter_already_loaded.labels(engine).inc()
            return 0.0, False
        return elapsed, True

    async def _check_version(self, version: AdapterVersion) -> None:
        if self._check is None:
            return
        try:
            await self._check(version)
        except Unavailable:
            raise  # e.g. VersionNotReady (files still landing): the client gets that 503
        except LoragateError as exc:
            msg = f"{version.engine_name} refused before loading: {exc.message}"
            raise AdapterLoadFailed(msg) from None

    def _finish_loaded(
        self, engine: str, eng: EngineSlots, slot: Slot, elapsed: float, loaded: bool
    ) -> None:
        now = self._clock()
        if loaded:  # else the engine already held it (another gateway loaded it)
            self.metrics.adapter_load_seconds.labels(engine).observe(elapsed)
            self.metrics.adapter_loads.labels(engine, slot.adapter).inc()
            self.metrics.swaps.add()
            evicted = eng.evicted_at.pop(slot.key, None)
            if evicted is not None and now - evicted <= self.thrash_window_s:
                self.metrics.adapter_thrash.labels(slot.adapter).inc()
        eng.failed.pop(slot.key, None)
        slot.state = SlotState.READY
        slot.last_used = slot.loaded_at = now
        slot.ready_epoch = self.residency.epoch(engine)
        slot.done.set_result(None)
        self.set_resident(engine)
        eng.notify()
        log.info("loaded", extra={"engine": engine, "adapter": slot.key, "seconds": elapsed})

    def _finish_failed(self, engine: str, eng: EngineSlots, slot: Slot, exc: Exception) -> None:
        error = exc if isinstance(exc, LoragateError) else UpstreamError(repr(exc))
        if not isinstance(error, NoRoom | Unavailable):
            self._back_off(eng, slot.key, error)
            self.metrics.adapter_load_failures.labels(engine, slot.adapter).inc()
            log.warning(
                "load failed", extra={"engine": engine, "adapter": slot.key, "error": str(error)}
            )
        if eng.slots.get(slot.key) is slot:
            del eng.slots[slot.key]
        slot.done.set_exception(error)
        eng.notify()

    def _back_off(self, eng: EngineSlots, key: str, error: LoragateError) -> None:
        """A refused load is not retried by every request that wants it: the next attempt
        waits FAILED_LOAD_BACKOFF_S, doubling on each failure in a row up to the maximum."""
        previous = eng.failed.get(key)
        backoff = min(MAX_BACKOFF_S, previous[1] * 2) if previous else FAILED_LOAD_BACKOFF_S
        eng.failed[key] = (self._clock() + backoff, backoff, error)

    # --- evictions -------------------------------------------------------------------------

    def _gone(self, engine: str, eng: EngineSlots, victim: Slot) -> None:
        """`victim` left the engine without us (another gateway unloaded it)."""
        if eng.slots.get(victim.key) is victim:
            del eng.slots[victim.key]
        if not victim.done.done():
            victim.done.set_result(None)
        self.set_resident(engine)

    async def _unload(self, engine: str, victim: Slot) -> None:
        """Unload `victim` (already DRAINING or UNLOADING); the engine not holding it is fine.
        Raises the engine's error, with the victim back to READY."""
        eng = self.engines[engine]
        try:
            with contextlib.suppress(NotFound):  # another gateway unloaded it: the slot is free
                await eng.client.unload_lora(victim.key)
        except LoragateError:
            self.restore(engine, victim)
            raise
        if eng.slots.get(victim.key) is victim:
            del eng.slots[victim.key]
        eng.evicted_at[victim.key] = self._clock()
        eng.gone_epoch[victim.key] = self.residency.epoch(engine)
        self.metrics.adapter_evictions.labels(engine, victim.adapter).inc()
        self.set_resident(engine)
        victim.done.set_result(None)
        self.residency.kick(engine)
        log.info("evicted", extra={"engine": engine, "adapter": victim.key})

    async def evict_now(self, engine: str, victim: Slot) -> bool:
        """Unload an idle `victim` under the lock (retire, trim). False if it failed."""
        eng = self.engines[engine]
        self.begin(victim, SlotState.UNLOADING)
        try:
            async with self.locks.hold(eng.client.url, time.monotonic() + self.wait_s):
                await self._unload(engine, victim)
        except LoragateError as exc:
            if victim.state is SlotState.UNLOADING:
                self.restore(engine, victim)
            log.warning("unload failed", extra={"engine": engine, "error": exc.message})
            return False
        return True

    async def trim(self, engine: str) -> bool:
        """A fresh look, then evict idle versions while the engine holds more than its
        capacity (loaded by hand, or a smaller capacity configured). False if it is down."""
        eng = self.engines.get(engine)
        if eng is None:
            return False
        async with self.locks.hold(eng.client.url, time.monotonic() + self.wait_s):
            view = await self.residency.look(engine)
            if not view.healthy:
                return False
            excess = len(view.held) - eng.capacity
            while excess > 0 and (victim := eng.victim(self._pins(), self.demand, self._clock())):
                self.begin(victim, SlotState.UNLOADING)
                try:
                    await self._unload(engine, victim)
                except LoragateError:
                    break
                excess -= 1
        return True

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
