"""The thrashing cliff: saturation throughput as the hot set outgrows the adapter slots.

    python -m loadtest.thrash_cliff --out loadtest/results/thrash_cliff.json

Four targets side by side, in alternating rounds of one run: loragate in front of a simulated
engine, and a bare simulated engine with every adapter registered up front (vLLM's own LRU
then reloads adapters behind the caller's back), each with adapter loads of 15-30 ms (vLLM's
load call) and of 200 ms (a GPU upload from disk). For each hot-set size / slots in
`--ratios`, `--clients` closed-loop clients send requests to adapters drawn uniformly from
the hot set.

Saturation throughput: the goodput (OK answers per second, after the warm-up, before
sending stops) of a closed loop of `--clients` = 2 x the engine's batch (`max_num_seqs`), so
the engine is always offered a full batch; mean over the target's rounds (min-max kept).
The cliff ratio at x: saturation throughput at hot set = x * slots over the one at hot set =
slots (everything fits); `ratio_at_2x` is the headline, for loragate at 15-30 ms loads.
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

from loadtest.tool import results
from loadtest.tool.analysis import summarize
from loadtest.tool.deployment import simulated
from loadtest.tool.runner import run
from loadtest.tool.scenario import Scenario, SimSpec
from loadtest.tool.scenario_files import build
from loadtest.tool.targets import Target

LOAD_TIMES = {"15-30ms": (22.5, 7.5), "200ms": (200.0, 0.0)}  # (load_ms, jitter_ms)
HEADLINE = "loragate 15-30ms"


def sim_spec(args: argparse.Namespace, load_ms: float, jitter_ms: float) -> SimSpec:
    return SimSpec(
        engines=1,
        gateways=1,
        compare_direct=True,
        adapters=int(max(args.ratios) * args.slots),
        slots=args.slots,
        max_loras=args.slots,
        max_num_seqs=args.batch,
        load_ms=load_ms,
        load_jitter_ms=jitter_ms,
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        processes=True,
    )


def point(args: argparse.Namespace, ratio: float) -> Scenario:
    hot = max(1, round(ratio * args.slots))
    return build(
        {
            "name": f"thrash-cliff-{ratio:g}x",
            "workload": {
                "popularity": {"kind": "uniform", "hot_set": hot},
                "prompt_tokens": 16,
                "output_tokens": args.output_tokens,
                "seed": args.seed,
            },
            "arrivals": {"kind": "concurrency", "clients": args.clients},
            "bounds": {"duration_s": args.duration, "warmup_s": args.warmup},
            "rounds": args.rounds,
        }
    )


@contextlib.contextmanager
def deployments(args: argparse.Namespace) -> Iterator[tuple[list[Target], list[str]]]:
    """Both load times, each: loragate + engine, and a bare engine. Targets renamed."""
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        adapters: list[str] = []
        for label, (load_ms, jitter_ms) in LOAD_TIMES.items():
            deployment = stack.enter_context(simulated(sim_spec(args, load_ms, jitter_ms)))
            targets += [replace(t, name=f"{t.name} {label}") for t in deployment.targets]
            adapters = deployment.adapters
        yield targets, adapters


def point_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What one point keeps per target."""
    kept = {}
    for name, s in summary["targets"].items():
        kept[name] = {
            "goodput_rps": s["goodput_rps"],
            "goodput_rps_by_round": s["goodput_rps_by_round"],
            "latency_p50_ms": s["latency"]["p50_ms"],
            "latency_p99_ms": s["latency"]["p99_ms"],
            "outcomes": s["outcomes"],
            "loragate": s["loragate"],
            "sim_engine": s["sim_engine"],
        }
    return kept


def curve(args: argparse.Namespace) -> dict[str, Any]:
    points = []
    with deployments(args) as (targets, adapters):
        for ratio in args.ratios:
            finished = asyncio.run(run(point(args, ratio), targets, adapters))
            kept = point_figures(summarize(finished))
            points.append({"hot_set_over_slots": ratio, "targets": kept})
            shown = ", ".join(f"{n}: {v['goodput_rps']:.1f}" for n, v in kept.items())
            print(f"{ratio:g}x: {shown}", file=sys.stderr, flush=True)
    return {"points": points}


