"""Several gateway replicas (registries) over one engine, sharing swap locks as they share the
store: capacity holds, loads are not duplicated, and nothing busy on the engine is evicted."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from server.engines.registry import Hold, Registry
from server.engines.swaplock import FileSwapLocks
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.fakes import FakeEngine


class BusyEngine(FakeEngine):
    """A fake engine that reports running what any replica holds, and counts evictions of
    versions it had reported running in its latest `/metrics` (what the simulated engine calls
    unloads_while_reported_busy). A request another replica starts after that report can
    still be running when the unload lands (vLLM's unload is unconditional; the running
    request keeps its adapter): that race is `raced_unloads`, counted, not forbidden."""

    running: Counter[str]
    busy_unloads: int
    raced_unloads: int
    reported: frozenset[str]

    async def metrics_text(self) -> str:
        self.reported = frozenset(self.busy)
        return await super().metrics_text()

    def start(self, key: str) -> None:
        self.running[key] += 1
        self.busy = {k for k, n in self.running.items() if n}

    def finish(self, key: str) -> None:
        self.running[key] -= 1
        self.busy = {k for k, n in self.running.items() if n}

    async def unload_lora(self, lora_name: str) -> None:
        self.busy_unloads += lora_name in self.reported
        self.raced_unloads += lora_name in self.busy and lora_name not in self.reported
        await super().unload_lora(lora_name)


def busy_engine(load_s: float) -> BusyEngine:
    engine = BusyEngine(load_s=load_s)
    engine.running, engine.busy_unloads, engine.raced_unloads = Counter(), 0, 0
    engine.reported = frozenset()
    return engine


@pytest.fixture
def versions(store: AdapterStore, tmp_path: Path) -> list[AdapterVersion]:
    return [add_version(store, tmp_path, f"a{i}", "v1") for i in range(12)]


def replica(engine: FakeEngine, locks: Path, **kw: float) -> Registry:
    return Registry(
        {"e0": (engine, 4)},
        Metrics(),
        locks=FileSwapLocks(locks),
        wait_timeout_s=kw.get("wait_timeout_s", 10.0),
        min_hold_s=kw.get("min_hold_s", 0.05),
    )


async def request(registry: Registry, engine: BusyEngine, version: AdapterVersion) -> None:
    hold: Hold = await registry.acquire("e0", version)
    engine.start(version.engine_name)
    try:
        await asyncio.sleep(random.uniform(0.001, 0.01))
    finally:
        engine.finish(version.engine_name)
        registry.release(hold)


async def test_two_replicas_never_overfill_the_engine_nor_evict_what_runs(
    versions: list[AdapterVersion], tmp_path: Path
) -> None:
    engine = busy_engine(load_s=0.005)
    replicas = [replica(engine, tmp_path / "locks") for _ in range(2)]
    for r in replicas:
        await r.reconcile("e0")
    rng = random.Random(7)
    weights = [1 / (i + 1) for i in range(len(versions))]  # Zipf(1)
    picks = rng.choices(versions, weights, k=300)

    async def client(i: int) -> None:
        for n, version in enumerate(picks[i::6]):
            await request(replicas[(i + n) % 2], engine, version)

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(6))), 60)
    assert engine.max_loaded <= 4
    assert engine.busy_unloads == 0
    for r in replicas:
        await r.aclose()


async def test_a_load_by_one_replica_is_a_hit_for_the_other(
    versions: list[AdapterVersion], tmp_path: Path
) -> None:
    engine = busy_engine(load_s=0.05)
    first, second = (replica(engine, tmp_path / "locks") for _ in range(2))
    v = versions[0]
    holds = await asyncio.gather(first.acquire("e0", v), second.acquire("e0", v))
    assert engine.loads() == [v.engine_name]  # one load between the two replicas
    first.release(holds[0])
    second.release(holds[1])
    await first.aclose()
    await second.aclose()
