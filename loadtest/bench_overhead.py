"""Benchmark: what the gateway adds, measured from the client, side by side in one run.

    python -m loadtest.bench_overhead [--litellm /path/to/venv/bin/litellm] [--upstream sim]

Targets: the upstream directly, the gateway in front of it, and optionally another
OpenAI-compatible proxy in front of the same upstream. The upstream is
`loadtest.fastupstream` (answers at once, raw asyncio), so the figures are the proxies' own
cost; `--upstream sim` uses the simulated vLLM engine with zero latencies instead (it costs
~3 ms of CPU per request itself, so there the engine is the bottleneck, as a real one is).
Each server runs in its own process; the load generator (this process, aiohttp) runs rounds
that alternate between the targets, at 1, 16 and 64 concurrent clients, JSON and
streaming. Reported: client latency p50/p99 (stream: time to first token and chunks/s),
requests/s, and CPU seconds per request of the gateway process (from /proc, over the round).
With `--profile-s S`, py-spy then samples the gateway for S seconds under 4 concurrent JSON
clients and the figures gain its top frames by self time and where the time goes inclusively.
Writes loadtest/results/overhead.json and overhead.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from loadtest import pyspy
from loadtest.benchkit import build_store, percentile, process
from loadtest.threaded import free_port

RESULTS = Path(__file__).resolve().parent / "results"
# Sent to every target (the gateway runs open and the upstream ignores it; LiteLLM needs it).
BENCH_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)  # s: whole answer, or to first token
    chunks: int = 0
    errors: int = 0
    wall_s: float = 0.0


async def drive(url: str, model: str, concurrency: int, requests: int, stream: bool) -> Round:
    """`concurrency` clients sending `requests` chat completions in all, back to back."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    if stream:
        body["stream"] = True
    result, left = Round(), [requests]
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as http:

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                async with http.post("/v1/chat/completions", json=body) as response:
                    if response.status != 200:
                        result.errors += 1
                        await response.read()
                        continue
                    if not stream:
                        await response.read()
                        result.latencies.append(time.perf_counter() - t0)
                        continue
                    first = None
                    async for _chunk in response.content.iter_any():
                        first = first or time.perf_counter() - t0
                        result.chunks += 1
                    result.latencies.append(first or float("nan"))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
    return result


