"""When open-loop requests are sent: seconds after the start of a round.

Poisson (exponential gaps) or constant gaps at a rate that may ramp linearly from `rate` to
`ramp_to` over the round, or the timestamps of a trace. Closed-loop arrivals (a fixed number
of clients) have no schedule: the runner sends when a client's previous request ends.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from loadtest.tool.popularity import TraceEvent
from loadtest.tool.scenario import Arrivals


def rate_at(arrivals: Arrivals, t: float, duration_s: float | None) -> float:
    """Requests per second at `t` seconds into the round."""
    assert arrivals.rate is not None
    if arrivals.ramp_to is None or not duration_s:
        return arrivals.rate
    share = min(max(t / duration_s, 0.0), 1.0)
    return arrivals.rate + (arrivals.ramp_to - arrivals.rate) * share


def send_times(
    arrivals: Arrivals,
    rng: random.Random,
    duration_s: float | None,
    trace: list[TraceEvent] | None = None,
) -> Iterator[float]:
    """Send times in order, ending before `duration_s` (endless when it is None; a trace
    ends with the trace). Raises ValueError for closed-loop arrivals or a ramp without a
    duration."""
    if arrivals.kind == "concurrency":
        raise ValueError("closed-loop arrivals have no send times")
    if arrivals.ramp_to is not None and duration_s is None:
        raise ValueError("a ramp needs bounds.duration_s")
    times = _trace_times(trace) if arrivals.kind == "trace" else _gaps(arrivals, rng, duration_s)
    for t in times:
        if duration_s is not None and t >= duration_s:
            return
        yield t


def _gaps(arrivals: Arrivals, rng: random.Random, duration_s: float | None) -> Iterator[float]:
    """Poisson: the first request after an exponential gap; constant: at 0, 1/rate, 2/rate, …
    (multiplied, not summed, so that no rounding drift adds a request at the end)."""
    if arrivals.kind == "constant" and arrivals.ramp_to is None:
        assert arrivals.rate is not None
        yield from (k / arrivals.rate for k in itertools.count())
        return
    t = 0.0 if arrivals.kind == "constant" else rng.expovariate(arrivals.rate or 1.0)
    while True:
        yield t
        rate = rate_at(arrivals, t, duration_s)
        t += rng.expovariate(rate) if arrivals.kind == "poisson" else 1.0 / rate


def _trace_times(trace: list[TraceEvent] | None) -> Iterator[float]:
    if trace is None:
        raise ValueError("arrivals kind trace needs the trace's events")
    return iter([e.at_s for e in trace])
