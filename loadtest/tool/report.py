"""The Markdown report of a run: setup, one column per target, the switch and swap-overhead
measurements when the scenario has them, and links to the figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadtest.tool.runner import RunResult
from loadtest.tool.scenario import Arrivals, Bounds, Lengths, Popularity, SimSpec

GOODPUT = (
    "Goodput: OK answers that arrived after the warm-up and before sending stopped, per second "
    "of that window, averaged over the target's rounds (the range is the rounds' min-max)."
)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:.2f}{unit}"
    return f"{value}{unit}"


def _get(block: dict[str, Any] | None, *keys: str) -> Any:
    node: Any = block
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _goodput(s: dict[str, Any]) -> str:
    rounds = s["goodput_rps_by_round"]
    spread = f" ({min(rounds):.1f}-{max(rounds):.1f})" if len(rounds) > 1 else ""
    return f"{s['goodput_rps']:.1f}{spread}"


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("requests (measured)", lambda s: _fmt(s["requests"])),
    ("OK", lambda s: _fmt(s["ok"])),
    ("answers by status", lambda s: ", ".join(f"{k}: {v}" for k, v in s["outcomes"].items())),
    ("goodput, req/s", _goodput),
    (
        "latency p50 / p90 / p99, ms",
        lambda s: " / ".join(_fmt(_get(s, "latency", k)) for k in ("p50_ms", "p90_ms", "p99_ms")),
    ),
    (
        "TTFT p50 / p99, ms (streams)",
        lambda s: " / ".join(_fmt(_get(s, "ttft", k)) for k in ("p50_ms", "p99_ms")),
    ),
    (
        "gateway overhead p50 / p99, ms",
        lambda s: " / ".join(_fmt(_get(s, "gateway_overhead", k)) for k in ("p50_ms", "p99_ms")),
    ),
    ("completion tokens/s", lambda s: _fmt(s["completion_tokens_per_s"])),
    (
        "loragate loads / evictions / thrash",
        lambda s: " / ".join(
            _fmt(_get(s, "loragate", k)) for k in ("loads", "evictions", "thrash")
        ),
    ),
    ("loragate load failures", lambda s: _fmt(_get(s, "loragate", "load_failures"))),
    (
        "load call mean / load wait mean, ms",
        lambda s: " / ".join(
            _fmt(_get(s, "loragate", k)) for k in ("load_mean_ms", "load_wait_mean_ms")
        ),
    ),
    (
        "sim engine loads / hidden reloads",
        lambda s: " / ".join(
            _fmt(_get(s, "sim_engine", k)) for k in ("loads", "cpu_cache_reloads")
        ),
    ),
    ("load generator lag p99, ms", lambda s: _fmt(s["send_lag_p99_ms"])),
    ("abandoned at the drain limit", lambda s: _fmt(s["abandoned"])),
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def lengths(spec: Lengths) -> str:
    if spec.kind == "fixed":
        return str(spec.value)
    if spec.kind == "uniform":
        return f"uniform {spec.min}-{spec.max}"
    return f"lognormal median {spec.median:g} sigma {spec.sigma:g} in [{spec.min}, {spec.max}]"


def _arrivals(a: Arrivals) -> str:
    if a.kind == "concurrency":
        return f"closed loop, {a.clients} clients"
    if a.kind == "trace":
        return "the trace's timestamps"
    ramp = f" rising to {a.ramp_to:g}" if a.ramp_to is not None else ""
    return f"{a.kind}, {a.rate:g} req/s{ramp}"


def _bounds(b: Bounds) -> str:
    parts = [f"{b.duration_s:g} s" if b.duration_s is not None else ""]
    parts.append(f"at most {b.requests} requests" if b.requests is not None else "")
    parts.append(f"warm-up {b.warmup_s:g} s" if b.warmup_s else "")
    return ", ".join(p for p in parts if p) + " per round"


def _popularity(p: Popularity, adapters: list[str]) -> str:
    over = f"the first {p.hot_set} adapters" if p.hot_set else "the adapters"
    if p.kind == "trace":
        return f"from the trace {p.trace}"
    if p.kind == "cycle":
        return f"{over} in turn, {p.burst} requests each"
    shape = f"Zipf alpha {p.alpha:g}" if p.kind == "zipf" else "uniform"
    listed = f" ({', '.join(adapters[:6])}{', ...' if len(adapters) > 6 else ''})"
    return f"{shape} over {over}" + (listed if adapters else "")


def _sim(sim: SimSpec) -> str:
    load = f"{sim.load_ms:g}" + (f" +- {sim.load_jitter_ms:g}" if sim.load_jitter_ms else "")
    return (
        f"{sim.engines} engine(s), {sim.gateways} gateway(s)"
        + (", the bare engines as `direct`" if sim.compare_direct else "")
        + f"; {sim.adapters} adapters; {sim.slots} slots, max_loras {sim.max_loras or sim.slots},"
        f" batch {sim.max_num_seqs}; loads {load} ms, TTFT {sim.ttft_ms:g} ms,"
        f" {sim.token_ms:g} ms/token; {'processes' if sim.processes else 'threads'}"
    )


def _setup(run: RunResult, env: dict[str, Any]) -> list[str]:
    s = run.scenario
    w = s.workload
    lines = [
        f"# loadtest: {s.name}",
        "",
        s.description.strip(),
        "",
        f"- started {run.started_at}; {s.rounds} round(s) per target, alternating",
        f"- arrivals: {_arrivals(s.arrivals)}; {_bounds(s.bounds)}",
        f"- adapters: {_popularity(w.popularity, w.adapters)}; base model {w.base_share:.0%};"
        f" streamed {w.stream:.0%}; {w.endpoint}; prompt {lengths(w.prompt_tokens)} words,"
        f" output {lengths(w.output_tokens)} tokens",
        f"- machine: {env.get('cpus')} CPUs, load average {env.get('load_average_1m')} at the end"
        + (f"; {env['note']}" if env.get("note") else ""),
    ]
    if s.sim is not None:
        lines.append(f"- simulated deployment: {_sim(s.sim)}")
    lines += [f"- target `{t.name}` ({t.kind}): {', '.join(t.urls)}" for t in run.targets]
    return lines


def _switches(summary: dict[str, Any]) -> list[str]:
    rows = []
    for name, block in summary["targets"].items():
        for sw in block.get("switches") or []:
            steps = ", ".join(
                f"{st['kind']} {st['status']} {st['took_ms']:.0f} ms" for st in sw["steps"]
            )
            rows.append(
                [
                    name,
                    sw["expect"],
                    steps,
                    str(sw["requests_during_switch"]),
                    str(sw["failed_during_switch"]),
                    str(sw["failed_any_adapter_during_switch"]),
                    _fmt(sw["time_to_100pct_ms"], " ms"),
                    _fmt(sw["first_new_version_ms"], " ms"),
                    str(sw["old_version_after_action"]),
                ]
            )
    if not rows:
        return []
    header = [
        "target",
        "to",
        "admin steps",
        "requests during",
        "failed (adapter)",
        "failed (any)",
        "time to 100 % new",
        "first new version at",
        "old version after start",
    ]
    note = (
        "Time to 100 %: from the action's start to the start of the last request still served "
        "by another version (`X-Adapter-Version`), 0 if none was; every later request got the "
        "new version (resolution: the gap between requests for the adapter). Failed: non-OK "
        "requests in flight between the action's start and the later of its end and that moment."
    )
    return ["", "## Switch under load", "", note, "", *_table(header, rows)]


def _swaps(summary: dict[str, Any]) -> list[str]:
    keys = [
        "warm_mean_ms",
        "cold_mean_ms",
        "overhead_mean_ms",
        "overhead_p50_ms",
        "overhead_p99_ms",
        "overhead_first_half_ms",
        "overhead_second_half_ms",
        "second_half_within_50pct",
        "cold_requests",
    ]
    blocks = {
        n: b["swap_overhead"] for n, b in summary["targets"].items() if b.get("swap_overhead")
    }
    if not blocks:
        return []
    rows = [[k, *(_fmt(b[k]) for b in blocks.values())] for k in keys]
    note = (
        "Swap overhead (AIBrix): latency of the first request of a burst on an adapter that "
        "was evicted since its last burst, minus the mean latency of the other requests."
    )
    return ["", "## Swap overhead", "", note, "", *_table(["", *blocks], rows)]


def _engines(summary: dict[str, Any]) -> list[str]:
    rows = []
    for name, block in summary["targets"].items():
        spread = block.get("engines")
        if spread:
            per = ", ".join(f"{k}: {v}" for k, v in spread["requests_per_engine"].items())
            loads = {k: v for k, v in block["loragate"].items() if k.startswith("loads@")}
            rows.append(
                [
                    name,
                    per,
                    str(spread["engines_per_adapter_mean"]),
                    str(spread["top_engine_share_mean"]),
                    ", ".join(f"{k[6:]}: {v:.0f}" for k, v in loads.items()) or "-",
                ]
            )
    if not rows:
        return []
    header = [
        "target",
        "requests per engine",
        "engines per adapter",
        "busiest-engine share",
        "loads per engine",
    ]
    return ["", "## Engines (X-Engine)", "", *_table(header, rows)]


def render(run: RunResult, summary: dict[str, Any], env: dict[str, Any], figures: list[str]) -> str:
    names = list(summary["targets"])
    rows = [[label, *(fn(summary["targets"][n]) for n in names)] for label, fn in ROWS]
    lines = [*_setup(run, env), "", "## Results", "", GOODPUT, "", *_table(["", *names], rows)]
    lines += _switches(summary) + _swaps(summary) + _engines(summary)
    versions = {n: b["versions"] for n, b in summary["targets"].items() if b["versions"]}
    if versions:
        lines += ["", "## Versions served (X-Adapter-Version)", ""]
        lines += [
            f"- `{n}`: " + ", ".join(f"{k} {v}" for k, v in vs.items())
            for n, vs in versions.items()
        ]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
