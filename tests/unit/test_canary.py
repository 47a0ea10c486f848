"""Canary analysis (server/releases/canary.py): verdicts and next steps, table-driven over
window statistics; the channels.json entry a canary call writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.errors import InvalidRequest
from server.releases.canary import Action, Bound, canary_entry, decide, judge
from server.releases.outcomes import WindowStats
from server.store.manifest import Canary, Channels

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stats(
    requests: int,
    errors: int = 0,
    violations: int = 0,
    latency_s: float = 0.1,
    ttft_s: float | None = None,
) -> WindowStats:
    ok = requests - errors
    return WindowStats(
        requests=requests,
        errors=errors,
        violations=violations,
        total_s=(latency_s,) * ok,
        ttft_s=(ttft_s,) * ok if ttft_s is not None else (),
    )


def canary(**fields: Any) -> Canary:
    return Canary.model_validate({"version": "v3", "weight": 0.2, "min_requests": 50, **fields})


# (case, canary fields, canary stats, stable stats, the bound broken or None, fragments)
JUDGE: list[tuple[str, dict[str, Any], WindowStats, WindowStats, Bound | None, list[str]]] = [
    ("healthy", {}, stats(100), stats(400), None, []),
    ("too-few-requests", {}, stats(49, errors=49), stats(400), None, []),
    (
        "errors-20-percent",
        {},
        stats(100, errors=20),
        stats(400),
        Bound.ERROR_RATE,
        ["5xx ratio 20.0% (20/100) vs stable 0.0% (0/400)", "+20.0 points > max_error_rate_delta"],
    ),
    ("errors-within-delta", {}, stats(100, errors=3), stats(400, errors=8), None, []),
    ("error-bound-off", {"max_error_rate_delta": None}, stats(100, errors=50), stats(9), None, []),
    (
        "violations",
        {},
        stats(100, violations=2),
        stats(400),
        Bound.VIOLATIONS,
        ["output checks failed on 2.0% of answers (2/100", "max_violation_rate 1.0%"],
    ),
    (
        "slower-p99",
        {},
        stats(100, latency_s=0.4),
        stats(400, latency_s=0.2),
        Bound.LATENCY,
        ["p99 total latency 400 ms (n=100) vs stable 200 ms (n=400): 2.00x > max_p99_ratio 1.5"],
    ),
    (
        "slower-but-within-slack",
        {},
        stats(100, latency_s=0.04),
        stats(400, latency_s=0.01),
        None,
        [],
    ),
    (
        "slower-first-token",
        {},
        stats(100, ttft_s=0.5),
        stats(400, ttft_s=0.1),
        Bound.LATENCY,
        ["p99 time to first token 500 ms"],
    ),
    ("stable-too-few-for-latency", {}, stats(100, latency_s=9), stats(10), None, []),
    ("latency-off", {"max_p99_ratio": None}, stats(100, latency_s=9), stats(400), None, []),
]


@pytest.mark.parametrize(
    ("case", "fields", "mine", "stable", "bound", "fragments"), JUDGE, ids=[c[0] for c in JUDGE]
)
def test_judge(
    case: str,
    fields: dict[str, Any],
    mine: WindowStats,
    stable: WindowStats,
    bound: Bound | None,
    fragments: list[str],
) -> None:
    breach = judge(canary(**fields), mine, stable)
    assert (breach.bound if breach else None) is bound, breach
    for fragment in fragments:
        assert breach is not None and fragment in breach.detail


STEPS = {"steps": [1, 5, 25, 50, 100], "dwell_s": 60}


# (case, canary fields, canary stats, seconds since the step, action, next weight)
DECIDE: list[tuple[str, dict[str, Any], WindowStats, float, Action, float | None]] = [
    ("no-steps-holds", {}, stats(100), 3600, Action.HOLD, None),
    ("breach-rolls-back", STEPS, stats(100, errors=30), 3600, Action.ROLLBACK, None),
    ("dwell-not-over", {**STEPS, "weight": 0.01}, stats(100), 59, Action.HOLD, None),
    ("too-few-to-advance", {**STEPS, "weight": 0.01}, stats(10), 3600, Action.HOLD, None),
    ("advance", {**STEPS, "weight": 0.01}, stats(100), 60, Action.ADVANCE, 0.05),
    ("advance-to-100", {**STEPS, "weight": 0.5}, stats(100), 60, Action.ADVANCE, 1.0),
    ("promote-after-100", {**STEPS, "weight": 1.0}, stats(100), 60, Action.PROMOTE, None),
    ("rolled-back-holds", {**STEPS, "weight": 0.0}, stats(100), 3600, Action.HOLD, None),
]


@pytest.mark.parametrize(
    ("case", "fields", "mine", "held_s", "action", "weight"), DECIDE, ids=[c[0] for c in DECIDE]
)
def test_decide(
    case: str,
    fields: dict[str, Any],
    mine: WindowStats,
    held_s: float,
    action: Action,
    weight: float | None,
) -> None:
    c = canary(**fields, stepped_at=NOW - timedelta(seconds=held_s))
    decision = decide(c, mine, stats(400), NOW)
    assert (decision.action, decision.weight) == (action, weight), decision.reason


def test_a_step_written_by_hand_dwells_from_when_it_was_first_seen() -> None:
    by_hand = canary(**STEPS, weight=0.05)  # no started_at, no stepped_at
    assert decide(by_hand, stats(100), stats(400), NOW).action is Action.HOLD
    seen = NOW - timedelta(seconds=61)
    assert decide(by_hand, stats(100), stats(400), NOW, seen).weight == 0.25


def test_canary_entry_defaults_steps_and_errors() -> None:
    plain = canary_entry("v3", 0.1, {}, NOW)
    assert (plain.max_error_rate_delta, plain.max_p99_ratio, plain.max_violation_rate) == (
        0.02,
        1.5,
        0.01,
    )
    assert (plain.min_requests, plain.window_s, plain.started_at) == (50, 300.0, NOW)
    stepped = canary_entry("v3", None, {"steps": [5, 100], "max_p99_ratio": None}, NOW)
    assert (stepped.weight, stepped.steps, stepped.max_p99_ratio) == (0.05, (5, 100), None)
    for weight, bounds, fragment in (
        (None, {}, "needs a weight, or steps"),
        (0.5, {"steps": [5, 100]}, "the first step (0.05)"),
        (None, {"steps": [5, 50]}, "ending at 100"),
        (None, {"steps": [50, 5, 100]}, "increasing"),
        (0.1, {"min_requests": None}, "min_requests"),
        (0.1, {"max_p99_ratio": 0.5}, "max_p99_ratio"),
    ):
        with pytest.raises(InvalidRequest, match=re.escape(fragment)):
            canary_entry("v3", weight, bounds, NOW)


def test_channels_files_from_before_still_read() -> None:
    old = '{"stable": "v2", "previous": "v1", "canary": {"version": "v3", "weight": 0.1}}'
    channels = Channels.model_validate_json(old)
    assert channels.canary is not None and channels.canary.min_requests == 50
    assert channels.shadow is None
    assert Channels.model_validate_json(channels.model_dump_json()) == channels
