"""Engines found by DNS, end to end: a gateway whose only engine entry is a DNS name, a
resolver the test controls (engines on 127.0.0.1, .2, .3 — one loopback port each), engines
appearing (reconciled, pins warmed) and vanishing (drained) while traffic flows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.simengine import SimConfig, SimEngineServer
from loadtest.threaded import ThreadedServer, free_port
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings
from server.store.store import AdapterStore
from tests.scaleout import wait_for
from tests.servers import tiny_settings

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


class Dns:
    def __init__(self) -> None:
        self.addresses: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        assert host == "vllm-headless.test"
        return list(self.addresses)


@pytest.fixture
def engines() -> Iterator[tuple[int, dict[str, SimEngineServer]]]:
    """One simulated engine per loopback address, all on the same port (as pods are)."""
    port = free_port()
    config = SimConfig(model="tiny-base", max_loras=2, max_cpu_loras=2, load_ms=10, port=port)
    sims = {h: SimEngineServer(config, host=h).__enter__() for h in HOSTS}
    yield port, sims
    for sim in sims.values():
        sim.close()


def test_engines_come_and_go_with_dns(
    engines: tuple[int, dict[str, SimEngineServer]], tiny_store: AdapterStore, tmp_path: Path
) -> None:
    port, sims = engines
    dns = Dns()
    dns.addresses = list(HOSTS[:2])
    settings: Settings = tiny_settings(
        tiny_store.root,
        [],
        tmp_path,
        engines=[{"dns": f"vllm-headless.test:{port}", "max_cpu_loras": 2}],
        discovery_interval_s=0.2,
        rollback_window_s=3600,  # alpha was just promoted: pinned, warmed on every engine
    )
    runtime = Runtime(settings, resolver=dns)
    with ThreadedServer(create_app(settings, runtime), lifespan="on", name="gateway") as gw:
        names = [f"{h}:{port}" for h in HOSTS]
        assert runtime.placement.up_engines() == names[:2]
        pinned = runtime.registry.pinned()
        assert pinned and all(
            pinned <= set(httpx.get(f"{sims[h].url}/sim/stats").json()["registered"])
            for h in HOSTS[:2]
        )

        def ok(model: str) -> bool:
            body = {"model": model, "prompt": "x", "max_tokens": 2}
            return httpx.post(f"{gw.url}/v1/completions", json=body).status_code == 200

        assert ok("alpha") and ok("beta")
        dns.addresses = list(HOSTS)  # a pod appears: added, pins warmed
        wait_for(lambda: runtime.placement.up_engines() == names, 5, "engine added")
        wait_for(
            lambda: (
                pinned <= set(httpx.get(f"{sims[HOSTS[2]].url}/sim/stats").json()["registered"])
            ),
            5,
            "pins warmed on the new engine",
        )
        dns.addresses = list(HOSTS[1:])  # a pod goes away: drained, then removed
        wait_for(lambda: names[0] not in runtime.engines, 5, "engine removed")
        assert runtime.placement.up_engines() == names[1:]
        assert all(ok(m) for m in ("alpha", "beta", "gamma", "tiny-base"))
        dns.addresses = []  # an empty answer drains everything: 503, not a crash
        wait_for(lambda: not runtime.engines, 5, "all removed")
        body = {"model": "alpha", "prompt": "x", "max_tokens": 2}
        assert httpx.post(f"{gw.url}/v1/completions", json=body).status_code == 503
