"""Per-tenant admission: request rate, token rate and concurrency, each a 429 with Retry-After.

Token buckets refill continuously. A request is charged what it asks for before it is sent
(its prompt, estimated for text, plus its most completion tokens), and corrected by the
engine's reported usage after (`settle`), so `n`, `best_of` or a huge `max_tokens` cannot
overdraw the bucket by more than one request. The state lives in this process: with N gateway
replicas behind a load balancer, a tenant gets up to N times its limits.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from server.errors import RateLimited
from server.serving.tenants import RateLimit, Tenant


@dataclass
class Bucket:
    rate_per_s: float
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate_per_s)
        self.stamp = now

    def seconds_until(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate_per_s)


@dataclass
class _TenantState:
    requests: Bucket | None
    tokens: Bucket | None
    inflight: int = 0


@dataclass
class Limiter:
    """Admission control for every tenant (state keyed by tenant name)."""

    clock: Callable[[], float] = time.monotonic
    # Keyed by name and limits: a tenants file that changes a tenant's limits starts afresh.
    _state: dict[tuple[str, RateLimit | None], _TenantState] = field(default_factory=dict)

    def _for(self, tenant: Tenant) -> _TenantState:
        key = (tenant.name, tenant.rate_limit)
        state = self._state.get(key)
        if state is None:
            now, rl = self.clock(), tenant.rate_limit
            requests = tokens = None
            if rl is not None and rl.requests_per_s is not None:
                burst = float(rl.burst or max(1, math.ceil(rl.requests_per_s)))
                requests = Bucket(rl.requests_per_s, burst, burst, now)
            if rl is not None and rl.tokens_per_min is not None:
                per_min = float(rl.tokens_per_min)
                tokens = Bucket(per_min / 60.0, per_min, per_min, now)
            state = self._state[key] = _TenantState(requests, tokens)
        return state

    @contextlib.contextmanager
    def admit(self, tenant: Tenant, tokens: int = 0) -> Iterator[None]:
        """Hold one request slot for `tenant` and charge `tokens` up front; raise
        `RateLimited` if over any limit. The caller settles the charge with `settle`."""
        state, now = self._for(tenant), self.clock()
        if tenant.max_concurrent is not None and state.inflight >= tenant.max_concurrent:
            raise RateLimited(
                f"tenant {tenant.name!r} has {state.inflight} requests in flight "
                f"(max_concurrent {tenant.max_concurrent})",
                retry_after_s=1,
            )
        if state.tokens is not None:
            state.tokens.refill(now)
            if state.tokens.level <= 0:
                wait = state.tokens.seconds_until(1)
                raise RateLimited(
                    f"tenant {tenant.name!r} is over its tokens per minute", retry_after_s=wait
                )
        if state.requests is not None:
            state.requests.refill(now)
            if state.requests.level < 1:
                wait = state.requests.seconds_until(1)
                raise RateLimited(
                    f"tenant {tenant.name!r} is over its requests per second", retry_after_s=wait
                )
            state.requests.level -= 1
        state.inflight += 1
        self.settle(tenant, tokens)
        try:
            yield
        finally:
            state.inflight -= 1

    def settle(self, tenant: Tenant, tokens: int) -> None:
        """Charge `tokens` more (negative: refund), e.g. usage minus what was charged."""
        state = self._for(tenant)
        if state.tokens is not None:
            state.tokens.refill(self.clock())
            state.tokens.level = min(state.tokens.capacity, state.tokens.level - tokens)
