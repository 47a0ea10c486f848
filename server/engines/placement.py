"""Which engines are up, which one serves a request, and the lease that holds it there.

`Placement` is the one owner of engine health as the gateway sees it: the runtime's health
checks mark engines up or down, routing reads `up_engines()`, and every request goes through
`lease(key, version)`. The base model is an ordinary target that every engine always holds
(LoRAX's "base model adapter"); adapters are made resident through the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

from server.engines.registry import Registry
from server.errors import Unavailable
from server.store.snapshot import AdapterVersion


class Placement:
    """Engine health, engine choice and leases over one `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._up: set[str] = set(registry.engines)

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

    def up_engines(self) -> list[str]:
        return sorted(self._up)

    # --- choice and lease ------------------------------------------------------------------

    def choose(self, key: str, adapter: bool) -> str:
        """An engine holding `key` (least in flight), else its rendezvous-hash home engine,
        unless that one is much busier than the least busy (bounded load). The base model
        (`adapter` False) goes to the least busy engine. Raises `Unavailable` if none is up."""
        candidates = self.up_engines()
        if not candidates:
            raise Unavailable("no engine is up", retry_after_s=5)
        load = self.registry.inflight
        least = min(candidates, key=load)
        if not adapter:
            return least
        holding = [e for e in candidates if self.registry.is_resident(e, key)]
        if holding:
            return min(holding, key=load)
        home = max(candidates, key=lambda e: hashlib.sha256(f"{e}|{key}".encode()).digest())
        return least if load(home) > 2 * load(least) + 4 else home

    @contextlib.asynccontextmanager
    async def lease(self, key: str, version: AdapterVersion | None) -> AsyncIterator[str]:
        """Choose an engine for `key` (the base id, or `version`'s engine name), hold `version`
        resident there for the body of the `async with`, and yield the engine's name.

        Raises `Unavailable` (no engine up, no slot in time) and `AdapterLoadFailed`."""
        engine = self.choose(key, adapter=version is not None)
        await self.registry.acquire(engine, version)
        try:
            yield engine
        finally:
            self.registry.release(engine, version)
