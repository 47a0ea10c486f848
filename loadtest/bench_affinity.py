"""Benchmark: placement policies over shared engines, through gateway replicas (#13).

    python -m loadtest.bench_affinity              # 4 engines x 8 slots, 200 adapters, 20 req/s
    python -m loadtest.bench_affinity --rate 30 --out loadtest/results/affinity_30rps.json

One run, the same Poisson/Zipf(1.0) arrivals for every case: `affinity`, `round_robin` and
`least_loaded` through 2 gateway replicas, then `affinity` through 1 replica (do replicas
fight over slots?). Every case starts from empty engines. Engines and gateways are separate
processes (`loadtest.simengine`, `loragate serve`); this process is the client and alternates
requests between the replicas, as a round-robin load balancer would. Measured where it
matters: adapter loads are counted by the engines (`/sim/stats`), latency is what the client
sees. Loads per 1,000 requests are given for the whole run and after a warm-up (engines
start empty). Writes loadtest/results/affinity.json and affinity.png.

Latencies on a shared 2-core machine move with whatever else runs there (the client, four
engines and two gateways are seven processes); the engine-counted loads do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from loadtest.benchkit import Arrival, build_store, metric_sum, percentile, poisson_zipf, process
from loadtest.threaded import free_port

CASES = (("affinity", 2), ("round_robin", 2), ("least_loaded", 2), ("affinity", 1))
ADMIN_TOKEN = "bench-affinity"  # noqa: S105 (a loopback benchmark's own token)
# Gateway metrics summed over the replicas: why requests waited, what the registry did.
GATEWAY_METRICS = (
    "loragate_load_wait_seconds_sum",
    "loragate_load_wait_seconds_count",
    "loragate_adapter_load_seconds_sum",
    "loragate_adapter_load_seconds_count",
    "loragate_adapter_already_loaded_total",
    "loragate_adapter_gone_retries_total",
    "loragate_slot_drains_total",
    "loragate_slot_refusals_total",
)


@contextlib.contextmanager
def engines(args: argparse.Namespace) -> Iterator[list[str]]:
    """`args.engines` simulated engines, each in its own process."""
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(args.engines):
            port = free_port()
            command = [
                *(sys.executable, "-m", "loadtest.simengine", "--port", str(port)),
                *("--model", "tiny-base", "--max-loras", str(args.max_loras)),
                *("--max-cpu-loras", str(args.slots), "--load-ms", str(args.load_ms)),
                *("--ttft-ms", str(args.ttft_ms), "--token-ms", str(args.token_ms)),
            ]
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(process(command, f"{url}/health"))
            urls.append(url)
        yield urls


@contextlib.contextmanager
def gateways(
    args: argparse.Namespace, policy: str, replicas: int, engine_urls: list[str], store: Path
) -> Iterator[list[str]]:
    """`replicas` gateway processes over the same engines and store, with `policy`."""
    from loadtest.tool.tinystore import TINY_CONFIG

    tmp = store.parent
    (tmp / "base-config.json").write_text(json.dumps(TINY_CONFIG))
    settings = {
        "store": str(store),
        "base_model": "tiny-base",
        "base_config": str(tmp / "base-config.json"),
        "engines": [{"url": u, "max_cpu_loras": args.slots} for u in engine_urls],
        "placement_policy": policy,
        "rollback_window_s": 0,
        "load_wait_timeout_s": 30,
        "admin_token": ADMIN_TOKEN,  # /metrics on the API port may need it
        "log_json": True,
    }
    with contextlib.ExitStack() as stack:
        urls = []
        for i in range(replicas):
            config = tmp / f"gateway-{policy}-{i}.yaml"
            config.write_text(json.dumps(settings))
            port = free_port()
            serve = [
                *(sys.executable, "-m", "server.cli.main", "serve"),
                *("--config", str(config), "--port", str(port)),
            ]
            url = f"http://127.0.0.1:{port}"
            # Each replica its own metrics listener, where the gateway has one (metrics_port).
            env = {**os.environ, "LORAGATE_METRICS_PORT": str(free_port())}
            log = args.logs / f"gateway-{policy}-{replicas}-{i}.log" if args.logs else None
            stack.enter_context(process(serve, f"{url}/readyz", env, log))
            urls.append(url)
        yield urls


def engine_totals(engine_urls: list[str]) -> dict[str, int]:
    totals = {"loads": 0, "unloads": 0, "unloads_while_busy": 0, "max_registered": 0}
    for url in engine_urls:
        stats = httpx.get(f"{url}/sim/stats").json()
        for key in ("loads", "unloads", "unloads_while_busy"):
            totals[key] += stats[key]
        totals["max_registered"] = max(totals["max_registered"], stats["max_registered"])
    return totals


async def drive(
    urls: list[str], arrivals: list[Arrival], engine_urls: list[str], warmup_s: float
) -> dict[str, Any]:
    """Send every arrival at its time to replica i % len(urls); the engines' counters are
    read once the warm-up is over."""
    latencies: list[tuple[float, float]] = []  # (sent at, seconds)
    codes: dict[str, int] = {}
    at_warmup: dict[str, int] = {}
    limits = httpx.Limits(max_connections=1024)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()

        async def one(i: int, a: Arrival) -> None:
            await asyncio.sleep(max(0.0, a.at_s - (time.perf_counter() - start)))
            body = {"model": a.model, "prompt": a.prompt, "max_tokens": a.max_tokens}
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{urls[i % len(urls)]}/v1/completions", json=body)
                code = str(r.status_code)
            except httpx.TransportError as exc:
                code = type(exc).__name__
            codes[code] = codes.get(code, 0) + 1
            if code == "200":
                latencies.append((a.at_s, time.perf_counter() - t0))

        async def snapshot() -> None:
            await asyncio.sleep(warmup_s)
            at_warmup.update(await asyncio.to_thread(engine_totals, engine_urls))

        await asyncio.gather(snapshot(), *(one(i, a) for i, a in enumerate(arrivals)))
        wall = time.perf_counter() - start
    return {"codes": codes, "wall_s": round(wall, 1), "_lat": latencies, "_warm": at_warmup}


def gateway_totals(urls: list[str]) -> dict[str, float]:
    totals = dict.fromkeys(GATEWAY_METRICS, 0.0)
    for url in urls:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        text = httpx.get(f"{url}/metrics", headers=auth).text
        for name in GATEWAY_METRICS:
            totals[name] += metric_sum(text, name)
    return {k: round(v, 3) for k, v in totals.items()}


def summarize(
    raw: dict[str, Any], arrivals: list[Arrival], totals: dict[str, int], warmup_s: float
) -> dict[str, Any]:
    lat = [s for _, s in raw["_lat"]]
    steady = [s for at, s in raw["_lat"] if at >= warmup_s]
    after = sum(1 for a in arrivals if a.at_s >= warmup_s)
    warm_loads = totals["loads"] - raw["_warm"].get("loads", 0)
    return {
        "requests": len(arrivals),
        "codes": raw["codes"],
        "loads": totals["loads"],
        "loads_per_1000": round(totals["loads"] / len(arrivals) * 1000, 1),
        "steady_loads_per_1000": round(warm_loads / max(1, after) * 1000, 1),
        "max_registered": totals["max_registered"],
        "unloads": totals["unloads"],
        "unloads_while_busy": totals["unloads_while_busy"],
        **{f"p{round(q * 100)}_ms": round(percentile(lat, q) * 1000, 1) for q in (0.5, 0.95)},
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "steady_p99_ms": round(percentile(steady, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "_lat": lat,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"adapter-{i:03d}" for i in range(args.adapters)]
    arrivals = poisson_zipf(
        names,
        rate_per_s=args.rate,
        duration_s=args.duration,
        zipf_s=args.zipf,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp), names).root
        for policy, replicas in CASES:
            label = f"{policy}, {replicas} replica{'s' if replicas > 1 else ''}"
            if label not in args.cases:
                continue
            with (
                engines(args) as engine_urls,
                gateways(args, policy, replicas, engine_urls, store) as urls,
            ):
                raw = asyncio.run(drive(urls, arrivals, engine_urls, args.warmup))
                results[label] = summarize(raw, arrivals, engine_totals(engine_urls), args.warmup)
                results[label]["gateways"] = gateway_totals(urls)
            print(label, {k: v for k, v in results[label].items() if k != "_lat"}, flush=True)
    config = vars(args) | {"out": str(args.out), "logs": str(args.logs), "cases": args.cases}
    return {"config": config, "results": results, **verdict(results)}


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked on the steady-state figures."""
    if len(results) < len(CASES):
        return {}
    aff, rr = results["affinity, 2 replicas"], results["round_robin, 2 replicas"]
    one = results["affinity, 1 replica"]
    ratio = aff["steady_loads_per_1000"] / max(1e-9, rr["steady_loads_per_1000"])
    return {
        "affinity_over_round_robin_loads": round(ratio, 3),
        "target_loads_at_most_a_third": ratio <= 1 / 3,
        "target_p99_no_worse": aff["steady_p99_ms"] <= rr["steady_p99_ms"],
        "two_replicas_over_one_loads": round(
            aff["steady_loads_per_1000"] / max(1e-9, one["steady_loads_per_1000"]), 3
        ),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = result["results"]
    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = list(results)
    steady = [results[k]["steady_loads_per_1000"] for k in labels]
    bars.bar(range(len(labels)), steady, color=["C0", "C1", "C2", "C3"])
    bars.set_xticks(range(len(labels)), [k.replace(", ", "\n") for k in labels], fontsize=8)
    bars.set_ylabel("adapter loads per 1,000 requests (after warm-up)")
    for i, value in enumerate(steady):
        bars.annotate(f"{value:g}", (i, value), ha="center", va="bottom", fontsize=8)
    for i, label in enumerate(labels):
        xs = sorted(v * 1000 for v in results[label]["_lat"])
        p99 = results[label]["p99_ms"]
        ys = [j / len(xs) for j in range(1, len(xs) + 1)]
        cdf.plot(xs, ys, color=f"C{i}", label=f"{label} (p99 {p99:g} ms)")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency seen by the client (ms)")
    cdf.set_ylabel("fraction of requests")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)
    cfg = result["config"]
    fig.suptitle(
        f"{cfg['engines']} engines x {cfg['slots']} slots, {cfg['adapters']} adapters, "
        f"Zipf({cfg['zipf']}), Poisson {cfg['rate']} req/s for {cfg['duration']} s",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add = parser.add_argument
    add("--engines", type=int, default=4)
    add("--slots", type=int, default=8, help="max_cpu_loras per engine")
    add("--max-loras", type=int, default=4, help="adapters per batch (vLLM --max-loras)")
    add("--adapters", type=int, default=200)
    add("--zipf", type=float, default=1.0)
    add("--rate", type=float, default=20.0, help="requests per second (Poisson)")
    add("--duration", type=float, default=45.0, help="seconds of arrivals per case")
    add("--warmup", type=float, default=10.0, help="seconds before steady-state counting")
    add("--max-tokens", type=int, default=16)
    add("--load-ms", type=float, default=50.0, help="adapter load time (pauses decoding)")
    add("--ttft-ms", type=float, default=20.0)
    add("--token-ms", type=float, default=5.0)
    add("--seed", type=int, default=0)
    add("--out", type=Path, default=Path("loadtest/results/affinity.json"))
    add("--logs", type=Path, default=None, help="directory for the gateways' logs")
    labels = [f"{p}, {n} replica{'s' if n > 1 else ''}" for p, n in CASES]
    add("--cases", nargs="+", default=labels, choices=labels, metavar="CASE")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ImportError):  # matplotlib comes with the dev extra
        plot(result, args.out.with_suffix(".png"))
    for summary in result["results"].values():
        summary.pop("_lat")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
