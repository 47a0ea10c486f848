"""Two gateway replicas sharing three simulated engines over real HTTP (#13): capacity holds,
only documented refusals, release changes cross replicas within a second, a version one
replica unloads under the other is reloaded, replicas and engines can die.

The same with haproxy in front is tests/integration/test_scale_out_haproxy.py (slow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.simengine import SimEngineServer
from server.settings import Settings
from tests.scaleout import (
    AUTH,
    GatewayProcess,
    gateway_settings,
    many_adapters,
    sim_stats,
    wait_for,
    zipf_traffic,
)
from tests.servers import GatewayServer

ADAPTERS = 40
SLOTS = 4


@dataclass
class Cluster:
    store: Path
    sims: list[SimEngineServer]
    gateways: list[GatewayServer]
    tmp: Path

    def settings(self, **extra: Any) -> dict[str, Any]:
        return gateway_settings(self.store, [s.url for s in self.sims], self.tmp, **extra)


@pytest.fixture
def cluster(
    tmp_path: Path, sim_server: Callable[..., SimEngineServer]
) -> Iterator[Callable[..., Cluster]]:
    """Factory: 3 simulated engines (--max-cpu-loras 4) and `replicas` gateways in threads."""
    started: list[GatewayServer] = []

    def start(replicas: int = 2, **extra: Any) -> Cluster:
        store = many_adapters(tmp_path / "store", tmp_path, ADAPTERS).root
        sims = [
            sim_server(model="tiny-base", max_loras=SLOTS, max_cpu_loras=SLOTS, token_ms=2)
            for _ in range(3)
        ]
        built = Cluster(store, sims, [], tmp_path)
        for _ in range(replicas):
            gw = GatewayServer(Settings(**built.settings(**extra))).__enter__()
            started.append(gw)
            built.gateways.append(gw)
        return built

    yield start
    for gw in started:
        gw.__exit__(None, None, None)


def check_engines(sims: list[SimEngineServer]) -> dict[str, int]:
    """No engine ever held more than its capacity; returns the summed counters."""
    totals: dict[str, int] = {"loads": 0, "unloads": 0, "unloads_while_busy": 0}
    for sim in sims:
        stats = sim_stats(sim.url)
        assert stats["max_registered"] <= SLOTS, stats
        assert len(stats["registered"]) <= SLOTS
        for key in totals:
            totals[key] += stats[key]
    return totals


def test_two_replicas_share_three_engines_under_zipf_traffic(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster()
    urls = [gw.url for gw in c.gateways]
    outcome = asyncio.run(
        zipf_traffic(lambda i: [urls[i % 2], urls[(i + 1) % 2]], ADAPTERS, 600, concurrency=8)
    )
    assert outcome.undocumented == []
    assert outcome.missing_retry_after == 0
    assert outcome.ok >= 0.95 * 600, outcome.codes  # refusals are rare, and documented
    totals = check_engines(c.sims)
    # Never an unload of a version the last look (under the swap lock) reported busy: unit
    # tested (test_registry_replicas). What remains is a request another replica starts
    # inside that look-to-unload window (milliseconds, more on a loaded box); vLLM keeps
    # running it and the next request there is retried once. Measured at ~1% of evictions.
    assert totals["unloads_while_busy"] <= max(3, totals["unloads"] // 20), totals
    # The replicas do not fight: each load serves several requests (40 adapters, 12 slots).
    assert totals["loads"] < 0.6 * outcome.ok, totals


def test_promotion_and_rollback_through_one_replica_reach_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster()
    first, second = c.gateways

    def served(gw: GatewayServer) -> str:
        body = {"model": "a00", "prompt": "x", "max_tokens": 2}
        return httpx.post(f"{gw.url}/v1/completions", json=body, timeout=10).headers[
            "x-adapter-version"
        ]

    assert served(second) == "a00@v1"
    promote = {"version": "v2", "force": True}
    r = httpx.post(f"{first.url}/admin/adapters/a00/promote", json=promote, headers=AUTH)
    assert r.status_code == 200, r.text
    # The other replica polls the store every 0.5 s: under 1 s on an idle machine. The bound
    # here only guards against "never" on a busy one (timing is not what this test proves).
    assert wait_for(lambda: served(second) == "a00@v2", timeout_s=5.0) < 5.0
    r = httpx.post(f"{first.url}/admin/adapters/a00/rollback", headers=AUTH)
    assert r.status_code == 200, r.text
    assert wait_for(lambda: served(second) == "a00@v1", timeout_s=5.0) < 5.0


@pytest.mark.parametrize("stream", [False, True])
def test_a_version_another_replica_unloaded_is_reloaded_and_retried_once(
    cluster: Callable[..., Cluster], stream: bool
) -> None:
    c = cluster(replicas=1, residency_refresh_s=30)  # its view stays stale on purpose
    (gw,) = c.gateways
    body = {"model": "a01", "prompt": "x", "max_tokens": 2, "stream": stream}
    first = httpx.post(f"{gw.url}/v1/completions", json=body, timeout=10)
    assert first.status_code == 200
    engine = c.sims[int(first.headers["x-engine"].removeprefix("engine-"))]
    time.sleep(0.5)  # the refresh its own load asked for has happened: the view stays stale
    # "Another replica" evicts it behind this one's back.
    unloaded = httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": "a01@v1"})
    assert unloaded.status_code == 200
    again = httpx.post(f"{gw.url}/v1/completions", json=body, timeout=10)
    assert again.status_code == 200 and "[a01@v1]" in again.text
    assert gw.metric("loragate_adapter_gone_retries_total") == 1
    assert "a01@v1" in sim_stats(engine.url)["registered"]


def engines_up(gw: GatewayServer, n: int) -> Callable[[], bool]:
    return lambda: len(gw.runtime.placement.up_engines()) == n


def test_an_engine_dies_its_adapters_are_replaced_and_it_is_reconciled_on_return(
    cluster: Callable[..., Cluster], sim_server: Callable[..., SimEngineServer]
) -> None:
    c = cluster()
    urls = [gw.url for gw in c.gateways]
    warm = asyncio.run(zipf_traffic(lambda i: [urls[i % 2]], ADAPTERS, 100))
    assert warm.undocumented == []
    victim = max(c.sims, key=lambda s: len(sim_stats(s.url)["registered"]))
    port = int(victim.url.rsplit(":", 1)[1])
    victim.close()  # the engine dies: connections refused

    during = asyncio.run(zipf_traffic(lambda i: [urls[i % 2]], ADAPTERS, 200, seed=2))
    assert during.undocumented == [] and during.ok >= 0.95 * 200, during.codes
    for gw in c.gateways:
        wait_for(engines_up(gw, 2), 3, "marked down")

    back = sim_server(model="tiny-base", max_loras=SLOTS, max_cpu_loras=SLOTS, port=port)
    for gw in c.gateways:
        wait_for(engines_up(gw, 3), 5, "back up")
        # Reconciled: the views of the returned engine hold exactly what it lists (nothing).
        assert not [
            s
            for s in gw.runtime.registry.view(f"engine-{c.sims.index(victim)}")
            if s.state == "ready" and s.key not in sim_stats(back.url)["registered"]
        ]
    after = asyncio.run(zipf_traffic(lambda i: [urls[i % 2]], ADAPTERS, 200, seed=3))
    assert after.undocumented == [] and after.ok >= 0.95 * 200, after.codes
    assert sim_stats(back.url)["loads"] > 0  # it serves again
    check_engines([*[s for s in c.sims if s is not victim], back])


def test_kill_9_of_a_replica_fails_only_its_requests_in_flight(
    cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    c = cluster(replicas=0)
    replicas = [GatewayProcess(c.settings(), tmp_path, f"gw{i}") for i in range(2)]
    try:
        urls = [r.url for r in replicas]
        killed_at: list[float] = []

        def kill_mid_run(i: int) -> None:
            if i == 150:
                replicas[0].kill()
                killed_at.append(time.monotonic())

        outcome = asyncio.run(
            zipf_traffic(
                lambda i: [urls[i % 2], urls[(i + 1) % 2]],
                ADAPTERS,
                400,
                concurrency=8,
                on_request=kill_mid_run,
            )
        )
    finally:
        for r in replicas:
            r.close()
    assert killed_at
    failed = sum(n for code, n in outcome.codes.items() if not isinstance(code, int))
    assert failed <= 8, outcome.codes  # at most the requests in flight there (concurrency 8)
    assert outcome.undocumented == [] and outcome.ok >= 400 - failed - 20, outcome.codes
    check_engines(c.sims)
