"""#13 end to end: haproxy (round robin, /readyz health checks) in front of two `loragate
serve` processes sharing three simulated engines (--max-cpu-loras 4) and one store; 40
adapters, Zipf traffic; one replica is killed with -9 mid-run.

Slow: needs Debian's haproxy (`make haproxy`, scripts/install_haproxy.sh); skipped without it.
The same checks without haproxy run in the default suite (test_scale_out.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.simengine import SimEngineServer
from loadtest.threaded import free_port
from tests.scaleout import (
    AUTH,
    GatewayProcess,
    gateway_settings,
    many_adapters,
    sim_stats,
    wait_for,
    zipf_traffic,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("haproxy") is None, reason="haproxy not installed: make haproxy"
    ),
]
SLOTS = 4
ADAPTERS = 40
REQUESTS = 1500


def haproxy_config(port: int, backends: list[str]) -> str:
    servers = "\n".join(
        f"    server gw{i} {url.removeprefix('http://')} check" for i, url in enumerate(backends)
    )
    return f"""\
global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
    # Without it a check must answer within `inter`: one slow /readyz on a busy machine marks
    # the only live replica down, and haproxy answers 503 itself (seen: 360 of 1,500).
    timeout check 2s
frontend api
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 300ms fall 2 rise 1
{servers}
"""


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[list[str]], str]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(backends: list[str]) -> str:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(port, backends))
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True)
        assert check.returncode == 0, check.stderr
        processes.append(subprocess.Popen(["haproxy", "-db", "-f", str(config)]))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 10, "haproxy ready")
        return url

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_two_replicas_behind_haproxy_survive_a_kill_9(
    tmp_path: Path,
    sim_server: Callable[..., SimEngineServer],
    haproxy: Callable[[list[str]], str],
) -> None:
    store = many_adapters(tmp_path / "store", tmp_path, ADAPTERS).root
    sims = [
        sim_server(model="tiny-base", max_loras=SLOTS, max_cpu_loras=SLOTS, token_ms=2)
        for _ in range(3)
    ]
    settings = gateway_settings(store, [s.url for s in sims], tmp_path)
    replicas = [GatewayProcess(settings, tmp_path, f"gw{i}") for i in range(2)]
    try:
        lb = haproxy([r.url for r in replicas])
        # A promotion through one replica reaches the other (through the balancer) in < 1 s.
        r = httpx.post(
            f"{replicas[0].url}/admin/adapters/a00/promote",
            json={"version": "v2", "force": True},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text

        def served_v2() -> bool:
            body = {"model": "a00", "prompt": "x", "max_tokens": 2}
            answer = httpx.post(f"{replicas[1].url}/v1/completions", json=body, timeout=10)
            return bool(answer.headers.get("x-adapter-version") == "a00@v2")

        assert wait_for(served_v2, 1.0, "promotion on the other replica") < 1.0

        killed: list[float] = []

        def kill_mid_run(i: int) -> None:
            if i == REQUESTS // 2:
                replicas[0].kill()
                killed.append(time.monotonic())

        outcome = asyncio.run(
            zipf_traffic(lambda i: [lb], ADAPTERS, REQUESTS, concurrency=8, on_request=kill_mid_run)
        )
    finally:
        for replica in replicas:
            replica.close()
    assert killed
    failed = REQUESTS - sum(n for code, n in outcome.codes.items() if code in (200, 429, 503))
    # Only requests in flight on the dead replica may fail: at most half of 8 in flight
    # (round robin), and haproxy's redispatch covers new connections to it.
    assert failed <= 8, outcome.codes
    assert outcome.missing_retry_after == 0
    assert not [u for u in outcome.undocumented if not u.startswith("502")], outcome.undocumented
    assert outcome.ok >= 0.95 * REQUESTS, outcome.codes
    busy = 0
    for sim in sims:
        stats = sim_stats(sim.url)
        assert stats["max_registered"] <= SLOTS, stats
        busy += stats["unloads_while_busy"]
    assert busy <= max(3, sum(sim_stats(s.url)["unloads"] for s in sims) // 20)
