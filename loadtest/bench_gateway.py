"""Benchmark: the same Zipf/Poisson workload sent directly to a simulated engine and through the
gateway, side by side in one run.

    python -m loadtest.bench_gateway --adapters 12 --slots 4 --rate 30 --duration 20

The engine and the gateway each run in their own process (as in production); the load
generator is this process. Direct: every adapter is registered on the engine up front, as a
bare vLLM deployment would do; the engine's CPU cache (max_cpu_loras) then reloads adapters
behind the caller's back. Gateway: the registry keeps the engine within its slots (LRU,
single-flight loads) and reports swaps.
Writes figures to loadtest/results/gateway_vs_direct.json and a latency CDF plot (PNG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.threaded import free_port
from loadtest.workload import Arrival, poisson_zipf
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(url: str, arrivals: list[Arrival], model_map: dict[str, str]) -> dict[str, Any]:
    """Send every arrival at its time; latency per request, gateway overhead when reported."""
    latencies: list[float] = []
    overheads: list[float] = []
    codes: dict[int, int] = {}
    limits = httpx.Limits(max_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        start = time.perf_counter()

        async def one(a: Arrival) -> None:
            await asyncio.sleep(max(0.0, a.at_s - (time.perf_counter() - start)))
            t0 = time.perf_counter()
            body = {"model": model_map[a.model], "prompt": a.prompt, "max_tokens": a.max_tokens}
            r = await http.post("/v1/completions", json=body)
            latencies.append(time.perf_counter() - t0)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if "x-gateway-overhead-ms" in r.headers:
                overheads.append(float(r.headers["x-gateway-overhead-ms"]))

        await asyncio.gather(*(one(a) for a in arrivals))
        wall = time.perf_counter() - start
    ms = {
        f"p{round(q * 100)}_ms": round(percentile(latencies, q) * 1000, 1)
        for q in (0.5, 0.95, 0.99)
    }
    return {
        "requests": len(arrivals),
        "codes": codes,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(arrivals) / wall, 1),
        **ms,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "overhead_p50_ms": round(percentile(overheads, 0.5), 3) if overheads else None,
        "overhead_p99_ms": round(percentile(overheads, 0.99), 3) if overheads else None,
        "_latencies": latencies,
    }


def build_store(root: Path, names: list[str]) -> AdapterStore:
    from tests.factory import TINY_SPEC, add_version

    store = AdapterStore(root / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for name in names:
        add_version(store, root, name, "v1")
        store.update_channels(
            name, lambda c: Channels(stable="v1"), actor="bench", action="promote"
        )
    return store


@contextlib.contextmanager
def process(args: list[str], health_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process (its own GIL, like production), stopped on exit."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(health_url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[:4]} did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def sim_engine(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "loadtest.simengine",
        "--port",
        str(port),
        "--model",
        "tiny-base",
        "--max-loras",
        str(args.max_loras),
        "--max-cpu-loras",
        str(args.slots),
        "--load-ms",
        str(args.load_ms),
        "--ttft-ms",
        str(args.ttft_ms),
        "--token-ms",
        str(args.token_ms),
    ]
    return process(command, f"http://127.0.0.1:{port}/health")


def run_direct(
    args: argparse.Namespace, store: AdapterStore, names: list[str], arrivals: list[Arrival]
) -> dict[str, Any]:
    """Bare vLLM: every adapter registered up front; the CPU cache reloads them silently."""
    with sim_engine(args) as engine:
        url = _url_of(engine)
        for name in names:
            body = {"lora_name": f"{name}@v1", "lora_path": str(store.root / name / "v1")}
            httpx.post(f"{url}/v1/load_lora_adapter", json=body).raise_for_status()
        result = asyncio.run(drive(url, arrivals, {n: f"{n}@v1" for n in names}))
        stats = httpx.get(f"{url}/sim/stats").json()
        result["engine_hidden_reloads"] = stats["cpu_cache_reloads"]
    return result


def run_gateway(
    args: argparse.Namespace,
    store: AdapterStore,
    names: list[str],
    arrivals: list[Arrival],
    tmp: Path,
) -> dict[str, Any]:
    from tests.factory import TINY_CONFIG

    with sim_engine(args) as engine:
        engine_url, port, metrics_port = _url_of(engine), free_port(), free_port()
        base_config = tmp / "base-config.json"
        base_config.write_text(json.dumps(TINY_CONFIG))
        config = tmp / "gateway.yaml"
        config.write_text(
            json.dumps(
                {
                    "store": str(store.root),
                    "base_model": "tiny-base",
                    "base_config": str(base_config),
                    "engines": [{"url": engine_url, "max_cpu_loras": args.slots}],
                    "rollback_window_s": 0,
                    "load_wait_timeout_s": 30,
                    "metrics_port": metrics_port,
                }
            )
        )
        serve = [
            sys.executable,
            "-m",
            "server.cli.main",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ]
        url = f"http://127.0.0.1:{port}"
        with process(serve, f"{url}/readyz"):
            result = asyncio.run(drive(url, arrivals, {n: n for n in names}))
            stats = httpx.get(f"{engine_url}/sim/stats").json()
            result["engine_loads"] = stats["loads"]
            result["engine_hidden_reloads"] = stats["cpu_cache_reloads"]
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            for metric in ("evictions", "thrash"):
                result[metric] = metric_sum(text, f"loragate_adapter_{metric}_total")
            for name in ("adapter_load_seconds", "load_wait_seconds"):
                count = metric_sum(text, f"loragate_{name}_count")
                total = metric_sum(text, f"loragate_{name}_sum")
                result[f"{name.removesuffix('_seconds')}_mean_ms"] = (
                    round(total / count * 1000, 1) if count else None
                )
    return result


def _url_of(proc: subprocess.Popen[bytes]) -> str:
    args = [str(a) for a in proc.args]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{args[args.index('--port') + 1]}"


def metric_sum(text: str, name: str) -> float:
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"adapter-{i:02d}" for i in range(args.adapters)]
    arrivals = poisson_zipf(names, rate_per_s=args.rate, duration_s=args.duration, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp), names)
        direct = run_direct(args, store, names, arrivals)
        via = run_gateway(args, store, names, arrivals, Path(tmp))
    return {"config": {k: str(v) for k, v in vars(args).items()}, "direct": direct, "gateway": via}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label in ("direct", "gateway"):
        xs = sorted(v * 1000 for v in result[label]["_latencies"])
        ax.plot(xs, [i / len(xs) for i in range(1, len(xs) + 1)], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("request latency (ms)")
    ax.set_ylabel("fraction of requests")
    cfg = result["config"]
    ax.set_title(f"{cfg['adapters']} adapters, {cfg['slots']} slots, {cfg['rate']} req/s, Zipf")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapters", type=int, default=12)
    parser.add_argument("--slots", type=int, default=4, help="max_cpu_loras")
    parser.add_argument("--max-loras", type=int, default=4)
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--load-ms", type=float, default=25.0)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--token-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/gateway_vs_direct.json"))
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ImportError):  # matplotlib comes with the dev extra
        plot(result, args.out.with_suffix(".png"))
    for side in ("direct", "gateway"):
        result[side].pop("_latencies")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("direct", "gateway")}, indent=2))


if __name__ == "__main__":
    main()
