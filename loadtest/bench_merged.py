"""Benchmark, the product's promise: one base + three LoRA adapters in one vLLM engine, vs three
merged full models (PEFT `merge_and_unload`), each served by its own engine. Same request mix,
one run, side by side: memory (PSS of each engine's process tree) and latency p50/p99.

    python -m loadtest.bench_merged --requests-per-task 12

Needs the engine (make engine) and the demo adapters in ./adapters. Heavy: up to four engines,
~3.5 GB each; the two setups run one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from loadtest.threaded import free_port
from server.engines.supervisor import engine_command, engine_env, resolve_model
from server.releases.evaluation import load_examples
from server.settings import ManagedEngine
from server.store.store import AdapterStore

TASKS = ("sentiment", "summarize", "qa")


def tree_pss_bytes(pid: int) -> int:
    """Proportional set size of a process and all its descendants (shared pages split)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@contextmanager
def engines(
    models: list[Path], *, lora: bool, log_dir: Path, binds: list[str]
) -> Iterator[list[tuple[str, int]]]:
    """Start one engine per model dir (OpenMP bound to `binds[i]`); yield (url, pid) when ready."""
    procs = []
    try:
        for i, model in enumerate(models):
            cfg = ManagedEngine(
                model=str(model), port=free_port(), max_loras=3, omp_threads_bind=binds[i]
            )
            command = engine_command(cfg, 3, model, "demo-base")
            if not lora:
                command.remove("--enable-lora")
            log = (log_dir / f"engine-{i}.log").open("wb")
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=engine_env(cfg),
                start_new_session=True,
            )
            procs.append((f"http://127.0.0.1:{cfg.port}", proc))
        for url, proc in procs:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"engine at {url} did not start; see {log_dir}")
                time.sleep(1)
        yield [(url, proc.pid) for url, proc in procs]
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            proc.wait(60)


def merge(base: Path, adapter: Path, out: Path) -> Path:
    """PEFT merge_and_unload of one adapter into the base, saved as a full model."""
    if (out / "config.json").exists():
        return out
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    merged.save_pretrained(tmp)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ):
        if (base / name).exists():
            shutil.copy(base / name, tmp / name)
    tmp.rename(out)
    return out


async def mix(
    targets: dict[str, tuple[str, str]], prompts: dict[str, list[str]], max_tokens: int
) -> list[float]:
    """One concurrent stream of requests per task; latency of each request (s)."""
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=600) as http:

        async def stream(task: str) -> None:
            url, model = targets[task]
            for prompt in prompts[task]:
                t0 = time.perf_counter()
                body = {
                    "model": model,
                    "prompt": prompt,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                r = await http.post(f"{url}/v1/completions", json=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(stream(t) for t in TASKS))
    return latencies


def summary(latencies: list[float], pss: list[int], wall: float) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pick(q: float) -> int:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000)

    return {
        "engines": len(pss),
        "pss_gib": round(sum(pss) / 2**30, 2),
        "pss_gib_each": [round(p / 2**30, 2) for p in pss],
        "requests": len(latencies),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(latencies) * 1000),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=Path("adapters"))
    parser.add_argument("--version", default="v2")
    parser.add_argument("--requests-per-task", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument(
        "--lora-bind",
        default="0",
        help="VLLM_CPU_OMP_THREADS_BIND of the LoRA engine, e.g. 0-1 for two OpenMP threads",
    )
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/loragate/bench")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/merged_vs_lora.json"))
    args = parser.parse_args()
    base = resolve_model(ManagedEngine())
    store = AdapterStore(args.store, None)
    store.scan()
    versions = {t: store.version(t, args.version) for t in TASKS}
    prompts = {
        t: [
            versions[t].manifest.prompt_template.render(e.input)
            for e in load_examples(Path("datasets") / t / "heldout.jsonl", args.requests_per_task)
        ]
        for t in TASKS
    }
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}

    # One OpenMP core per engine (vLLM's CPU recommendation: leave cores to its API server and
    # engine-core processes); the merged engines round-robin over the machine's cores.
    cores = list(range(os.cpu_count() or 1))
    with engines([base], lora=True, log_dir=args.work, binds=[args.lora_bind]) as [(url, pid)]:
        for t in TASKS:
            body = {"lora_name": versions[t].engine_name, "lora_path": str(versions[t].path)}
            httpx.post(f"{url}/v1/load_lora_adapter", json=body, timeout=120).raise_for_status()
        start = time.perf_counter()
        lat = asyncio.run(
            mix({t: (url, versions[t].engine_name) for t in TASKS}, prompts, args.max_tokens)
        )
        wall = time.perf_counter() - start
        results["one_base_three_loras"] = summary(lat, [tree_pss_bytes(pid)], wall)

    merged = [merge(base, versions[t].path, args.work / f"merged-{t}") for t in TASKS]
    binds = [str(cores[i % len(cores)]) for i in range(len(merged))]
    with engines(merged, lora=False, log_dir=args.work, binds=binds) as started:
        start = time.perf_counter()
        lat = asyncio.run(
            mix(
                {t: (started[i][0], "demo-base") for i, t in enumerate(TASKS)},
                prompts,
                args.max_tokens,
            )
        )
        results["three_merged_models"] = summary(
            lat, [tree_pss_bytes(pid) for _, pid in started], time.perf_counter() - start
        )
    results["config"] = {k: str(v) for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
