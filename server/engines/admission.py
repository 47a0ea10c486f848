"""Each engine's bounded admission queue: shed load early instead of letting latency grow.

At most `limit` requests are sent to an engine at once (sized to what it serves well: its
`max_num_seqs`, or less on a CPU). Past that, requests wait in a FIFO, but only if their
expected wait — the requests ahead of them times the mean service time, over `limit` — fits
`max_wait_s`, and the queue holds at most `max_queue`. Anything else is refused at once with
503 and a `Retry-After` computed from the queue, so accepted requests keep their latency and
the rest are told when to come back. A request that still waits `max_wait_s` is refused then.

The limit is learned from the engine where it reports its queue (vLLM's
`vllm:num_requests_waiting`, read about once a second with the rest of its view, `observe`):
while the engine queues requests itself, it is given more than it runs at once, so the limit
shrinks by a tenth, but not below this gateway's share of the requests the engine runs (going
lower would idle part of its batch); while requests wait here and the engine queues nothing,
it grows by one,
back up to the configured `max_inflight`. Several gateways share an engine this way without
knowing of each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from server.errors import Unavailable
from server.metrics import Metrics

EWMA_WEIGHT = 0.1  # of each new service time in the running mean


@dataclass
class EngineQueue:
    """Admission for one engine."""

    engine: str
    limit: int  # requests sent to the engine at once, learned (see observe) ...
    max_queue: int
    max_wait_s: float
    clock: Callable[[], float] = time.monotonic
    on_shed: Callable[[], None] = lambda: None
    max_limit: int = 0  # ... up to this: the configured max_inflight (0: the initial limit)
    inflight: int = 0
    service_s: float = 0.0  # running mean of how long an admitted request takes
    _shed_since_observe: int = 0
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.max_limit = self.max_limit or self.limit

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def observe(self, engine_running: int, engine_waiting: int) -> None:
        """The engine's own counts (all gateways' requests): adapt the limit (AIMD). It grows
        only under pressure here (requests waiting, or shed since the last look), else a
        limit shrunk by someone else's burst could never recover: at a low limit the queue's
        expected wait refuses every request before any of them waits."""
        pressed = bool(self._waiters) or self._shed_since_observe > 0
        self._shed_since_observe = 0
        if engine_waiting > 0:
            # Never below our share of what the engine runs: that only idles its batch while
            # requests wait here (a sole gateway keeps the batch full and queues the rest).
            share = min(1.0, self.inflight / (engine_running + engine_waiting))
            floor = math.ceil(engine_running * share)
            self.limit = min(self.limit, max(1, floor, int(self.limit * 0.9)))
        elif pressed and self.inflight >= self.limit:
            self.limit = min(self.max_limit, self.limit + 1)
        while self.inflight < self.limit and self._hand_over():  # room made: let waiters in
            self.inflight += 1

    def expected_wait_s(self, position: int) -> float:
        """How long the request at `position` in the queue (0: next) should wait."""
        return (position + 1) * self.service_s / self.limit

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of the engine's request slots for the body. Raises `Unavailable`."""
        await self._enter()
        start = self.clock()
        try:
            yield
        finally:
            elapsed = self.clock() - start
            self.service_s += (
                EWMA_WEIGHT * (elapsed - self.service_s) if self.service_s else elapsed
            )
            self._leave()

    async def _enter(self) -> None:
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            return
        wait = self.expected_wait_s(len(self._waiters))
        if len(self._waiters) >= self.max_queue or wait > self.max_wait_s:
            raise self._full(wait)
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives
            # as the slot is handed over, and the request would then hold the slot forever.
            async with asyncio.timeout(self.max_wait_s):
                await asyncio.shield(turn)
        except TimeoutError:
            if turn.done():
                return  # handed the slot just as the wait ran out: take it
            turn.cancel()
            self._waiters.remove(turn)
            raise self._full(self.expected_wait_s(len(self._waiters))) from None
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()  # handed the slot, but the request is gone: pass it on
            else:
                turn.cancel()
                self._waiters.remove(turn)
            raise

    def _leave(self) -> None:
        """Hand the slot to the next waiter (unless the limit shrank below what runs), or
        free it."""
        if self.inflight > self.limit or not self._hand_over():
            self.inflight -= 1

    def _hand_over(self) -> bool:
        """Give one held slot to the next live waiter; False if there is none."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot moves to it: inflight unchanged
                return True
        return False

    def _full(self, wait_s: float) -> Unavailable:
        self._shed_since_observe += 1
        self.on_shed()
        return Unavailable(
            f"engine {self.engine} is at capacity ({self.inflight} running, "
            f"{len(self._waiters)} waiting); retry in {math.ceil(wait_s)} s",
            retry_after_s=max(1.0, wait_s),
        )


class Admission:
    """The admission queues of every engine (engines come and go with discovery)."""

    def __init__(self, max_wait_s: float, metrics: Metrics | None = None) -> None:
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self.queues: dict[str, EngineQueue] = {}

    def add(self, engine: str, limit: int, max_queue: int) -> None:
        metrics = self.metrics

        def shed() -> None:
            if metrics is not None:
                metrics.requests_shed.labels(engine).inc()

        queue = EngineQueue(engine, limit, max_queue, self.max_wait_s, on_shed=shed)
        self.queues[engine] = queue

    def remove(self, engine: str) -> None:
        self.queues.pop(engine, None)

    def observe(self, engine: str, running: int, waiting: int) -> None:
        """The engine's own request counts (from its view): learn its limit."""
        queue = self.queues.get(engine)
        if queue is None:
            return
        queue.observe(running, waiting)
        if self.metrics is not None:
            self.metrics.admission_limit.labels(engine).set(queue.limit)
            self.metrics.admission_waiting.labels(engine).set(queue.waiting)

    def admit(self, engine: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.queues[engine].admit()
