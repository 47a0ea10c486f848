"""Canary analysis: does a canary stay within its bounds against the stable version, and
what happens next (hold, advance a step, promote, roll back). Pure functions of the canary's
channel entry and the two versions' outcomes in the window (`server.releases.outcomes`);
`server.releases.canary_controller` acts on the verdicts.

Bounds (per canary, in channels.json; None turns one off), judged once the canary has
`min_requests` requests in the window:
- `max_error_rate_delta`: canary 5xx ratio minus the stable's (points, 0.02 = 2 points).
- `max_p99_ratio`: canary p99 over the stable's, for total latency and for time to first
  token, each compared only when both versions have `min_requests` and at least
  `LATENCY_MIN_SAMPLES` successful samples of it (below 100 samples a p99 is the maximum: one
  stall of a loaded host), and only when the canary is also `P99_SLACK_S` slower (jitter of a
  few ms on fast answers is not a regression).
- `max_violation_rate`: the canary's share of answers that fail its own output checks
  (absolute: a policy limit, not a comparison; the stable's share is shown beside it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from server.errors import InvalidRequest
from server.releases.outcomes import WindowStats
from server.store.manifest import Canary

P99_SLACK_S = 0.05  # seconds a p99 must also grow by to count as worse
LATENCY_MIN_SAMPLES = 100  # per version, for a p99 that is not just the slowest request
EPSILON = 1e-9


class Bound(enum.StrEnum):
    """Why a canary was stopped (the `reason` label of loragate_canary_rollbacks_total)."""

    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    VIOLATIONS = "violations"
    GATE = "gate"  # the eval gate refused the promotion at the end of the steps


@dataclass(frozen=True)
class Breach:
    bound: Bound
    detail: str  # the numbers, for the audit log


def _pct(x: float) -> str:
    return f"{x:.1%}"


def judge(canary: Canary, mine: WindowStats, stable: WindowStats) -> Breach | None:
    """The first bound the canary breaks, or None (also while it has too few requests)."""
    if mine.requests < canary.min_requests:
        return None
    limit = canary.max_error_rate_delta
    if limit is not None and mine.error_rate - stable.error_rate > limit + EPSILON:
        return Breach(
            Bound.ERROR_RATE,
            f"5xx ratio {_pct(mine.error_rate)} ({mine.errors}/{mine.requests}) vs stable "
            f"{_pct(stable.error_rate)} ({stable.errors}/{stable.requests}): "
            f"+{(mine.error_rate - stable.error_rate) * 100:.1f} points > "
            f"max_error_rate_delta {limit * 100:.1f}",
        )
    limit = canary.max_violation_rate
    if limit is not None and mine.violation_rate > limit + EPSILON:
        return Breach(
            Bound.VIOLATIONS,
            f"output checks failed on {_pct(mine.violation_rate)} of answers "
            f"({mine.violations}/{mine.requests - mine.errors}; stable "
            f"{_pct(stable.violation_rate)}) > max_violation_rate {_pct(limit)}",
        )
    if canary.max_p99_ratio is not None:
        for ttft, what in ((False, "total latency"), (True, "time to first token")):
            breach = _latency(canary, mine, stable, ttft, what)
            if breach is not None:
                return breach
    return None


def _latency(
    canary: Canary, mine: WindowStats, stable: WindowStats, ttft: bool, what: str
) -> Breach | None:
    ratio = canary.max_p99_ratio
    assert ratio is not None
    n_mine, n_stable = (len(s.ttft_s if ttft else s.total_s) for s in (mine, stable))
    if min(n_mine, n_stable) < max(canary.min_requests, LATENCY_MIN_SAMPLES):
        return None
    a, b = mine.p(0.99, ttft), stable.p(0.99, ttft)
    assert a is not None and b is not None
    if a > ratio * b + EPSILON and a - b > P99_SLACK_S:
        medians = f"p50 {_ms(mine.p(0.5, ttft))} vs {_ms(stable.p(0.5, ttft))}"
        return Breach(
            Bound.LATENCY,
            f"p99 {what} {a * 1000:.0f} ms (n={n_mine}) vs stable {b * 1000:.0f} ms "
            f"(n={n_stable}): {a / b if b else float('inf'):.2f}x > max_p99_ratio {ratio:g} "
            f"({medians})",
        )
    return None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


class Action(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    weight: float | None = None  # ADVANCE: the next weight
    breach: Breach | None = None  # ROLLBACK


def decide(
    canary: Canary,
    mine: WindowStats,
    stable: WindowStats,
    now: datetime,
    first_seen: datetime | None = None,
) -> Decision:
    """Roll back on a breach; with steps, advance (or promote after 100 %) once the current
    step held for `dwell_s` with `min_requests` in the window; otherwise hold. A step's start
    is its `stepped_at`, else `started_at`, else `first_seen` (an entry written by hand)."""
    breach = judge(canary, mine, stable)
    if breach is not None:
        return Decision(Action.ROLLBACK, breach.detail, breach=breach)
    if not canary.steps or canary.weight <= 0:
        return Decision(Action.HOLD)
    if mine.requests < canary.min_requests:
        return Decision(Action.HOLD, f"{mine.requests}/{canary.min_requests} requests")
    since = canary.stepped_at or canary.started_at or first_seen
    held_s = (now - since).total_seconds() if since else 0.0
    if held_s < canary.dwell_s:
        return Decision(Action.HOLD, f"held {held_s:.0f}/{canary.dwell_s:g} s")
    stats = _summary(mine, stable)
    percent = canary.weight * 100
    following = next((s for s in canary.steps if s > percent + EPSILON), None)
    if following is None:
        return Decision(Action.PROMOTE, f"every step held, 100 % for {held_s:.0f} s; {stats}")
    return Decision(
        Action.ADVANCE,
        f"{percent:g} % held {held_s:.0f} s; {stats}; now {following:g} %",
        weight=following / 100,
    )


def _summary(mine: WindowStats, stable: WindowStats) -> str:
    p50, p99 = mine.p(0.5), mine.p(0.99)
    latency = f", p50/p99 {p50 * 1000:.0f}/{p99 * 1000:.0f} ms" if p50 and p99 else ""
    return (
        f"canary {mine.requests} requests, 5xx {_pct(mine.error_rate)}, checks failed "
        f"{_pct(mine.violation_rate)}{latency} (stable {stable.requests} requests, "
        f"5xx {_pct(stable.error_rate)})"
    )


def canary_entry(
    version: str, weight: float | None, bounds: Mapping[str, Any], now: datetime
) -> Canary:
    """The channels.json entry of a new canary. Raises `InvalidRequest` naming the field."""
    steps = tuple(bounds.get("steps") or ())
    first = steps[0] / 100 if steps else None
    if weight is None and first is None:
        raise InvalidRequest("a canary needs a weight, or steps", param="weight")
    if weight is not None and first is not None and abs(weight - first) > 1e-9:
        message = f"with steps, the weight is the first step ({first:g})"
        raise InvalidRequest(message, param="weight")
    fields = {k: v for k, v in bounds.items() if not (k == "steps" and v is None)}
    fields |= {"version": version, "weight": weight if weight is not None else first}
    try:
        return Canary.model_validate({**fields, "started_at": now, "stepped_at": now})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise InvalidRequest(f"{where}: {error['msg']}", param=where) from None
