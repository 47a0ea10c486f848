"""Which adapter versions are loaded on which engine: LRU over each engine's slots.

Per engine, `capacity` slots (its `max_cpu_loras`). `acquire` is a hit (touch the LRU), or
joins the one shared load of that version (single flight), or, when every slot is taken,
unloads the least recently used version that is not pinned and has nothing in flight or
waiting, then loads. If nothing can be evicted it waits up to `wait_timeout_s`, then raises
`Unavailable` (503 + Retry-After).

State lives in plain dicts mutated only between awaits (asyncio is single-threaded), so no
lock is needed; an `asyncio.Event` wakes requests waiting for a slot. The engine is the
truth: a load counts only once the engine lists the version, and `reconcile` re-reads
`/v1/models` at start, periodically and after an engine restart (re-warming pins).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from server.engines.client import EngineClient
from server.errors import AdapterLoadFailed, LoragateError, NotFound, Unavailable, UpstreamError
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion

log = logging.getLogger(__name__)


class SlotState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"


@dataclass
class Slot:
    key: str  # engine-side LoRA name, `name@version`
    adapter: str  # metric label: the adapter name (from the store)
    state: SlotState
    done: asyncio.Future[None]  # resolves when LOADING/UNLOADING ends
    last_used: float = 0.0
    inflight: int = 0
    waiters: int = 0  # requests waiting on this slot's load; they become in-flight on success


@dataclass(frozen=True)
class SlotView:
    """A read-only view of a slot, for admin listings and tests."""

    key: str
    state: str
    inflight: int
    pinned: bool
    last_used: float


@dataclass
class EngineSlots:
    """Residency of one engine."""

    client: EngineClient
    capacity: int
    slots: dict[str, Slot] = field(default_factory=dict)
    evicted_at: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    base_inflight: int = 0  # requests for the base model, which needs no slot

    def used(self) -> int:
        # An UNLOADING slot is always paired with the LOADING slot replacing it.
        return sum(1 for s in self.slots.values() if s.state is not SlotState.UNLOADING)

    def inflight(self) -> int:
        return self.base_inflight + sum(s.inflight for s in self.slots.values())

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Registry:
    """Adapter residency across engines."""

    def __init__(
        self,
        engines: dict[str, tuple[EngineClient, int]],
        metrics: Metrics,
        *,
        thrash_window_s: float = 60.0,
        wait_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[AdapterVersion], Awaitable[None]] | None = None,
    ) -> None:
        self.engines = {name: EngineSlots(c, cap) for name, (c, cap) in engines.items()}
        self.metrics = metrics
        self.thrash_window_s = thrash_window_s
        self.wait_timeout_s = wait_timeout_s
        self._clock = clock
        # Runs before anything is evicted for a load: a broken version never costs a slot.
        self._check = check
        self._pins: dict[str, AdapterVersion] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        for name, eng in self.engines.items():
            metrics.adapter_slots.labels(name).set(eng.capacity)
            metrics.resident_adapters.labels(name).set(0)

    # --- acquire / release ---------------------------------------------------------------

    async def acquire(self, engine: str, version: AdapterVersion | None) -> None:
        """Make `version` resident on `engine` and count one request in flight on it;
        `None` is the base model, which every engine always holds.

        Raises `Unavailable` when no slot frees up in time, `AdapterLoadFailed` when the
        engine refuses the version (the registry is left as it was).
        """
        eng = self.engines[engine]
        if version is None:
            eng.base_inflight += 1
            self.metrics.inflight_requests.labels(engine).inc()
            return
        key = version.engine_name
        start = self._clock()
        deadline = start + self.wait_timeout_s
        missed = False
        while True:
            slot = eng.slots.get(key)
            if slot is not None and slot.state is SlotState.READY:
                slot.inflight += 1
                slot.last_used = self._clock()
                self._observe_acquired(engine, missed, start)
                return
            missed = True
            if slot is not None and slot.state is SlotState.LOADING:
                await self._join_load(eng, slot)
                self._observe_acquired(engine, missed, start)
                return
            if slot is not None:  # UNLOADING: wait for it to go, then load it again
                await asyncio.shield(slot.done)
                continue
            if eng.used() < eng.capacity:
                self._start(self._load_into(engine, self._new_slot(eng, version), version))
                continue
            victim = self._victim(eng)
            if victim is not None:
                self._begin_unload(victim)
                slot = self._new_slot(eng, version)
                self._start(self._swap(engine, victim, slot, version))
                continue
            await self._wait_for_change(eng, deadline, key)

    def release(self, engine: str, version: AdapterVersion | None) -> None:
        """End one request's hold taken by `acquire`."""
        eng = self.engines[engine]
        self.metrics.inflight_requests.labels(engine).dec()
        if version is None:
            eng.base_inflight -= 1
            return
        slot = eng.slots.get(version.engine_name)
        if slot is not None:  # None: reconcile dropped it after an engine restart
            slot.inflight = max(0, slot.inflight - 1)
            slot.last_used = self._clock()
        eng.notify()

    def _observe_acquired(self, engine: str, missed: bool, start: float) -> None:
        self.metrics.inflight_requests.labels(engine).inc()
        self.metrics.adapter_requests.add()
        self.metrics.registry_lookups.labels(engine, "miss" if missed else "hit").inc()
        if missed:
            self.metrics.load_wait_seconds.labels(engine).observe(self._clock() - start)

    async def _join_load(self, eng: EngineSlots, slot: Slot) -> None:
        """Wait for a shared load; on success the loader has counted us in flight."""
        slot.waiters += 1
        try:
            await asyncio.shield(slot.done)
        except asyncio.CancelledError:
            if slot.done.done() and not slot.done.exception():
                slot.inflight -= 1  # counted by the loader; the request is gone
            else:
                slot.waiters -= 1
            eng.notify()
            raise

    async def _wait_for_change(self, eng: EngineSlots, deadline: float, key: str) -> None:
        remaining = deadline - self._clock()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(eng.changed.wait(), remaining)
            if self._clock() < deadline:
                return
        # The busy slots belong to other tenants' adapters: log them, never put them in the
        # answer.
        busy = ", ".join(f"{s.key}({s.inflight} in flight)" for s in eng.slots.values())
        log.warning(
            "no slot free", extra={"engine": eng.client.name, "adapter": key, "slots": busy}
        )
        raise Unavailable(
            f"no adapter slot free on {eng.client.name} for {key} within "
            f"{self.wait_timeout_s:g} s: every slot is pinned or busy",
            retry_after_s=max(1.0, self.wait_timeout_s),
        )

    def _victim(self, eng: EngineSlots) -> Slot | None:
        candidates = [
            s
            for s in eng.slots.values()
            if s.state is SlotState.READY
            and s.inflight == 0
            and s.waiters == 0
            and s.key not in self._pins
        ]
        return min(candidates, key=lambda s: s.last_used, default=None)

    def _new_slot(self, eng: EngineSlots, version: AdapterVersion) -> Slot:
        slot = Slot(
            key=version.engine_name,
            adapter=version.name,
            state=SlotState.LOADING,
            done=asyncio.get_running_loop().create_future(),
        )
        # Nobody may be waiting when a load fails during prewarm: mark the exception seen.
        slot.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        eng.slots[slot.key] = slot
        return slot

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- engine calls --------------------------------------------------------------------

    async def _swap(self, engine: str, victim: Slot, slot: Slot, version: AdapterVersion) -> None:
        eng = self.engines[engine]
        try:
            await self._check_version(version)
            await self._unload(engine, victim)
        except LoragateError as exc:
            # Nothing evicted (check failed), or the engine may still hold the victim: keep it.
            self._keep_resident(victim)
            self.metrics.adapter_load_failures.labels(engine, slot.adapter).inc()
            self._finish_failed(eng, slot, exc)
            return
        await self._load_into(engine, slot, version, checked=True)

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

    @staticmethod
    def _begin_unload(victim: Slot) -> None:
        """Mark `victim` leaving: requests for it wait on its new `done`, nothing evicts it."""
        victim.state = SlotState.UNLOADING
        victim.done = asyncio.get_running_loop().create_future()

    @staticmethod
    def _keep_resident(victim: Slot) -> None:
        """An unload did not happen (or may not have): the victim stays READY."""
        victim.state = SlotState.READY
        victim.done.set_result(None)

    async def _unload(self, engine: str, victim: Slot) -> None:
        eng = self.engines[engine]
        with contextlib.suppress(NotFound):  # already gone from the engine: the slot is free
            await eng.client.unload_lora(victim.key)
        del eng.slots[victim.key]
        eng.evicted_at[victim.key] = self._clock()
        self.metrics.adapter_evictions.labels(engine, victim.adapter).inc()
        self._set_resident(engine)
        victim.done.set_result(None)
        log.info("evicted", extra={"engine": engine, "adapter": victim.key})

    async def _load_into(
        self, engine: str, slot: Slot, version: AdapterVersion, checked: bool = False
    ) -> None:
        eng = self.engines[engine]
        try:
            if not checked:
                await self._check_version(version)
            start = self._clock()
            try:
                await eng.client.load_lora(slot.key, str(version.path))
                failure: LoragateError | None = None
            except AdapterLoadFailed as exc:
                failure = exc  # "already loaded" is fine if the engine lists it
            elapsed = self._clock() - start
            listed = {m.id for m in await eng.client.models()}
            if slot.key not in listed:
                raise failure or AdapterLoadFailed(
                    f"engine {engine} answered success loading {slot.key} but does not list it"
                )
        except Exception as exc:
            error = exc if isinstance(exc, LoragateError) else UpstreamError(repr(exc))
            self.metrics.adapter_load_failures.labels(engine, slot.adapter).inc()
            log.warning(
                "load failed", extra={"engine": engine, "adapter": slot.key, "error": str(error)}
            )
            self._finish_failed(eng, slot, error)
            return
        self._finish_loaded(engine, slot, elapsed)

    def _finish_loaded(self, engine: str, slot: Slot, elapsed: float) -> None:
        eng = self.engines[engine]
        self.metrics.adapter_load_seconds.labels(engine).observe(elapsed)
        self.metrics.adapter_loads.labels(engine, slot.adapter).inc()
        self.metrics.swaps.add()
        evicted = eng.evicted_at.pop(slot.key, None)
        if evicted is not None and self._clock() - evicted <= self.thrash_window_s:
            self.metrics.adapter_thrash.labels(slot.adapter).inc()
        slot.state = SlotState.READY
        slot.last_used = self._clock()
        slot.inflight += slot.waiters
        slot.waiters = 0
        slot.done.set_result(None)
        self._set_resident(engine)
        eng.notify()
        log.info("loaded", extra={"engine": engine, "adapter": slot.key, "seconds": elapsed})

    def _finish_failed(self, eng: EngineSlots, slot: Slot, error: LoragateError) -> None:
        if eng.slots.get(slot.key) is slot:
            del eng.slots[slot.key]
        slot.waiters = 0
        slot.done.set_exception(error)
        eng.notify()

    def _set_resident(self, engine: str) -> None:
        eng = self.engines[engine]
        ready = sum(1 for s in eng.slots.values() if s.state is SlotState.READY)
        self.metrics.resident_adapters.labels(engine).set(ready)

    # --- pins, prewarm, reconcile --------------------------------------------------------

    def set_pins(self, versions: Iterable[AdapterVersion]) -> None:
        """Versions that are never evicted (stable/previous in the rollback window, operator)."""
        self._pins = {v.engine_name: v for v in versions}

    def pinned(self) -> set[str]:
        return set(self._pins)

    async def prewarm(self, engine: str, version: AdapterVersion) -> None:
        """Load `version` on `engine` without serving a request (promotion, re-warm)."""
        await self.acquire(engine, version)
        self.release(engine, version)

    async def reconcile(self, engine: str) -> None:
        """Adopt what the engine lists, forget what it lost, re-warm pins, trim to capacity."""
        eng = self.engines[engine]
        listed = {m.id for m in await eng.client.models() if m.parent is not None}
        for key, slot in list(eng.slots.items()):
            if slot.state is SlotState.READY and key not in listed:
                log.warning("engine lost adapter", extra={"engine": engine, "adapter": key})
                del eng.slots[key]
        loop = asyncio.get_running_loop()
        for key in listed - eng.slots.keys():
            done = loop.create_future()
            done.set_result(None)
            eng.slots[key] = Slot(key, key.partition("@")[0], SlotState.READY, done)
        self._set_resident(engine)
        await self._trim(engine)
        for version in list(self._pins.values()):
            if version.engine_name not in eng.slots:
                with contextlib.suppress(LoragateError):
                    await self.prewarm(engine, version)
        eng.notify()

    async def _trim(self, engine: str) -> None:
        eng = self.engines[engine]
        while eng.used() > eng.capacity and (victim := self._victim(eng)) is not None:
            if not await self._evict_now(engine, victim):
                return

    async def unload(self, engine: str, key: str) -> bool:
        """Unload `key` from `engine` now if it is resident and idle (a retired version).
        True when it is gone; False while requests still use it (LRU evicts it later)."""
        slot = self.engines[engine].slots.get(key)
        if slot is None:
            return True
        if slot.state is not SlotState.READY or slot.inflight or slot.waiters:
            return False
        return await self._evict_now(engine, slot)

    async def _evict_now(self, engine: str, victim: Slot) -> bool:
        self._begin_unload(victim)
        try:
            await self._unload(engine, victim)
        except LoragateError as exc:
            self._keep_resident(victim)
            log.warning("unload failed", extra={"engine": engine, "error": exc.message})
            return False
        return True

    # --- views ----------------------------------------------------------------------------

    def inflight(self, engine: str) -> int:
        """Requests in flight on `engine` (base model and adapters)."""
        return self.engines[engine].inflight()

    def resident_keys(self) -> set[str]:
        """Every version that is ready on at least one engine."""
        return {
            key
            for eng in self.engines.values()
            for key, slot in eng.slots.items()
            if slot.state is SlotState.READY
        }

    def is_resident(self, engine: str, key: str) -> bool:
        slot = self.engines[engine].slots.get(key)
        return slot is not None and slot.state is SlotState.READY

    def view(self, engine: str) -> list[SlotView]:
        eng = self.engines[engine]
        return [
            SlotView(s.key, s.state.value, s.inflight, s.key in self._pins, s.last_used)
            for s in sorted(eng.slots.values(), key=lambda s: s.last_used)
        ]

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
