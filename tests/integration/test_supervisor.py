"""Managed engines: started by the gateway, restarted after a crash, pins re-warmed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from loadtest.threaded import free_port
from server.store.store import AdapterStore
from tests.fakes import crash
from tests.servers import GatewayServer, tiny_settings


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            if predicate():
                return
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_managed_engine_crash_restart_rewarm(tiny_store: AdapterStore, tmp_path: Path) -> None:
    port = free_port()
    managed = {
        "kind": "sim",
        "port": port,
        "max_loras": 2,
        "restart_backoff_s": 0.2,
        "extra_args": ["--load-ms", "20", "--token-ms", "1"],
    }
    settings = tiny_settings(
        tiny_store.root,
        [],
        tmp_path,
        rollback_window_s=3600,
        max_pinned_share=0.67,
        reconcile_interval_s=60,
        log_dir=tmp_path / "logs",
        engines=[{"managed": managed, "max_cpu_loras": 3}],
    )
    with GatewayServer(settings) as gw:
        runtime = gw.runtime
        wait_for(lambda: httpx.get(f"{gw.url}/readyz").status_code == 200)
        body = {"model": "alpha", "prompt": "x", "max_tokens": 2}
        assert (
            httpx.post(f"{gw.url}/v1/completions", json=body)
            .json()["choices"][0]["text"]
            .startswith("[alpha@v2]")
        )
        # Channels were just written, so versions are pinned (max_pinned_share 2/3 of 3 slots).
        pinned = runtime.registry.pinned()
        assert len(pinned) == 2
        first_pid = runtime.supervisors[0].pid

        crash(runtime.supervisors[0])  # the engine crashes
        wait_for(lambda: httpx.get(f"{gw.url}/readyz").status_code == 503)

        wait_for(
            lambda: (
                runtime.supervisors[0].starts == 2
                and httpx.get(f"{gw.url}/readyz").status_code == 200
            )
        )
        assert runtime.supervisors[0].pid != first_pid
        sim = f"http://127.0.0.1:{port}"
        wait_for(lambda: pinned <= set(httpx.get(f"{sim}/sim/stats").json()["registered"]))
        assert httpx.post(f"{gw.url}/v1/completions", json=body).status_code == 200
        assert gw.metric("loragate_engine_restarts_total", engine="engine-0") == 1
        assert (tmp_path / "logs" / "engine-0.log").read_text().count("loragate: starting") == 2
