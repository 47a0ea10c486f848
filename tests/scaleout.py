"""Shared pieces of the scale-out tests: a store of many adapters, simulated engines, gateway
replicas (threads, or processes that can be killed with -9), and Zipf traffic that counts
what the clients saw."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtest.threaded import free_port
from loadtest.tool.tinystore import TINY_CONFIG
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, set_channels

REPO = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "admin-token-for-scale-out-tests"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# 429 (rate limits) and 503 (no slot / no engine, with Retry-After) are the documented refusals.
DOCUMENTED = {429, 503}


def many_adapters(root: Path, tmp: Path, n: int) -> AdapterStore:
    """`a00` … `a{n-1}`, each with a stable v1; `a00` also has a v2 candidate."""
    store = AdapterStore(root, TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for i in range(n):
        name = f"a{i:02d}"
        add_version(store, tmp, name, "v1", seed=i)
        store.update_channels(name, set_channels(Channels(stable="v1")), actor="t", action="x")
    add_version(store, tmp, "a00", "v2", seed=99)
    return store


def gateway_settings(
    store: Path, engines: Sequence[str], tmp: Path, **extra: Any
) -> dict[str, Any]:
    base_config = tmp / "tiny-base-config.json"
    base_config.write_text(json.dumps(TINY_CONFIG))
    return {
        "store": str(store),
        "base_model": "tiny-base",
        "base_config": str(base_config),
        "engines": [{"url": u, "max_cpu_loras": 4} for u in engines],
        "admin_token": ADMIN_TOKEN,
        "rollback_window_s": 0,
        "load_wait_timeout_s": 5.0,
        "reconcile_interval_s": 30.0,
        "log_json": False,
        "metrics_port": 0,  # a free port each: replicas share this host
        **extra,
    }


class GatewayProcess:
    """`loragate serve` in its own process (so it can be killed with -9)."""

    def __init__(self, settings: dict[str, Any], tmp: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / f"{name}.yaml"
        config.write_text(yaml.safe_dump(settings))
        self.log = (tmp / f"{name}.log").open("wb")
        code = "from server.cli.main import app; app()"
        # Its own metrics listener port, where the gateway has one (metrics_port).
        env = {**os.environ, "PYTHONPATH": str(REPO), "LORAGATE_METRICS_PORT": str(free_port())}
        args = ["serve", "--config", str(config), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        wait_for(self._ready, timeout_s=30, what=f"{name} ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """kill -9: no drain, no cleanup."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)
    return time.monotonic() - start


def sim_stats(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/sim/stats", timeout=5).json()
    return result


@dataclass
class Outcome:
    """What the clients saw."""

    codes: Counter[int | str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)  # status or error, and body
    missing_retry_after: int = 0

    @property
    def ok(self) -> int:
        return self.codes[200]


async def zipf_traffic(
    urls: Callable[[int], Sequence[str]],
    adapters: int,
    requests: int,
    *,
    concurrency: int = 8,
    seed: int = 1,
    stream_every: int = 5,
    on_request: Callable[[int], None] | None = None,
) -> Outcome:
    """`requests` completions over adapters a00… with Zipf(1) popularity, `concurrency` at a
    time; request i goes to urls(i)[0], and on a refused connection (a dead replica, as a
    load balancer would) to the next one. Every `stream_every`-th request streams."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(adapters)]
    models = [f"a{i:02d}" for i in rng.choices(range(adapters), weights, k=requests)]
    outcome = Outcome()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if on_request is not None:
                on_request(i)
            await one(http, i, models[i], urls(i), i % stream_every == 0, outcome)

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return outcome


async def one(
    http: httpx.AsyncClient, i: int, model: str, urls: Sequence[str], stream: bool, out: Outcome
) -> None:
    body = {"model": model, "prompt": f"q{i}", "max_tokens": 4, "stream": stream}
    start = time.perf_counter()
    for url in urls:
        try:
            response = await http.post(f"{url}/v1/completions", json=body)
        except httpx.ConnectError:
            continue  # the replica is gone before anything was sent: the next one
        except httpx.TransportError as exc:  # in flight on a replica that died
            out.codes[type(exc).__name__] += 1
            return
        break
    else:
        out.codes["no replica"] += 1
        return
    out.latencies_s.append(time.perf_counter() - start)
    out.codes[response.status_code] += 1
    if response.status_code in DOCUMENTED:
        out.missing_retry_after += "retry-after" not in response.headers
    elif response.status_code != 200 or (stream and "[DONE]" not in response.text):
        out.undocumented.append(f"{response.status_code} {response.text[:300]}")
    elif stream and '"error"' in response.text:
        out.undocumented.append(f"stream error {response.text[:300]}")