def summarise(r: Round, requests: int, cpu_s: float | None) -> dict[str, Any]:
    return {
        "p50_ms": round(percentile(r.latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(r.latencies, 0.99) * 1000, 2),
        "rps": round(requests / r.wall_s, 1),
        "chunks_per_s": round(r.chunks / r.wall_s, 1) if r.chunks else None,
        "errors": r.errors,
        "cpu_ms_per_request": round(cpu_s / requests * 1000, 3) if cpu_s is not None else None,
    }


def gateway_config(root: Path, upstream: str, port: int) -> Path:
    from loadtest.tool.tinystore import TINY_CONFIG

    store = build_store(root, ["alpha"])
    (root / "base.json").write_text(json.dumps(TINY_CONFIG))
    settings = {
        "store": str(store.root),
        "base_model": "tiny-base",
        "base_config": str(root / "base.json"),
        "engines": [{"url": upstream, "max_inflight": 1024, "max_queue": 4096}],
        "port": port,
        "metrics_port": None,
        "rollback_window_s": 0,
    }
    config = root / "gateway.yaml"
    config.write_text(json.dumps(settings))
    return config


def run(args: argparse.Namespace) -> dict[str, Any]:
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    up_cmd = [sys.executable, "-m", "loadtest.fastupstream", "--port", str(up_port)]
    if args.upstream == "sim":  # the simulated vLLM with no latency: the setup
        up_cmd = [sys.executable, "-m", "loadtest.simengine", "--port", str(up_port), "--model",
                  "tiny-base", "--max-loras", "2", "--max-cpu-loras", "4", "--load-ms", "0",
                  "--ttft-ms", "0", "--token-ms", "0"]  # fmt: skip
    out: dict[str, Any] = {"config": vars(args) | {"other": args.other}, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp, process(up_cmd, f"{upstream}/health") as up:
        config = gateway_config(Path(tmp), upstream, gw_port)
        gw_cmd = [sys.executable, "-m", "server.cli.main", "serve", "--config", str(config)]
        with process(gw_cmd, f"{gateway}/readyz") as gw:
            httpx.post(f"{gateway}/v1/completions", json={"model": "alpha", "prompt": "x"})
            targets: list[tuple[str, str, str, int | None]] = [
                ("direct", upstream, "alpha@v1", up.pid),
                ("gateway", gateway, "alpha", gw.pid),
            ]
            if args.other:
                targets.append(("other", args.other, args.other_model, None))
            with contextlib.ExitStack() as more:
                if args.litellm:
                    url, pid = more.enter_context(litellm(args.litellm, upstream, Path(tmp)))
                    targets.append(("litellm", url, "alpha", pid))
                run_rounds(targets, args, out)
            if args.profile_s:
                out["profile"] = profile(gw.pid, gateway, args.profile_s, Path(tmp))
    out["table"] = table(out["rounds"])
    return out


# Where a proxied request's time goes, inclusively (suffixes of py-spy's function names).
PROFILED = (
    "RequestContext.__call__",  # everything inside the ASGI app
    "parse_request",
    "Gateway.generate",
    "HttpEngineClient.generate",  # the upstream call (aiohttp)
    "Registry.acquire",
    "solve_dependencies",  # FastAPI's dependency resolution
    "data_received",  # uvicorn's HTTP parsing (httptools)
)


def profile(pid: int, url: str, seconds: float, tmp: Path) -> dict[str, object]:
    """py-spy samples of the gateway process while 4 clients send JSON requests."""
    raw = tmp / "gateway.raw"
    spy = pyspy.record(pid, raw, seconds)
    while spy.poll() is None:
        asyncio.run(drive(url, "alpha", 4, 400, False))
    text = raw.read_text() if raw.exists() else ""
    return pyspy.summarize(text, "<module>", PROFILED, top=15)


def run_rounds(
    targets: list[tuple[str, str, str, int | None]], args: argparse.Namespace, out: dict[str, Any]
) -> None:
    """Every shape for every target; the targets' order alternates between rounds."""
    for rnd in range(args.rounds):
        for stream in (False, True):
            for concurrency in args.concurrency:
                for name, url, model, pid in targets if rnd % 2 == 0 else targets[::-1]:
                    out["rounds"].append(measure(name, url, model, pid, concurrency, stream, args))


@contextlib.contextmanager
def litellm(binary: str, upstream: str, tmp: Path) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy in front of the same upstream (model `alpha` -> `alpha@v1`)."""
    config = tmp / "litellm.yaml"
    model = {"model": "openai/alpha@v1", "api_base": f"{upstream}/v1", "api_key": "unused"}
    litellm_config = {
        "model_list": [{"model_name": "alpha", "litellm_params": model}],
        "general_settings": {"master_key": BENCH_KEY},  # it refuses to start without one
    }
    config.write_text(json.dumps(litellm_config))
    port = free_port()
    command = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with process(command, f"{url}/health/liveliness", log=tmp / "litellm.log") as proc:
        yield url, proc.pid


def measure(name: str, url: str, model: str, pid: int | None, concurrency: int, stream: bool,
            args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    requests = args.requests if concurrency > 1 else args.requests // 4
    asyncio.run(drive(url, model, concurrency, 50, stream))  # warm the connections
    before = cpu_seconds(pid) if pid else None
    result = asyncio.run(drive(url, model, concurrency, requests, stream))
    cpu = cpu_seconds(pid) - before if pid and before is not None else None
    row = {"target": name, "concurrency": concurrency, "stream": stream,
           **summarise(result, requests, cpu)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per (target, concurrency, stream), and the gateway's added latency."""
    keys = sorted({(r["target"], r["concurrency"], r["stream"]) for r in rows})
    merged = []
    for target, concurrency, stream in keys:
        same = [
            r
            for r in rows
            if (r["target"], r["concurrency"], r["stream"]) == (target, concurrency, stream)
        ]
        entry: dict[str, Any] = {"target": target, "concurrency": concurrency, "stream": stream}
        for metric in ("p50_ms", "p99_ms", "rps", "chunks_per_s", "cpu_ms_per_request"):
            values = [r[metric] for r in same if r[metric] is not None]
            entry[metric] = round(percentile(values, 0.5), 3) if values else None
        merged.append(entry)
    for entry in merged:
        same_shape = (entry["concurrency"], entry["stream"])
        direct = next(
            e
            for e in merged
            if e["target"] == "direct" and (e["concurrency"], e["stream"]) == same_shape
        )
        entry["added_p50_ms"] = round(entry["p50_ms"] - direct["p50_ms"], 2)
        entry["added_p99_ms"] = round(entry["p99_ms"] - direct["p99_ms"], 2)
        entry["rps_vs_direct"] = round(entry["rps"] / direct["rps"], 2)
    return merged


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stream, ax in ((False, axes[0]), (True, axes[1])):
        rows = [r for r in out["table"] if r["stream"] is stream]
        for target in sorted({r["target"] for r in rows}):
            mine = sorted(
                (r for r in rows if r["target"] == target), key=lambda r: r["concurrency"]
            )
            ax.plot([r["concurrency"] for r in mine], [r["rps"] for r in mine], "o-", label=target)
        ax.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s",
               title="streaming" if stream else "JSON")  # fmt: skip
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per round at 16+ concurrent")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--upstream", choices=["fast", "sim"], default="fast")
    parser.add_argument("--other", default=None, help="another proxy's base URL")
    parser.add_argument("--other-model", default="alpha@v1")
    parser.add_argument("--litellm", default=None, help="path of LiteLLM's `litellm` command")
    parser.add_argument("--profile-s", type=float, default=0.0, help="py-spy the gateway (0: no)")
    parser.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    args = parser.parse_args()
    if args.profile_s < 0:
        parser.error("--profile-s: seconds, 0 for no profile")
    if args.profile_s and not Path(sys.executable).with_name("py-spy").exists():
        parser.error("--profile-s needs py-spy beside this python: pip install py-spy")
    out = run(args)
    for row in out["table"]:
        mode = "stream" if row["stream"] else "json"
        print(
            f"{row['target']:8} c={row['concurrency']:<3} {mode:6} p50 {row['p50_ms']:7.2f} ms "
            f"(+{row['added_p50_ms']:.2f}) p99 {row['p99_ms']:7.2f} ms "
            f"(+{row['added_p99_ms']:.2f}) {row['rps']:7.1f} rps ({row['rps_vs_direct']:.2f}x) "
            f"cpu/req {row['cpu_ms_per_request']} ms"
        )
    if "profile" in out:
        print(json.dumps(out["profile"], indent=1))
    plot(out, args.out.with_suffix(".png"))
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
