"""Benchmark: thrash mitigation, eviction policies side by side on the thrashing cliff's setup.

    python -m loadtest.bench_eviction --out loadtest/results/eviction.json

The setup of `loadtest.thrash_cliff` (one simulated engine, 4 slots, batch 8, 16 closed-loop
clients, 15-30 ms adapter loads) with a hot set of `--ratio` x the slots, for each popularity
(uniform over the hot set, and Zipf 1.0 over it) and each gateway variant, in alternating
rounds of one run: `lru` (evict the least recently used idle slot), `demand` (the least recent
demand, decayed with a 30 s half-life), `demand+hold` (and hold a cold load 50 ms while
loads per request exceed 0.5). Reported per variant: saturation throughput (goodput, as the
cliff defines it), the engine's adapter loads per 1,000 answers, and latency p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtest.thrash_cliff import LOAD_TIMES, point, point_figures, sim_spec
from loadtest.tool import results
from loadtest.tool.analysis import summarize
from loadtest.tool.deployment import simulated
from loadtest.tool.runner import run
from loadtest.tool.scenario import SimSpec
from loadtest.tool.targets import Target

VARIANTS: dict[str, dict[str, Any]] = {
    "lru": {"eviction_policy": "lru"},
    "demand": {"eviction_policy": "demand"},
    "demand+hold": {"eviction_policy": "demand", "thrash_hold_s": 0.05, "thrash_hold_ratio": 0.5},
}


def spec(args: argparse.Namespace, gateway: dict[str, Any]) -> SimSpec:
    """The cliff's loragate deployment at `--ratio` (15-30 ms loads), with `gateway` settings."""
    cliff = argparse.Namespace(**vars(args), ratios=[args.ratio])
    deployment = sim_spec(cliff, *LOAD_TIMES["15-30ms"])
    return deployment.model_copy(update={"compare_direct": False, "gateway": gateway})


@contextlib.contextmanager
def deployments(args: argparse.Namespace) -> Iterator[tuple[list[Target], list[str]]]:
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        adapters: list[str] = []
        for name, settings in VARIANTS.items():
            deployment = stack.enter_context(simulated(spec(args, settings)))
            targets += [replace(t, name=name) for t in deployment.targets]
            adapters = deployment.adapters
        yield targets, adapters


def loads_per_1000(kept: dict[str, Any]) -> float | None:
    engine = kept.get("sim_engine") or {}
    answered = sum(n for code, n in kept["outcomes"].items() if code.startswith("2"))
    loads = engine.get("loads")
    return round(1000 * loads / answered, 1) if loads is not None and answered else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--ratio", type=float, default=2.0, help="hot set / slots")
    add("--slots", type=int, default=4)
    add("--batch", type=int, default=8)
    add("--clients", type=int, default=16)
    add("--duration", type=float, default=12.0)
    add("--warmup", type=float, default=3.0)
    add("--rounds", type=int, default=3)
    add("--ttft-ms", type=float, default=50.0)
    add("--token-ms", type=float, default=20.0)
    add("--output-tokens", type=int, default=16)
    add("--seed", type=int, default=0)
    add("--note", default="")
    add("--out", type=Path, default=Path("loadtest/results/eviction.json"))
    args = parser.parse_args()
    out: dict[str, Any] = {
        "command": "python -m loadtest.bench_eviction " + " ".join(sys.argv[1:]),
        "setup": {k: v for k, v in vars(args).items() if k not in ("out", "note")},
        "variants": VARIANTS,
        "environment": results.environment(args.note),
        "popularity": {},
    }
    with deployments(args) as (targets, adapters):
        for popularity in ({"kind": "uniform"}, {"kind": "zipf", "alpha": 1.0}):
            scenario = point(args, args.ratio)
            workload = scenario.workload.model_copy(
                update={"popularity": scenario.workload.popularity.model_copy(update=popularity)}
            )
            finished = asyncio.run(run(scenario.model_copy(update={"workload": workload}),
                                       targets, adapters))  # fmt: skip
            kept = point_figures(summarize(finished))
            label = popularity["kind"]
            out["popularity"][label] = {
                name: {**figures, "engine_loads_per_1000": loads_per_1000(figures)}
                for name, figures in kept.items()
            }
            for name, figures in out["popularity"][label].items():
                print(f"{label:7} {name:12} goodput {figures['goodput_rps']:6.1f} rps, "
                      f"loads/1000 {figures['engine_loads_per_1000']}, p50/p99 "
                      f"{figures['latency_p50_ms']}/{figures['latency_p99_ms']} ms",
                      flush=True)  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
