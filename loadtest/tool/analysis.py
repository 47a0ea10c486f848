"""What a run measured, per target: throughput, latency, errors, versions and engines served,
what loragate and the simulated engines counted, and two derived measurements:

- the switch of an action with `expect` (rollback, register + promote): requests failed while
  it happened and the time until every new request is served by the expected version;
- swap overhead, the AIBrix way: a cold request's latency minus the mean latency of requests
  on resident adapters, over the run's first and second halves.

Goodput: requests answered OK whose answer arrived inside the measured window of their round
(after the warm-up, before sending stopped), divided by that window's length.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from loadtest.tool.actions import ActionRecord
from loadtest.tool.records import RequestRecord
from loadtest.tool.runner import RoundResult, RunResult
from loadtest.tool.scrape import COUNTERS, deltas
from loadtest.tool.stats import latency_summary, measured, ms, outcomes, percentile


def goodput(records: list[RequestRecord], rnd: RoundResult, warmup_s: float) -> float:
    window = rnd.send_s - warmup_s
    if window <= 0:
        return 0.0
    done = sum(
        1
        for r in records
        if r.ok
        and r.round == rnd.index
        and r.target == rnd.target
        and warmup_s <= r.end_s <= rnd.send_s
    )
    return done / window


def scraped(rounds: list[RoundResult], warmup_s: float) -> dict[str, float]:
    """loragate's counters over the measured part of the target's rounds, plus mean times."""
    total: dict[str, float] = defaultdict(float)
    if any(rnd.scrapes for rnd in rounds):
        total.update(dict.fromkeys(COUNTERS, 0.0))
    for rnd in rounds:
        for key, value in deltas(rnd.scrapes, warmup_s).items():
            total[key] += value
    result = {k: round(v, 4) for k, v in sorted(total.items())}
    for name in ("load_seconds", "load_wait_seconds"):
        count = total.get(f"{name}_count", 0.0)
        if count:
            result[f"{name.removesuffix('_seconds')}_mean_ms"] = round(
                total[f"{name}_sum"] / count * 1000, 2
            )
    return result


def target_summary(run: RunResult, target: str) -> dict[str, Any]:
    warmup = run.scenario.bounds.warmup_s
    rounds = [r for r in run.rounds if r.target == target]
    mine = measured(r for r in run.records if r.target == target)
    ok = [r for r in mine if r.ok]
    streamed = [r.ttft_s for r in ok if r.ttft_s is not None]
    overhead = [r.overhead_ms / 1000 for r in ok if r.overhead_ms is not None]
    per_round = [goodput(run.records, rnd, warmup) for rnd in rounds]
    window = sum(max(0.0, rnd.send_s - warmup) for rnd in rounds)
    tokens = sum(r.completion_tokens or 0 for r in ok)
    sim: dict[str, float] = defaultdict(float)
    for rnd in rounds:
        for key, value in rnd.sim_engine.items():
            sim[key] += value
    return {
        "requests": len(mine),
        "ok": len(ok),
        "outcomes": outcomes(mine),
        "goodput_rps": round(statistics.fmean(per_round), 2) if per_round else 0.0,
        "goodput_rps_by_round": [round(g, 2) for g in per_round],
        "completion_tokens_per_s": round(tokens / window, 1) if window else None,
        "latency": latency_summary([r.total_s for r in ok]),
        "ttft": latency_summary(streamed) if streamed else None,
        "gateway_overhead": latency_summary(overhead) if overhead else None,
        "send_lag_p99_ms": ms(percentile([r.lag_s for r in mine if r.lag_s is not None], 0.99)),
        "abandoned": sum(rnd.abandoned for rnd in rounds),
        "versions": dict(Counter(r.version for r in ok if r.version).most_common()),
        "engines": engine_spread(ok),
        "loragate": scraped(rounds, warmup),
        "sim_engine": {k: round(v) for k, v in sorted(sim.items())},
    }


def engine_spread(ok: list[RequestRecord]) -> dict[str, Any] | None:
    """Requests per engine, and per adapter how many engines served it and the share of its
    requests on its busiest engine (1.0: perfect affinity)."""
    served = [r for r in ok if r.engine and r.adapter]
    if not served:
        return None
    by_adapter: dict[str, Counter[str]] = defaultdict(Counter)
    for r in served:
        assert r.adapter is not None and r.engine is not None
        by_adapter[r.adapter][r.engine] += 1
    spread = [len(c) for c in by_adapter.values()]
    top = [max(c.values()) / c.total() for c in by_adapter.values()]
    return {
        "requests_per_engine": dict(sorted(Counter(r.engine for r in served).items())),
        "engines_per_adapter_mean": round(statistics.fmean(spread), 2),
        "top_engine_share_mean": round(statistics.fmean(top), 3),
    }


def switch(run: RunResult, action: ActionRecord, target: str) -> dict[str, Any]:
    """The switch an action with `expect` made, for its adapter:

    - time to 100 %: from the action's start to the start of the last request that was still
      served by another version (0 if none was); every request started later got the expected
      one. None when no request got the expected version after the last one that did not.
      Resolution: the gap between requests for the adapter.
    - failed during the switch: non-OK requests overlapping [action start, the later of the
      action's end and the moment of 100 %]; for the adapter, and for any adapter.
    """
    expected = f"{action.adapter}@{action.expect}"
    mine = sorted(
        (r for r in run.records if r.target == target and r.adapter == action.adapter),
        key=lambda r: r.start_s,
    )
    after = [r for r in mine if r.start_s >= action.started_s and r.ok]
    stale = [r for r in after if r.version != expected]
    last_stale = max((r.start_s for r in stale), default=action.started_s)
    fresh = [r for r in after if r.version == expected]
    converged = any(r.start_s >= last_stale for r in fresh)
    end = max(last_stale, action.ended_s)
    overlapping = [
        r
        for r in run.records
        if r.target == target and r.start_s <= end and r.end_s >= action.started_s
    ]
    during = [r for r in overlapping if r.adapter == action.adapter]
    return {
        "adapter": action.adapter,
        "expect": expected,
        "action_started_s": round(action.started_s, 4),
        "admin_calls_ms": round((action.ended_s - action.started_s) * 1000, 2),
        "steps": [vars(s) for s in action.steps],
        "requests_during_switch": len(during),
        "failed_during_switch": sum(1 for r in during if not r.ok),
        "failed_outcomes": outcomes(r for r in during if not r.ok),
        "failed_any_adapter_during_switch": sum(1 for r in overlapping if not r.ok),
        "old_version_after_action": len(stale),
        "time_to_100pct_ms": round((last_stale - action.started_s) * 1000, 2)
        if converged
        else None,
        "first_new_version_ms": round((fresh[0].start_s - action.started_s) * 1000, 2)
        if fresh
        else None,
    }


def swap_overhead(records: list[RequestRecord]) -> dict[str, Any] | None:
    """Cold minus warm latency (AIBrix), overall and per half of the cold requests in time."""
    ok = sorted((r for r in records if r.ok and r.cold is not None), key=lambda r: r.start_s)
    cold = [r.total_s for r in ok if r.cold]
    warm = [r.total_s for r in ok if not r.cold]
    if len(cold) < 2 or not warm:
        return None
    base = statistics.fmean(warm)
    extra = [c - base for c in cold]
    half = len(extra) // 2
    first, second = statistics.fmean(extra[:half]), statistics.fmean(extra[half:])
    return {
        "cold_requests": len(cold),
        "warm_requests": len(warm),
        "warm_mean_ms": ms(base),
        "cold_mean_ms": ms(statistics.fmean(cold)),
        "overhead_mean_ms": ms(statistics.fmean(extra)),
        "overhead_p50_ms": ms(percentile(extra, 0.5)),
        "overhead_p99_ms": ms(percentile(extra, 0.99)),
        "overhead_first_half_ms": ms(first),
        "overhead_second_half_ms": ms(second),
        "second_half_within_50pct": abs(second - first) <= 0.5 * abs(first) if first else None,
    }


def summarize(run: RunResult) -> dict[str, Any]:
    summary: dict[str, Any] = {"targets": {}}
    for target in run.targets:
        block = target_summary(run, target.name)
        mine = [r for r in run.records if r.target == target.name and not r.warmup]
        block["swap_overhead"] = swap_overhead(mine)
        actions = [a for rnd in run.rounds if rnd.target == target.name for a in rnd.actions]
        block["switches"] = [switch(run, a, target.name) for a in actions if a.expect]
        summary["targets"][target.name] = block
    return summary
