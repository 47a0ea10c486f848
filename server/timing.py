"""Where one request's time goes: inside the gateway, or waiting on an engine.

`RequestContext` (the outermost middleware) starts a `RequestTiming` when the request
arrives and reads it after the last byte of the answer is sent: the gateway's own time is
everything in between minus what the serving code spent waiting on engines (`waiting()`:
adapter loads, admission queues, generation). That is the figure `X-Gateway-Overhead-Ms`
(up to the first byte of the answer) and `loragate_gateway_overhead_seconds` (up to the last)
report, framework time (parsing, routing, encoding) included.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class RequestTiming:
    start: float = field(default_factory=time.perf_counter)  # perf_counter seconds
    outside: float = 0.0  # seconds waiting on engines

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.outside += time.perf_counter() - t0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def overhead(self) -> float:
        return max(0.0, self.elapsed() - self.outside)


current: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar(
    "request_timing", default=None
)


def for_request() -> RequestTiming:
    """The current request's timing (a fresh one outside a request, e.g. in tests)."""
    return current.get() or RequestTiming()
