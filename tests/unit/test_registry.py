"""The registry against a fake engine: LRU, single flight, pins, waits, failures, thrash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engines.registry import Registry
from server.engines.slots import Demand, Slot, SlotState
from server.engines.swaps import ColdLoadHold
from server.errors import AdapterLoadFailed, Unavailable
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.fakes import FakeEngine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def versions(store: AdapterStore, tmp_path: Path) -> dict[str, AdapterVersion]:
    out = {}
    for name in ("a", "b", "c", "d", "e"):
        for v in ("v1", "v2"):
            out[f"{name}@{v}"] = add_version(store, tmp_path, name, v)
    return out


def make(engine: FakeEngine, capacity: int = 2, **kwargs: object) -> tuple[Registry, Metrics]:
    metrics = Metrics()
    return Registry({"e0": (engine, capacity)}, metrics, **kwargs), metrics  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def resident(registry: Registry) -> list[str]:
    return [s.key for s in registry.view("e0") if s.state == "ready"]


async def use(registry: Registry, v: AdapterVersion) -> None:
    registry.release(await registry.acquire("e0", v))


async def test_hit_after_load_and_lru_eviction_order(versions: dict[str, AdapterVersion]) -> None:
    engine = FakeEngine()
    clock = Clock()
    registry, metrics = make(engine, clock=clock)
    for key in ("a@v1", "b@v1", "a@v1"):  # a is now more recent than b
        clock.now += 1
        await use(registry, versions[key])
    clock.now += 1
    await use(registry, versions["c@v1"])  # evicts b (LRU), not a

    assert engine.calls == [
        ("load", "a@v1"),
        ("load", "b@v1"),
        ("unload", "b@v1"),
        ("load", "c@v1"),
    ]
    assert sorted(engine.loaded) == ["a@v1", "c@v1"]
    assert sample(metrics, "loragate_registry_lookups_total", engine="e0", result="hit") == 1
    assert sample(metrics, "loragate_adapter_evictions_total", engine="e0", adapter="b") == 1
    assert sample(metrics, "loragate_resident_adapters", engine="e0") == 2


async def test_demand_eviction_keeps_a_popular_version_that_paused(
    versions: dict[str, AdapterVersion],
) -> None:
    """Five requests for a, then one for b: LRU would evict a (used less recently), the demand
    policy evicts b (less demand), and a's demand fades with its half-life."""
    engine, clock = FakeEngine(), Clock()
    registry, _ = make(engine, clock=clock, demand=Demand(half_life_s=30))
    for key in ("a@v1",) * 5 + ("b@v1",):
        clock.now += 1
        await use(registry, versions[key])
    clock.now += 1
    await use(registry, versions["c@v1"])
    assert ("unload", "b@v1") in engine.calls and sorted(engine.loaded) == ["a@v1", "c@v1"]

    clock.now += 300  # ten half-lives: a's five requests weigh less than c's one, just now
    await use(registry, versions["c@v1"])
    await use(registry, versions["d@v1"])
    assert ("unload", "a@v1") in engine.calls and sorted(engine.loaded) == ["c@v1", "d@v1"]


async def test_demand_decays_by_half_every_half_life() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    demand, slot = Demand(half_life_s=10), Slot("a@v1", "a", SlotState.READY, done)
    for _ in range(4):
        demand.count(slot, 100.0)
    assert demand.now(slot, 100.0) == 4.0
    assert demand.now(slot, 110.0) == pytest.approx(2.0)
    assert demand.now(slot, 130.0) == pytest.approx(0.5)


def test_a_cold_load_is_held_only_while_the_gateway_thrashes() -> None:
    metrics = Metrics()
    hold = ColdLoadHold(ratio=0.5, seconds=0.05)
    assert not hold.applies(metrics)  # no requests yet
    for _ in range(10):
        metrics.adapter_requests.add()
    for _ in range(3):
        metrics.swaps.add()
    assert not hold.applies(metrics)  # 0.3 loads per request
    for _ in range(3):
        metrics.swaps.add()
    assert hold.applies(metrics)  # 0.6


