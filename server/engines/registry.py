"""Which adapter versions are loaded on which engine, shared with every other gateway replica.

Per engine, `capacity` slots (its `max_cpu_loras`), counted from what the *engine* holds
(`Residency` views: whichever gateway loaded them), plus this gateway's pending loads.
`acquire` is a hit (touch the LRU), or joins the one shared load of that version (single
flight), or starts a load. A load runs under the engine's swap lock (`swaplock`, shared by
every replica): a fresh look at the engine, then, if it is full, the eviction of the least
recently used version that is unpinned, unused here and neither running nor waiting on the
engine; "already loaded" (another replica was faster) is a hit.

When every slot is busy, a waiting request drains one (`slots.EngineSlots.drain_candidate`):
no new request is admitted to it and it is evicted once idle, so steady traffic on one
adapter cannot starve another. If nothing frees up within `wait_timeout_s`, `Unavailable`
(503 + Retry-After).

State lives in plain dicts mutated only between awaits (asyncio is single-threaded). The
engine calls that change residency are in `server.engines.swaps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from server.engines.client import EngineClient
from server.engines.residency import EngineView, Residency
from server.engines.slots import Demand, EngineSlots, Slot, SlotState, SlotView
from server.engines.swaplock import LocalSwapLocks, SwapLocks
from server.engines.swaps import ColdLoadHold, NoRoom, Swaps
from server.errors import AdapterLoadFailed, LoragateError, Unavailable
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion

log = logging.getLogger(__name__)

WAITING_LOOK_S = 0.2  # while requests wait for a slot, the engine's view is refreshed this often


@dataclass(eq=False)
class Hold:
    """One request's hold on an engine (and on its adapter's slot), from `acquire`."""

    engine: str
    slot: Slot | None  # None: the base model, which needs no slot
    released: bool = False


class Registry:
    """Adapter residency across engines."""

    def __init__(
        self,
        engines: dict[str, tuple[EngineClient, int]],
        metrics: Metrics,
        *,
        thrash_window_s: float = 60.0,
        wait_timeout_s: float = 10.0,
        min_hold_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[AdapterVersion], Awaitable[None]] | None = None,
        residency: Residency | None = None,
        locks: SwapLocks | None = None,
        demand: Demand | None = None,
        hold: ColdLoadHold | None = None,
    ) -> None:
        self.metrics = metrics
        self.wait_timeout_s = wait_timeout_s
        self.min_hold_s = min_hold_s  # a loaded slot is not drained before this, seconds
        self._clock = clock
        self._pins: dict[str, AdapterVersion] = {}
        self.residency = residency or Residency()
        self.residency.listen(self.apply_view)
        self.engines: dict[str, EngineSlots] = {}
        self.swaps = Swaps(
            self.engines,
            metrics,
            self.residency,
            locks or LocalSwapLocks(),
            clock=clock,
            check=check,
            pins=lambda: self._pins,
            thrash_window_s=thrash_window_s,
            wait_s=wait_timeout_s,
            demand=demand,
            hold=hold,
        )
        for name, (client, capacity) in engines.items():
            self.add_engine(name, client, capacity)

    # --- engines ---------------------------------------------------------------------------

    def add_engine(self, name: str, client: EngineClient, capacity: int) -> None:
        """Track `name` (its view is fetched by `reconcile` or the residency loop)."""
        if name in self.engines:
            return
        self.engines[name] = EngineSlots(client, capacity)
        self.residency.track(name, client)
        self.metrics.adapter_slots.labels(name).set(capacity)
        self.metrics.resident_adapters.labels(name).set(0)

    async def remove_engine(self, name: str) -> None:
        """Forget `name` (it left the fleet); holds still open are released quietly."""
        eng = self.engines.pop(name, None)
        await self.residency.untrack(name)
        if eng is not None:
            for slot in eng.slots.values():
                if not slot.done.done():
                    slot.done.set_exception(Unavailable(f"engine {name} left", retry_after_s=1))
            eng.notify()

    # --- acquire / release -------------------------------------------------------------------

    async def acquire(self, engine: str, version: AdapterVersion | None) -> Hold:
        """Make `version` resident on `engine` and hold it for one request; `None` is the base
        model, which every engine always holds.

        Raises `Unavailable` when no slot frees up in time, `AdapterLoadFailed` when the
        engine refuses the version (the registry is left as it was)."""
        eng = self._engine(engine)
        if version is None:
            return self._hold(engine, eng, None)
        key = version.engine_name
        start = self._clock()
        deadline = start + self.wait_timeout_s
        missed = False
        while True:
            slot = eng.slots.get(key)
            if slot is not None and slot.state is SlotState.READY:
                return self._hit(engine, eng, slot, missed, start)
            missed = True
            if slot is None and (failure := self._backing_off(engine, eng, key)) is not None:
                raise failure
            if slot is not None and slot.state is SlotState.LOADING:
                with contextlib.suppress(NoRoom):
                    await self._join_load(slot)
                    return self._hit(engine, eng, slot, missed, start)
                await self._wait_for_change(engine, eng, deadline)
            elif slot is not None:  # DRAINING or UNLOADING: wait for it to go, then load again
                await self._wait_for_slot(engine, eng, slot, deadline)
            elif not self._claim(engine, eng, version):
                await self._wait_for_change(engine, eng, deadline)

    def _backing_off(self, engine: str, eng: EngineSlots, key: str) -> LoragateError | None:
        """The last load of `key` failed and its backoff has not run out: that failure again,
        with the time left as Retry-After, instead of another load."""
        failed = eng.failed.get(key)
        if failed is None:
            return None
        until, _, error = failed
        left = until - self._clock()
        if left <= 0:
            return None
        message = f"{error.message} (not retried for another {left:.0f} s)"
        return AdapterLoadFailed(message, retry_after_s=max(1.0, left))

    def release(self, hold: Hold) -> None:
        """End the request's hold taken by `acquire` (idempotent)."""
        if hold.released:
            return
        hold.released = True
        self.metrics.inflight_requests.labels(hold.engine).dec()
        if hold.slot is not None:  # possibly detached: the engine lost it meanwhile
            hold.slot.inflight -= 1
            hold.slot.last_used = self._clock()
        eng = self.engines.get(hold.engine)
        if eng is not None:
            eng.inflight -= 1
            eng.notify()

    def forget(self, engine: str, key: str) -> None:
        """The engine answered 404 for `key`: another gateway unloaded it. Drop the slot (the
        next `acquire` loads it again) and refresh the view soon."""
        eng = self.engines.get(engine)
        slot = eng.slots.get(key) if eng else None
        if eng is not None and slot is not None and slot.state is SlotState.READY:
            del eng.slots[key]
            self.swaps.set_resident(engine)
            eng.notify()
        self.residency.kick(engine)

    def _engine(self, engine: str) -> EngineSlots:
        eng = self.engines.get(engine)
        if eng is None:
            raise Unavailable(f"engine {engine} left the fleet", retry_after_s=1)
        return eng

    def _hold(self, engine: str, eng: EngineSlots, slot: Slot | None) -> Hold:
        eng.inflight += 1
        self.metrics.inflight_requests.labels(engine).inc()
        if slot is not None:
            slot.inflight += 1
            slot.last_used = self._clock()
            if self.swaps.demand is not None:  # eviction by demand counts every request
                self.swaps.demand.count(slot, slot.last_used)
        return Hold(engine, slot)

    def _hit(self, engine: str, eng: EngineSlots, slot: Slot, missed: bool, start: float) -> Hold:
        self.metrics.adapter_requests.add()
        self.metrics.registry_lookups.labels(engine, "miss" if missed else "hit").inc()
        if missed:
            self.metrics.load_wait_seconds.labels(engine).observe(self._clock() - start)
        return self._hold(engine, eng, slot)

    def _claim(self, engine: str, eng: EngineSlots, version: AdapterVersion) -> bool:
        """Start a load of `version` if a slot is free or idle, else drain a busy one.
        False when neither is possible now."""
        if eng.room(self._pins) > 0:
            self.swaps.start_load(engine, version, drained=None)
            return True
        victim = eng.drain_candidate(self._pins, self._clock(), self.min_hold_s)
        if victim is None:
            return False
        self.swaps.begin(victim, SlotState.DRAINING)
        self.metrics.slot_drains.labels(engine).inc()
        log.info("draining", extra={"engine": engine, "adapter": victim.key})
        self.swaps.start_load(engine, version, drained=victim)
        return True

    @staticmethod
    async def _join_load(slot: Slot) -> None:
        """Wait for a shared load. The waiter count keeps the slot from being evicted between
        the load's end and this request taking its hold."""
        slot.waiters += 1
        try:
            await asyncio.shield(slot.done)
        finally:
            slot.waiters -= 1

    async def _wait_for_slot(self, engine: str, eng: EngineSlots, slot: Slot, dl: float) -> None:
        remaining = dl - self._clock()
        if remaining > 0:
            with contextlib.suppress(TimeoutError, LoragateError):
                await asyncio.wait_for(asyncio.shield(slot.done), remaining)
            if self._clock() < dl:
                return
        raise self._refusal(engine, eng)

    async def _wait_for_change(self, engine: str, eng: EngineSlots, deadline: float) -> None:
        """Until something changes on `engine`, a busy slot becomes drainable, or `deadline`
        (then `Unavailable`)."""
        now = self._clock()
        # Slots held by other gateways free up without any event here: look again soon.
        wake = min(deadline, now + WAITING_LOOK_S)
        self.residency.kick(engine)
        drainable = eng.next_drain_at(self._pins, self.min_hold_s)
        if drainable is not None and now < drainable < wake:
            wake = drainable
        if wake > now:
            eng.waiting += 1
            self.metrics.slot_waiting_requests.labels(engine).set(eng.waiting)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(eng.changed.wait(), wake - now)
            finally:
                eng.waiting -= 1
                self.metrics.slot_waiting_requests.labels(engine).set(eng.waiting)
            if self._clock() < deadline:
                return
        raise self._refusal(engine, eng)

    def _refusal(self, engine: str, eng: EngineSlots) -> Unavailable:
        # No adapter names here: the slots may hold other tenants' adapters.
        reason = "pinned" if eng.crowded_by_pins(self._pins) else "busy"
        self.metrics.slot_refusals.labels(engine, reason).inc()
        pinned = sum(1 for k in eng.slots if k in self._pins)
        return Unavailable(
            f"no adapter slot free on {engine} within {self.wait_timeout_s:g} s: every slot "
            f"is pinned or busy ({pinned} pinned of {eng.capacity})",
            retry_after_s=max(1.0, self.wait_timeout_s),
        )

    # --- the engines' truth ----------------------------------------------------------------

    def apply_view(self, engine: str, view: EngineView) -> None:
        """Merge what the engine reported: adopt what it holds (another gateway loaded it),
        drop what it no longer holds (another gateway evicted it, or it restarted), and
        count its running adapters as recently used (the LRU spans every gateway)."""
        eng = self.engines.get(engine)
        if eng is None or not view.healthy:
            return
        eng.busy = view.busy
        eng.others = max(0, view.load.requests - eng.inflight)
        now = self._clock()
        for key, slot in list(eng.slots.items()):
            if slot.state is not SlotState.READY:
                continue
            if key not in view.held and view.epoch > slot.ready_epoch:
                log.info("engine no longer holds", extra={"engine": engine, "adapter": key})
                del eng.slots[key]
            elif key in view.busy:
                slot.last_used = now
        for key in view.held - eng.slots.keys():
            if view.epoch > eng.gone_epoch.get(key, -1):
                eng.slots[key] = self.swaps.adopted(key, now, view.epoch)
        self.swaps.set_resident(engine)
        eng.notify()

    # --- pins, prewarm, reconcile ----------------------------------------------------------

    def set_pins(self, versions: Iterable[AdapterVersion]) -> None:
        """Versions that are never evicted (stable/previous in the rollback window, operator)."""
        self._pins = {v.engine_name: v for v in versions}
        self.metrics.pinned_versions.set(len(self._pins))
        for eng in self.engines.values():
            eng.notify()

    def pinned(self) -> set[str]:
        return set(self._pins)

    async def prewarm(self, engine: str, version: AdapterVersion) -> None:
        """Load `version` on `engine` without serving a request (promotion, re-warm)."""
        self.release(await self.acquire(engine, version))

    async def reconcile(self, engine: str) -> None:
        """A fresh look at the engine, trim it to capacity, re-warm the pins it lacks."""
        if not await self.swaps.trim(engine):
            return  # the engine does not answer
        for version in list(self._pins.values()):
            eng = self.engines.get(engine)
            if eng is not None and version.engine_name not in eng.slots:
                with contextlib.suppress(LoragateError):
                    await self.prewarm(engine, version)

    async def unload(self, engine: str, key: str) -> bool:
        """Unload `key` from `engine` now if nobody uses it (a retired version). True when it
        is gone; False while requests still use it (LRU evicts it later)."""
        eng = self.engines.get(engine)
        slot = eng.slots.get(key) if eng else None
        if eng is None or slot is None:
            return True
        if slot.state is not SlotState.READY or slot.inflight or slot.waiters:
            return False
        if key in eng.busy:
            return False
        return await self.swaps.evict_now(engine, slot)

    # --- views -----------------------------------------------------------------------------

    def inflight(self, engine: str) -> int:
        """This gateway's requests in flight on `engine` (base model and adapters)."""
        eng = self.engines.get(engine)
        return eng.inflight if eng else 0

    def load(self, engine: str) -> int:
        """Requests on `engine` from every gateway: ours now, the others' as last reported."""
        eng = self.engines.get(engine)
        return eng.inflight + eng.others if eng else 0

    def has_room(self, engine: str) -> bool:
        """A load on `engine` would find a free or idle slot now (as far as we know)."""
        eng = self.engines.get(engine)
        return eng is not None and eng.room(self._pins) > 0

    def holds(self, engine: str, key: str) -> bool:
        """`key` is resident on `engine` and admits requests."""
        eng = self.engines.get(engine)
        slot = eng.slots.get(key) if eng else None
        return slot is not None and slot.state is SlotState.READY

    def resident_keys(self) -> set[str]:
        """Every version that is ready on at least one engine."""
        return {
            key
            for eng in self.engines.values()
            for key, slot in eng.slots.items()
            if slot.state is SlotState.READY
        }

    def view(self, engine: str) -> list[SlotView]:
        eng = self.engines[engine]
        return [
            SlotView(s.key, s.state.value, s.inflight, s.key in self._pins, s.last_used)
            for s in sorted(eng.slots.values(), key=lambda s: s.last_used)
        ]

    async def aclose(self) -> None:
        await self.swaps.aclose()
        await self.residency.aclose()
