"""Benchmark: overload. Poisson arrivals at 0.5x (unloaded reference), 2x and 4x the rate an engine
sustains, sent to a simulated engine directly and through the gateway, in one run. What a client
sees: latency of the accepted requests, the share shed (503) and whether every shed answer
carried Retry-After.

    python -m loadtest.bench_overload --seconds 20

Two identical simulated engines (one behind the gateway, one called directly). Each serves
`--max-num-seqs` requests at once (each ~ttft + max_tokens x token_ms); past that it queues
internally, as vLLM does. The gateway admits `--max-inflight` requests
to it and queues at most `--max-queue-wait-s` of expected wait; the rest are shed at once.
Each server runs in its own process; this process only generates load.
Writes loadtest/results/overload.json and overload.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadtest.benchkit import build_store, percentile, process
from loadtest.threaded import free_port

RESULTS = Path(__file__).resolve().parent / "results"


async def offer(
    url: str, rate: float, seconds: float, model: str, max_tokens: int
) -> dict[str, Any]:
    """Open-loop Poisson arrivals at `rate`/s for `seconds`; every answer's latency and code."""
    rng = random.Random(7)
    results: list[tuple[int, float, bool]] = []  # status, seconds, Retry-After present
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def one(at: float, start: float) -> None:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            t0 = time.perf_counter()
            body = {"model": model, "prompt": "x", "max_tokens": max_tokens, "ignore_eos": True}
            try:
                r = await http.post("/v1/completions", json=body)
                results.append(
                    (r.status_code, time.perf_counter() - t0, "retry-after" in r.headers)
                )
            except httpx.TransportError:
                results.append((0, time.perf_counter() - t0, False))

        arrivals, at = [], 0.0
        while (at := at + rng.expovariate(rate)) < seconds:
            arrivals.append(at)
        start = time.perf_counter()
        await asyncio.gather(*(one(a, start) for a in arrivals))
    ok = [s for code, s, _ in results if code == 200]
    shed = [(code, retry) for code, _, retry in results if code == 503]
    return {
        "offered_rps": rate,
        "requests": len(results),
        "codes": {
            str(c): sum(1 for r in results if r[0] == c) for c in sorted({r[0] for r in results})
        },
        "accepted_p50_ms": round(percentile(ok, 0.5) * 1000, 1),
        "accepted_p99_ms": round(percentile(ok, 0.99) * 1000, 1),
        "served_rps": round(len(ok) / seconds, 1),
        "shed_share": round(len(shed) / max(1, len(results)), 3),
        "shed_with_retry_after": all(retry for _, retry in shed),
        "_latencies": ok,
    }


def gateway_config(root: Path, engine: str, args: argparse.Namespace, port: int) -> Path:
    from loadtest.tool.tinystore import TINY_CONFIG

    (root / "base.json").write_text(json.dumps(TINY_CONFIG))
    config = root / "gateway.yaml"
    engines = [{"url": engine, "max_inflight": args.max_inflight, "max_queue": 10_000}]
    settings = {
        "store": str(root / "store"),
        "base_model": "tiny-base",
        "base_config": str(root / "base.json"),
        "engines": engines,
        "port": port,
        "metrics_port": None,
        "rollback_window_s": 0,
        "max_queue_wait_s": args.max_queue_wait_s,
    }
    config.write_text(json.dumps(settings))
    return config


def sim_command(args: argparse.Namespace, port: int) -> list[str]:
    return [sys.executable, "-m", "loadtest.simengine", "--port", str(port), "--model",
            "tiny-base", "--max-loras", "2", "--max-cpu-loras", "2", "--max-num-seqs",
            str(args.max_num_seqs), "--ttft-ms", str(args.ttft_ms), "--token-ms",
            str(args.token_ms), "--answer-tokens", str(args.max_tokens)]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Two identical engines: one behind the gateway, one called directly, so the backlog a
    direct round leaves cannot leak into the gateway's next round (the gateway learns its
    admission limit from its engine's queue)."""
    per_request_s = (args.ttft_ms + args.max_tokens * args.token_ms) / 1000
    capacity = args.max_num_seqs / per_request_s  # requests/s the engine sustains
    behind_port, direct_port, gw_port = free_port(), free_port(), free_port()
    behind, engine = f"http://127.0.0.1:{behind_port}", f"http://127.0.0.1:{direct_port}"
    out: dict[str, Any] = {"engine_capacity_rps": round(capacity, 1), "config": vars(args)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        process(sim_command(args, behind_port), f"{behind}/health"),
        process(sim_command(args, direct_port), f"{engine}/health"),
    ):
        root = Path(tmp)
        build_store(root, ["alpha"])
        body = {"lora_name": "alpha@v1", "lora_path": str(root / "store/alpha/v1")}
        httpx.post(f"{engine}/v1/load_lora_adapter", json=body).raise_for_status()
        config = gateway_config(root, behind, args, gw_port)
        command = [sys.executable, "-m", "server.cli.main", "serve", "--config", str(config)]
        gateway = f"http://127.0.0.1:{gw_port}"
        with process(command, f"{gateway}/readyz"):
            httpx.post(f"{gateway}/v1/completions", json={"model": "alpha", "prompt": "x"})
            for load in args.loads:  # alternate targets at each load level
                rate = load * capacity
                for target, url, model in (
                    ("gateway", gateway, "alpha"),
                    ("direct", engine, "alpha@v1"),
                ):
                    result = asyncio.run(offer(url, rate, args.seconds, model, args.max_tokens))
                    out.setdefault(target, {})[f"{load:g}x"] = result
                    print(f"{target:8} {load:g}x {rate:6.1f} rps: accepted p50/p99 "
                          f"{result['accepted_p50_ms']}/{result['accepted_p99_ms']} ms, served "
                          f"{result['served_rps']} rps, shed {result['shed_share']:.1%}, codes "
                          f"{result['codes']}", flush=True)  # fmt: skip
    return out


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for target, style in (("gateway", "-"), ("direct", "--")):
        for load, result in out[target].items():
            lat = sorted(result["_latencies"])
            if lat:
                axes[0].plot([v * 1000 for v in lat], [i / len(lat) for i in range(len(lat))],
                             style, label=f"{target} {load}")  # fmt: skip
    axes[0].set(xscale="log", xlabel="accepted request latency (ms)", ylabel="CDF",
                title="Latency of accepted requests")  # fmt: skip
    axes[0].legend(fontsize=7)
    loads = list(out["gateway"])
    for target in ("gateway", "direct"):
        axes[1].plot(
            loads, [out[target][k]["accepted_p99_ms"] for k in loads], "o-", label=f"{target} p99"
        )
    axes[1].set(xlabel="offered load (x engine capacity)", ylabel="ms", yscale="log",
                title="Accepted p99 under overload")  # fmt: skip
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--loads", type=float, nargs="+", default=[0.5, 2, 4])
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=20)
    parser.add_argument("--token-ms", type=float, default=20)
    parser.add_argument("--max-inflight", type=int, default=8)
    parser.add_argument("--max-queue-wait-s", type=float, default=0.15)
    parser.add_argument("--out", type=Path, default=RESULTS / "overload.json")
    args = parser.parse_args()
    out = run(args)
    plot(out, args.out.with_suffix(".png"))
    for target in ("gateway", "direct"):
        for result in out[target].values():
            result.pop("_latencies")
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
