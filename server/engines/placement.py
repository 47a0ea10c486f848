"""Which engines are up, which one serves a request, and the lease that holds it there.

`Placement` is the one owner of engine health as the gateway sees it: the runtime marks
engines up or down from their views (`Residency`), discovery drains the ones that vanished,
routing reads `up_engines()`, and every request goes through `lease(key, version)`. The choice
itself is the configured `Policy` (`policies`). The base model is an ordinary target that
every engine always holds (LoRAX's "base model adapter"); adapters are made resident
through the registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from server.engines.policies import Affinity, Policy
from server.engines.registry import Registry
from server.errors import Unavailable
from server.store.snapshot import AdapterVersion


class Placement:
    """Engine health, engine choice and leases over one `Registry`."""

    def __init__(self, registry: Registry, policy: Policy | None = None) -> None:
        self.registry = registry
        self.policy = policy or Affinity()
        self._up: set[str] = set(registry.engines)
        self._draining: set[str] = set()

    # --- health ----------------------------------------------------------------------------

    def mark_up(self, engine: str) -> bool:
        """Mark `engine` up; True if it was down."""
        was_down = engine not in self._up
        self._up.add(engine)
        return was_down

    def mark_down(self, engine: str) -> bool:
        """Stop routing to `engine`; True if it was up."""
        was_up = engine in self._up
        self._up.discard(engine)
        return was_up

    def drain(self, engine: str) -> None:
        """Route nothing new to `engine` (it left discovery); its requests finish."""
        self._draining.add(engine)

    def undrain(self, engine: str) -> None:
        """`engine` is back in discovery before it was removed."""
        self._draining.discard(engine)

    def forget(self, engine: str) -> None:
        """`engine` is gone for good (drained and removed from the registry)."""
        self._up.discard(engine)
        self._draining.discard(engine)

    def draining(self) -> list[str]:
        return sorted(self._draining)

    def up_engines(self) -> list[str]:
        return sorted(self._up - self._draining)

    # --- choice and lease ------------------------------------------------------------------

    def choose(self, key: str, adapter: bool) -> str:
        """The policy's engine for `key` (a version's engine name, or the base id when
        `adapter` is False) among the engines up. Raises `Unavailable` if none is up."""
        candidates = self.up_engines()
        if not candidates:
            raise Unavailable("no engine is up", retry_after_s=5)
        return self.policy.choose(key if adapter else None, candidates, self.registry)

    @contextlib.asynccontextmanager
    async def lease(self, key: str, version: AdapterVersion | None) -> AsyncIterator[str]:
        """Choose an engine for `key` (the base id, or `version`'s engine name), hold `version`
        resident there for the body of the `async with`, and yield the engine's name.

        Raises `Unavailable` (no engine up, no slot in time) and `AdapterLoadFailed`."""
        engine = self.choose(key, adapter=version is not None)
        hold = await self.registry.acquire(engine, version)
        try:
            yield engine
        finally:
            self.registry.release(hold)

    def unreachable(self, engine: str) -> None:
        """`engine` refused a connection: route nothing to it until its view is healthy."""
        self.mark_down(engine)
        self.registry.residency.kick(engine)

    def lost(self, engine: str, key: str) -> None:
        """`engine` answered 404 for `key` (another gateway unloaded it): forget the slot so
        the next lease loads it again."""
        self.registry.metrics.adapter_gone_retries.labels(engine).inc()
        self.registry.forget(engine, key)
