"""The adapter slots of one engine as this gateway sees them, and the rules that pick which
slot may go: an idle victim (LRU) or, when every slot is busy, one to drain (fairness).

A slot is a LoRA the engine holds (adopted from its listing, whichever gateway loaded it) or
one this gateway is loading. Only this gateway's own requests are counted in `inflight`;
what every gateway runs there comes from the engine (`busy`, from its `/metrics`).

```
          load ok             a waiter drains it           idle here and on the engine
LOADING ──────────▶ READY ─────────────────────▶ DRAINING ───────────────────▶ UNLOADING ─▶ gone
   │ load failed     ▲ │ idle victim (LRU)           │ timeout / no waiter left      ▲
   ▼                 │ └─────────────────────────────┼───────────────────────────────┘
  gone               └───────────────────────────────┘ back to READY
```
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Container
from dataclasses import dataclass, field

from server.engines.client import EngineClient
from server.errors import LoragateError


class SlotState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"  # resident, admits no new request; evicted once idle
    UNLOADING = "unloading"


@dataclass(eq=False)
class Slot:
    key: str  # engine-side LoRA name, `name@version`
    adapter: str  # metric label: the adapter name (from the store)
    state: SlotState
    done: asyncio.Future[None]  # resolves when LOADING, DRAINING or UNLOADING ends
    last_used: float = 0.0  # LRU: this gateway's use, or seen busy on the engine
    loaded_at: float = 0.0  # when it became resident (or was first seen): drain fairness
    ready_epoch: int = 0  # residency epoch when it became ready: older views cannot drop it
    inflight: int = 0  # this gateway's requests holding it
    waiters: int = 0  # requests waiting on its load
    demand: float = 0.0  # requests here, decayed with a half-life (see `Demand`)
    demand_at: float = 0.0  # when `demand` was last brought up to date


@dataclass(frozen=True)
class Demand:
    """Recent demand for a slot: its requests, each counting less with age (exponential
    decay, `half_life_s`). Thrash mitigation evicts the idle slot with the least of it rather
    than the least recently used one: under a skewed (Zipf) mix, LRU evicts a popular adapter
    that happened to pause for a moment and reloads it right after."""

    half_life_s: float = 30.0

    def now(self, slot: Slot, now: float) -> float:
        decay: float = 0.5 ** ((now - slot.demand_at) / self.half_life_s)
        return slot.demand * decay

    def count(self, slot: Slot, now: float) -> None:
        slot.demand, slot.demand_at = self.now(slot, now) + 1.0, now


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
    """Residency of one engine: what it holds, what this gateway holds of it."""

    client: EngineClient
    capacity: int
    slots: dict[str, Slot] = field(default_factory=dict)
    evicted_at: dict[str, float] = field(default_factory=dict)  # thrash detection
    gone_epoch: dict[str, int] = field(default_factory=dict)  # unloaded here at this epoch
    busy: frozenset[str] = frozenset()  # running or waiting on the engine (any gateway)
    others: int = 0  # requests other gateways run here (engine's count minus ours)
    inflight: int = 0  # this gateway's requests on the engine (base model included)
    waiting: int = 0  # this gateway's requests waiting for a slot here
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Versions whose last load failed: key -> (retry not before, backoff s, the failure).
    failed: dict[str, tuple[float, float, LoragateError]] = field(default_factory=dict)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def count(self, state: SlotState) -> int:
        return sum(1 for s in self.slots.values() if s.state is state)

    def idle(self, slot: Slot, pins: Container[str]) -> bool:
        """Evictable now: resident, unpinned, and nobody uses it here or on the engine."""
        return (
            slot.state is SlotState.READY
            and slot.inflight == 0
            and slot.waiters == 0
            and slot.key not in pins
            and slot.key not in self.busy
        )

    def room(self, pins: Container[str]) -> int:
        """Slots a new load could take: free ones plus idle victims, minus pending loads.
        A DRAINING slot is paired with the load that claimed it, so neither counts."""
        free = self.capacity - self.count(SlotState.READY) - self.count(SlotState.LOADING)
        return free + sum(1 for s in self.slots.values() if self.idle(s, pins))

    def victim(
        self, pins: Container[str], demand: Demand | None = None, now: float = 0.0
    ) -> Slot | None:
        """The idle slot to evict: the least recently used, or (with `demand`) the one with the
        least recent demand, the least recently used among equals."""
        idle = [s for s in self.slots.values() if self.idle(s, pins)]
        if demand is None:
            return min(idle, key=lambda s: s.last_used, default=None)
        return min(idle, key=lambda s: (round(demand.now(s, now), 3), s.last_used), default=None)

    def drain_candidate(self, pins: Container[str], now: float, min_hold_s: float) -> Slot | None:
        """A busy slot a waiting request may drain: unpinned, resident for at least
        `min_hold_s`, the one resident longest (so competing adapters take turns)."""
        held = [
            s
            for s in self.slots.values()
            if s.state is SlotState.READY
            and s.key not in pins
            and s.waiters == 0
            and now - s.loaded_at >= min_hold_s
        ]
        return min(held, key=lambda s: s.loaded_at, default=None)

    def next_drain_at(self, pins: Container[str], min_hold_s: float) -> float | None:
        """When the next unpinned slot becomes drainable (None: none ever will)."""
        times = [
            s.loaded_at + min_hold_s
            for s in self.slots.values()
            if s.state is SlotState.READY and s.key not in pins
        ]
        return min(times, default=None)

    def crowded_by_pins(self, pins: Container[str]) -> bool:
        """True when an idle pinned slot holds room that traffic is waiting for."""
        return any(
            s.state is SlotState.READY and s.key in pins and s.inflight == 0
            for s in self.slots.values()
        )
