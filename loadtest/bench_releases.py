"""Benchmark: how fast releases move traffic, against a simulated engine + the gateway (loopback).

    python -m loadtest.bench_releases --out loadtest/results/releases.json

- rollback: `POST /admin/adapters/bench/rollback` round trip, the switch time the gateway
  reports (channels write + audit + rescan + pins), the first request after it, and the
  engine loads it caused (must be 0: the previous version is kept warm). After each rollback
  a forced promotion restores the starting point.
- landing → servable: a packaged version directory copied under the store (`copytree`, not
  atomic), then requests to `bench@<version>` until one succeeds. `watch`: the gateway finds
  it by polling the store (every 0.5 s); `register`: the copier calls the JSON register
  endpoint right after the copy. Both include the engine's adapter load (`--load-ms`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from loadtest.gateway_server import GatewayServer
from loadtest.simengine import SimConfig, SimEngineServer
from server.settings import Settings
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore

TOKEN = secrets.token_hex(16)  # this run only
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "mean": round(statistics.fmean(ordered), 2),
        "max": round(ordered[-1], 2),
    }


def build(tmp: Path, landings: int) -> tuple[AdapterStore, Path, list[Path]]:
    """The store (bench v1, v2: stable v1) and `landings` packaged versions outside it."""
    from loadtest.tool.tinystore import TINY_CONFIG
    from tests.factory import TINY_SPEC, add_version

    store = AdapterStore(tmp / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for i, version in enumerate(("v1", "v2")):
        add_version(store, tmp, "bench", version, seed=i)
    store.update_channels("bench", lambda c: Channels(stable="v1"), actor="bench", action="setup")
    outside = AdapterStore(tmp / "incoming", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    ready = [
        add_version(outside, tmp, "bench", f"v{10 + i}", seed=10 + i).path for i in range(landings)
    ]
    base_config = tmp / "tiny-base-config.json"
    base_config.write_text(json.dumps(TINY_CONFIG))
    return store, base_config, ready


def measure_rollbacks(http: httpx.Client, sim: SimEngineServer, n: int) -> dict[str, Any]:
    promote = {"version": "v2", "force": True}
    assert http.post("/admin/adapters/bench/promote", json=promote).status_code == 200
    loads_before = http.get(f"{sim.url}/sim/stats").json()["loads"]
    api, reported, first, restore = [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        response = http.post("/admin/adapters/bench/rollback")
        api.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.text
        reported.append(response.json()["switch_ms"])
        t0 = time.perf_counter()
        answer = http.post(
            "/v1/completions", json={"model": "bench", "prompt": "x", "max_tokens": 1}
        )
        first.append((time.perf_counter() - t0) * 1000)
        assert answer.headers["x-adapter-version"] == "bench@v1", answer.text
        t0 = time.perf_counter()
        assert http.post("/admin/adapters/bench/promote", json=promote).status_code == 200
        restore.append((time.perf_counter() - t0) * 1000)
    loads = http.get(f"{sim.url}/sim/stats").json()["loads"] - loads_before
    return {
        "n": n,
        "api_round_trip_ms": summary(api),
        "reported_switch_ms": summary(reported),
        "first_request_after_ms": summary(first),
        "engine_loads_caused": loads,
        "forced_promotion_back_ms": summary(restore),
    }


def measure_landings(
    http: httpx.Client, store: AdapterStore, ready: list[Path], register: bool
) -> dict[str, Any]:
    total, copy, tries = [], [], []
    for src in ready:
        target = store.root / "bench" / src.name
        t0 = time.perf_counter()
        shutil.copytree(src, target)
        copied = time.perf_counter()
        if register:
            body = {"version": src.name}
            assert http.post("/admin/adapters/bench/versions", json=body).status_code == 201
        attempts = 0
        while True:
            attempts += 1
            r = http.post(
                "/v1/completions",
                json={"model": f"bench@{src.name}", "prompt": "x", "max_tokens": 1},
            )
            if r.status_code == 200:
                break
            assert r.status_code in (404, 503), r.text
            time.sleep(0.01)
        total.append((time.perf_counter() - t0) * 1000)
        copy.append((copied - t0) * 1000)
        tries.append(attempts)
    return {
        "n": len(ready),
        "files_landing_to_servable_ms": summary(total),
        "copy_ms": summary(copy),
        "requests_until_servable": summary(tries),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollbacks", type=int, default=30)
    parser.add_argument("--landings", type=int, default=10)
    parser.add_argument("--load-ms", type=float, default=200.0, help="sim adapter load time")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/releases.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        store, base_config, ready = build(tmp, 2 * args.landings)
        sim_config = SimConfig(
            model="tiny-base",
            max_loras=2,
            max_cpu_loras=4,
            load_ms=args.load_ms,
            ttft_ms=2.0,
            token_ms=1.0,
        )
        with SimEngineServer(sim_config) as sim:
            settings = Settings(
                store=store.root,
                base_model="tiny-base",
                base_config=base_config,
                engines=[{"url": sim.url, "max_cpu_loras": 4}],
                admin_token=TOKEN,
                rollback_window_s=3600,
                log_json=False,
            )
            with (
                GatewayServer(settings) as gw,
                httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as http,
            ):
                rollback = measure_rollbacks(http, sim, args.rollbacks)
                watch = measure_landings(http, store, ready[: args.landings], register=False)
                registered = measure_landings(http, store, ready[args.landings :], register=True)
    result = {
        "setup": {
            "engine": "loadtest simulated vLLM (loopback)",
            "sim_load_ms": args.load_ms,
            "store_poll_s": 0.5,
            "cpus": os.cpu_count(),
            "note": "2-core machine shared with other work; numbers include that noise",
        },
        "rollback": rollback,
        "landing_to_servable": {"watch": watch, "register_api": registered},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