def ratios(points: list[dict[str, Any]], reference: float = 1.0) -> dict[str, list[float]]:
    """Per target, throughput at each point over the one at `reference` x slots."""
    base = next(p for p in points if p["hot_set_over_slots"] == reference)["targets"]
    return {
        name: [
            round(p["targets"][name]["goodput_rps"] / base[name]["goodput_rps"], 3)
            if base[name]["goodput_rps"]
            else 0.0
            for p in points
        ]
        for name in base
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["hot_set_over_slots"] for p in result["points"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in result["ratio"]:
        values = [p["targets"][name] for p in result["points"]]
        means = [v["goodput_rps"] for v in values]
        low = [m - min(v["goodput_rps_by_round"]) for m, v in zip(means, values, strict=True)]
        high = [max(v["goodput_rps_by_round"]) - m for m, v in zip(means, values, strict=True)]
        left.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=name)
        right.plot(xs, result["ratio"][name], marker="o", label=name)
    right.axhline(0.5, color="grey", linestyle=":", label="target 0.5")
    left.set_ylabel("saturation throughput (OK req/s, min-max over rounds)")
    right.set_ylabel("throughput / throughput with hot set = slots")
    for ax in (left, right):
        ax.set_xlabel("hot set / slots")
        ax.axvline(2.0, color="grey", linewidth=0.5)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    setup = result["setup"]
    request_ms = setup["ttft_ms"] + (setup["output_tokens"] - 1) * setup["token_ms"]
    fig.suptitle(
        f"Thrashing cliff: {setup['slots']} slots, {setup['clients']} clients, uniform over the "
        f"hot set; sim engine batch {setup['batch']}, {request_ms:g} ms per request "
        f"({setup['ttft_ms']:g} ms TTFT + {setup['output_tokens'] - 1} x {setup['token_ms']:g} ms)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--ratios", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
    add("--slots", type=int, default=4, help="max_cpu_loras = max_loras = registry slots")
    add("--batch", type=int, default=8, help="engine max_num_seqs")
    add("--clients", type=int, default=16, help="closed-loop clients (2 x batch)")
    add("--duration", type=float, default=12.0, help="seconds per round")
    add("--warmup", type=float, default=3.0, help="seconds left out of each round")
    add("--rounds", type=int, default=3, help="rounds per target and point")
    add("--ttft-ms", type=float, default=20.0)
    add("--token-ms", type=float, default=5.0)
    add("--output-tokens", type=int, default=16)
    add("--seed", type=int, default=0)
    add("--note", default="")
    add("--out", type=Path, default=Path("loadtest/results/thrash_cliff.json"))
    add("--plot-only", action="store_true", help="redraw the PNG from an existing --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    if 1.0 not in args.ratios:
        parser.error("--ratios must include 1 (the hot set that fits: the reference)")
    result: dict[str, Any] = {
        "command": "python -m loadtest.thrash_cliff " + " ".join(sys.argv[1:]),
        "definition": __doc__.split("\n\n", 3)[3].strip(),
        "setup": {k: v for k, v in vars(args).items() if k not in ("out", "note", "plot_only")},
        "load_times_ms": LOAD_TIMES,
        "environment": results.environment(args.note),
    }
    result.update(curve(args))
    result["ratio"] = ratios(result["points"])
    at_2x = result["setup"]["ratios"].index(2.0) if 2.0 in args.ratios else None
    if at_2x is not None:
        by_target = {name: values[at_2x] for name, values in result["ratio"].items()}
        result["ratio_at_2x"] = by_target.get(HEADLINE)
        result["ratio_at_2x_by_target"] = by_target
    result["environment"]["load_average_1m_end"] = results.environment()["load_average_1m"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    with contextlib.suppress(ImportError):
        plot(result, args.out.with_suffix(".png"))
    print(json.dumps({"ratio_at_2x": result.get("ratio_at_2x_by_target"), **result["ratio"]}))


if __name__ == "__main__":
    main()