async def test_fifty_concurrent_cold_requests_share_one_load(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine(load_s=0.05)
    registry, metrics = make(engine)
    v = versions["a@v1"]
    holds = await asyncio.gather(*(registry.acquire("e0", v) for _ in range(50)))

    assert engine.loads() == ["a@v1"]
    assert registry.view("e0")[0].inflight == 50
    assert sample(metrics, "loragate_inflight_requests", engine="e0") == 50
    for hold in holds:
        registry.release(hold)
    assert registry.view("e0")[0].inflight == 0


async def test_in_flight_versions_are_never_evicted(versions: dict[str, AdapterVersion]) -> None:
    engine = FakeEngine()
    clock = Clock()
    registry, _ = make(engine, clock=clock)
    await registry.acquire("e0", versions["a@v1"])  # held: oldest but in flight
    clock.now += 1
    await use(registry, versions["b@v1"])
    clock.now += 1
    await use(registry, versions["c@v1"])
    assert ("unload", "a@v1") not in engine.calls
    assert ("unload", "b@v1") in engine.calls


async def test_everything_pinned_or_busy_gives_503_with_retry_after(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine, wait_timeout_s=0.2)
    registry.set_pins([versions["a@v1"]])
    await use(registry, versions["a@v1"])
    await registry.acquire("e0", versions["b@v1"])  # busy

    with pytest.raises(Unavailable) as info:
        await registry.acquire("e0", versions["c@v1"])
    assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
    assert "pinned or busy" in info.value.message
    assert "a@v1" not in info.value.message and "b@v1" not in info.value.message  # #12.4
    assert engine.loads() == ["a@v1", "b@v1"]


async def test_a_waiting_request_gets_the_slot_when_one_frees(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine, capacity=1, wait_timeout_s=5, min_hold_s=60)
    hold = await registry.acquire("e0", versions["a@v1"])
    waiter = asyncio.create_task(registry.acquire("e0", versions["b@v1"]))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    registry.release(hold)
    await asyncio.wait_for(waiter, 1)
    assert resident(registry) == ["b@v1"]


async def test_failed_load_leaves_state_unchanged_and_is_retried_after_a_backoff(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine(fail_load={"b@v1"})
    clock = Clock()
    registry, metrics = make(engine, capacity=3, clock=clock)
    await use(registry, versions["a@v1"])
    before = registry.view("e0")

    with pytest.raises(AdapterLoadFailed, match="cannot load b@v1"):
        await registry.acquire("e0", versions["b@v1"])
    assert registry.view("e0") == before
    assert sample(metrics, "loragate_adapter_load_failures_total", engine="e0", adapter="b") == 1

    # Every request in the backoff gets the failure again at once, with Retry-After, and
    # the engine is not asked again.
    for _ in range(5):
        with pytest.raises(AdapterLoadFailed, match="not retried") as again:
            await registry.acquire("e0", versions["b@v1"])
        assert again.value.retry_after_s == 1.0
    assert engine.loads().count("b@v1") == 1

    clock.now += 1.1  # backoff over: one more try, which fails: the backoff doubles
    with pytest.raises(AdapterLoadFailed, match="cannot load b@v1"):
        await registry.acquire("e0", versions["b@v1"])
    clock.now += 1.1
    with pytest.raises(AdapterLoadFailed, match="not retried") as again:
        await registry.acquire("e0", versions["b@v1"])
    assert again.value.retry_after_s == 1.0  # 0.9 s left, rounded up to a whole second
    engine.fail_load.clear()
    clock.now += 1.0
    await use(registry, versions["b@v1"])  # fixed: loads, and the backoff is forgotten
    assert resident(registry) == ["a@v1", "b@v1"] and engine.loads().count("b@v1") == 3


async def test_a_200_without_listing_is_not_trusted(versions: dict[str, AdapterVersion]) -> None:
    engine = FakeEngine(lie_on_load=True)
    registry, _ = make(engine)
    with pytest.raises(AdapterLoadFailed, match="does not list it"):
        await registry.acquire("e0", versions["a@v1"])
    assert registry.view("e0") == []


async def test_broken_version_is_refused_before_anything_is_evicted(
    versions: dict[str, AdapterVersion],
) -> None:
    async def check(v: AdapterVersion) -> None:
        if v.name == "c":
            raise AdapterLoadFailed("adapter_model.safetensors: [checksum] mismatch")

    engine = FakeEngine()
    registry, _ = make(engine, check=check)
    await use(registry, versions["a@v1"])
    await use(registry, versions["b@v1"])
    with pytest.raises(AdapterLoadFailed, match="checksum"):
        await registry.acquire("e0", versions["c@v1"])
    assert resident(registry) == ["a@v1", "b@v1"] and "unload" not in dict(engine.calls)


async def test_thrash_counts_reloads_within_the_window(versions: dict[str, AdapterVersion]) -> None:
    engine = FakeEngine()
    clock = Clock()
    registry, metrics = make(engine, capacity=1, clock=clock, thrash_window_s=60)
    for key in ("a@v1", "b@v1", "a@v1", "b@v1"):  # ping-pong: 2 reloads within the window
        clock.now += 1
        await use(registry, versions[key])
    clock.now += 120
    await use(registry, versions["a@v1"])  # evicted long ago: a swap, not thrash

    assert sample(metrics, "loragate_adapter_thrash_total", adapter="a") == 1
    assert sample(metrics, "loragate_adapter_thrash_total", adapter="b") == 1
    assert sample(metrics, "loragate_adapter_loads_total", engine="e0", adapter="a") == 3
    assert sample(metrics, "loragate_adapter_evictions_total", engine="e0", adapter="b") == 2


async def test_cancelled_waiter_does_not_leak_in_flight(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine(load_s=0.1)
    registry, _ = make(engine)
    waiter = asyncio.create_task(registry.acquire("e0", versions["a@v1"]))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.15)
    assert [(s.key, s.inflight) for s in registry.view("e0")] == [("a@v1", 0)]


async def test_reconcile_adopts_forgets_trims_and_rewarms_pins(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine, capacity=2)
    engine.loaded = {"x@v1": "/p", "y@v1": "/p", "z@v1": "/p"}  # loaded before we started
    await registry.reconcile("e0")
    assert len(engine.loaded) == 2 and len(resident(registry)) == 2  # trimmed to capacity

    registry.set_pins([versions["a@v1"]])
    engine.loaded.clear()  # the engine restarted and lost everything
    await registry.reconcile("e0")
    assert resident(registry) == ["a@v1"] and list(engine.loaded) == ["a@v1"]


# --- the engine is the truth (views), fairness (#12.6) ---------------------------------------


async def test_a_version_another_gateway_loaded_is_adopted_and_counts_against_capacity(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine, capacity=2)
    engine.loaded = {"a@v1": "/p", "b@v1": "/p"}  # loaded by another replica
    await registry.reconcile("e0")
    assert sorted(resident(registry)) == ["a@v1", "b@v1"]

    await use(registry, versions["a@v1"])  # a hit: no load
    await use(registry, versions["c@v1"])  # full: evicts b (idle), not beyond capacity
    assert engine.loads() == ["c@v1"] and sorted(engine.loaded) == ["a@v1", "c@v1"]
    assert engine.max_loaded == 2


async def test_already_loaded_is_a_hit(versions: dict[str, AdapterVersion]) -> None:
    engine = FakeEngine()
    registry, metrics = make(engine)
    await registry.reconcile("e0")
    engine.loaded["a@v1"] = "/p"  # another replica loaded it after our last look
    await use(registry, versions["a@v1"])
    assert engine.loads() == []  # the fresh look under the lock saw it: no load at all
    assert sample(metrics, "loragate_adapter_already_loaded_total", engine="e0") == 1
    assert sample(metrics, "loragate_adapter_loads_total", engine="e0", adapter="a") == 0


async def test_a_version_running_on_the_engine_for_another_gateway_is_not_evicted(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    clock = Clock()
    registry, _ = make(engine, clock=clock)
    for key in ("a@v1", "b@v1"):
        clock.now += 1
        await use(registry, versions[key])
    engine.busy = {"a@v1"}  # a is the LRU here, but another gateway runs it
    clock.now += 1
    await use(registry, versions["c@v1"])
    assert ("unload", "a@v1") not in engine.calls and ("unload", "b@v1") in engine.calls


async def test_a_version_another_gateway_unloaded_is_dropped_and_reloaded(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine)
    await use(registry, versions["a@v1"])
    del engine.loaded["a@v1"]  # another replica evicted it
    registry.forget("e0", "a@v1")  # what the gateway does on the engine's 404
    await use(registry, versions["a@v1"])
    assert engine.loads() == ["a@v1", "a@v1"]

    del engine.loaded["a@v1"]
    await registry.reconcile("e0")  # a view newer than the load drops it too
    assert resident(registry) == []


async def test_a_view_older_than_a_load_does_not_drop_it(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, _ = make(engine)
    await registry.reconcile("e0")  # epoch 1, nothing held
    stale = await registry.residency.look("e0")
    await use(registry, versions["a@v1"])
    registry.apply_view("e0", stale)  # fetched before the load finished
    assert resident(registry) == ["a@v1"]


async def test_steady_traffic_cannot_starve_a_cold_version(
    versions: dict[str, AdapterVersion],
) -> None:
    """#12.6: 4 slots, 2 pinned, the other 2 with steady traffic; a cold version waits,
    drains the longest-resident busy slot, and gets served; nothing pinned is touched."""
    engine = FakeEngine(load_s=0.01)
    registry, metrics = make(engine, capacity=4, wait_timeout_s=3, min_hold_s=0.05)
    registry.set_pins([versions["a@v1"], versions["b@v1"]])
    for key in ("a@v1", "b@v1"):
        await use(registry, versions[key])
    stop = asyncio.Event()

    async def steady(key: str) -> None:  # always one request in flight, back to back
        while not stop.is_set():
            hold = await registry.acquire("e0", versions[key])
            await asyncio.sleep(0.01)
            registry.release(hold)

    traffic = [asyncio.create_task(steady(k)) for k in ("c@v1", "d@v1", "c@v1", "d@v1")]
    await asyncio.sleep(0.1)
    try:
        await asyncio.wait_for(use(registry, versions["e@v1"]), 2)  # served, not refused
    finally:
        stop.set()
        await asyncio.gather(*traffic)
    assert "e@v1" in engine.loads()
    assert sample(metrics, "loragate_slot_drains_total", engine="e0") >= 1
    assert {"a@v1", "b@v1"} <= set(engine.loaded)  # pins never drained


async def test_a_drain_that_times_out_gives_the_slot_back(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, metrics = make(engine, capacity=1, wait_timeout_s=0.2, min_hold_s=0)
    hold = await registry.acquire("e0", versions["a@v1"])  # never released in time
    with pytest.raises(Unavailable):
        await registry.acquire("e0", versions["b@v1"])
    await asyncio.sleep(0.3)  # the load task gives up too
    assert [(s.key, s.state) for s in registry.view("e0")] == [("a@v1", "ready")]
    assert sample(metrics, "loragate_slot_refusals_total", engine="e0", reason="busy") == 1
    registry.release(hold)
    await use(registry, versions["a@v1"])  # admitted again
    assert engine.loads() == ["a@v1"]


async def test_refusals_say_when_idle_pins_crowd_out_traffic(
    versions: dict[str, AdapterVersion],
) -> None:
    engine = FakeEngine()
    registry, metrics = make(engine, capacity=2, wait_timeout_s=0.1, min_hold_s=60)
    registry.set_pins([versions["a@v1"]])
    await use(registry, versions["a@v1"])  # pinned, idle
    hold = await registry.acquire("e0", versions["b@v1"])  # busy, too fresh to drain
    with pytest.raises(Unavailable):
        await registry.acquire("e0", versions["c@v1"])
    registry.release(hold)
    assert sample(metrics, "loragate_slot_refusals_total", engine="e0", reason="pinned") == 1
    assert sample(metrics, "loragate_pinned_versions") == 1
