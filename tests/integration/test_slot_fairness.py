"""#12.6 over HTTP: pins take at most their share of the slots, and steady traffic on some
adapters cannot starve another one (a waiting request drains a busy slot).

Before: 4 slots, 3 pinned by the rollback window, one adapter's steady traffic kept the last
slot and another got 184 of 198 requests refused."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from loadtest.simengine import SimEngineServer
from server.settings import Settings
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, set_channels
from tests.servers import GatewayServer, tiny_settings


def store_with_pins(root: Path, tmp: Path) -> AdapterStore:
    """x, y, z promoted first (older); then p1..p3 promoted twice: six pin candidates."""
    store = AdapterStore(root, TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for name in ("x", "y", "z"):
        add_version(store, tmp, name, "v1")
        store.update_channels(name, set_channels(Channels(stable="v1")), actor="t", action="x")
    for name in ("p1", "p2", "p3"):
        for v in ("v1", "v2"):
            add_version(store, tmp, name, v)
        channels = Channels(stable="v2", previous="v1")
        store.update_channels(name, set_channels(channels), actor="t", action="x")
    return store


def test_steady_traffic_and_pins_cannot_starve_a_cold_adapter(
    tmp_path: Path, sim_server: Callable[..., SimEngineServer]
) -> None:
    store = store_with_pins(tmp_path / "store", tmp_path)
    sim = sim_server(model="tiny-base", max_loras=4, max_cpu_loras=4, token_ms=5)
    settings = tiny_settings(
        store.root,
        [sim.url],
        tmp_path,
        engines=[{"url": sim.url, "max_cpu_loras": 4}],
        rollback_window_s=3600,
        load_wait_timeout_s=2,
        slot_min_hold_s=0.5,
    )
    with GatewayServer(Settings.model_validate(settings.model_dump())) as gw:
        assert len(gw.runtime.registry.pinned()) == 2  # half of 4 slots, not 3
        assert gw.metric("loragate_pins_over_budget") == 7  # 9 candidates, newest pinned
        stop = threading.Event()

        def steady(model: str) -> None:  # always a stream in flight on `model`
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    body = {"model": model, "prompt": "x", "max_tokens": 60, "stream": True}
                    http.post(f"{gw.url}/v1/completions", json=body)

        loops = [threading.Thread(target=steady, args=(m,)) for m in ("x", "z") * 4]
        for loop in loops:
            loop.start()
        codes: Counter[int] = Counter()
        try:
            time.sleep(1.0)
            with httpx.Client(timeout=30) as http:
                for _ in range(15):
                    body = {"model": "y", "prompt": "x", "max_tokens": 2}
                    codes[http.post(f"{gw.url}/v1/completions", json=body).status_code] += 1
                    time.sleep(0.1)
        finally:
            stop.set()
            for loop in loops:
                loop.join()
        assert codes[200] >= 14, codes  # served, not starved (was: nearly all 503)
        assert gw.metric("loragate_slot_drains_total", engine="engine-0") >= 1
        registered = httpx.get(f"{sim.url}/sim/stats").json()["max_registered"]
        assert registered <= 4
