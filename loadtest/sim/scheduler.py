"""Batch admission with vLLM's LoRA rule.

vllm/v1/core/sched/scheduler.py walks its waiting queue in order and *skips* a request whose
adapter is not already in the batch while `max_loras` distinct adapters are running; later
requests that fit are still scheduled. Base-model requests never count against max_loras.
`max_num_seqs` caps the batch size.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    lora: str | None
    admitted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class BatchScheduler:
    """Tracks running and waiting requests; `slot()` holds a place in the batch."""

    def __init__(self, *, max_loras: int, max_num_seqs: int, on_change: Callable[[], None]) -> None:
        self._max_loras = max_loras
        self._max_num_seqs = max_num_seqs
        self._on_change = on_change
        self._running: Counter[str | None] = Counter()
        self._waiting: list[_Waiter] = []
        # LoRAs with an unfinished (waiting or running) request, in first-seen order, as
        # vllm/v1/metrics/stats.py LoRARequestStates keeps them for vllm:lora_requests_info.
        self._unfinished: Counter[str] = Counter()

    @property
    def num_running(self) -> int:
        return self._running.total()

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def running_loras(self) -> list[str]:
        return [lora for lora, count in self._running.items() if lora is not None and count]

    @property
    def unfinished_loras(self) -> list[str]:
        return list(self._unfinished)

    def is_running(self, lora: str) -> bool:
        return self._running[lora] > 0

    @asynccontextmanager
    async def slot(self, lora: str | None) -> AsyncIterator[None]:
        """Wait (cancellably) until the request may join the batch; leave it on exit."""
        await self._admit(lora)
        try:
            yield
        finally:
            self._finish(lora)

    async def _admit(self, lora: str | None) -> None:
        waiter = _Waiter(lora)
        self._waiting.append(waiter)
        if lora is not None:
            self._unfinished[lora] += 1
        self._schedule()
        self._on_change()
        try:
            await waiter.admitted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                self._forget(lora)
                self._on_change()
            else:  # admitted just before the cancellation landed
                self._finish(lora)
            raise

    def abort(self, error: Callable[[], BaseException]) -> None:
        """Fail every waiting request with a fresh `error()`."""
        for waiter in self._waiting:
            self._forget(waiter.lora)
            waiter.admitted.set_exception(error())
        self._waiting.clear()
        self._on_change()

    def _finish(self, lora: str | None) -> None:
        self._running[lora] -= 1
        if not self._running[lora]:
            del self._running[lora]
        self._forget(lora)
        self._schedule()
        self._on_change()

    def _forget(self, lora: str | None) -> None:
        if lora is None:
            return
        self._unfinished[lora] -= 1
        if not self._unfinished[lora]:
            del self._unfinished[lora]

    def _schedule(self) -> None:
        for waiter in list(self._waiting):
            if self._fits(waiter.lora):
                self._waiting.remove(waiter)
                self._running[waiter.lora] += 1
                waiter.admitted.set_result(None)

    def _fits(self, lora: str | None) -> bool:
        if self.num_running >= self._max_num_seqs:
            return False
        if lora is None or self._running[lora] > 0:
            return True
        return len(self.running_loras) < self._max_loras
