"""The engines this gateway routes to, kept in step with discovery.

An engine that appears gets a client, a place in the registry, an admission queue and its own
view refresh; its
first healthy view marks it up, and the runtime reconciles it then (pinned versions warmed).
One that vanishes
is drained: placement sends it nothing new, and once this gateway has no request left on it
it is removed and its client closed. One that comes back before that is simply undrained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from server.engines.admission import Admission
from server.engines.client import EngineClient
from server.engines.discovery import EngineTarget
from server.engines.placement import Placement

log = logging.getLogger(__name__)


class Fleet:
    """Adds and drains engines: the clients (shared with the gateway), registry, placement."""

    def __init__(
        self,
        clients: dict[str, EngineClient],
        placement: Placement,
        admission: Admission,
        make_client: Callable[[EngineTarget], EngineClient],
    ) -> None:
        self.clients = clients
        self.placement = placement
        self.admission = admission
        self.registry = placement.registry
        self._make_client = make_client

    async def sync(self, targets: dict[str, EngineTarget]) -> None:
        """Make the fleet `targets`: add the new, drain the vanished, remove the drained."""
        for name, target in targets.items():
            if name not in self.clients:
                self.add(target)
            elif name in self.placement.draining():
                self.placement.undrain(name)
                log.info("engine back", extra={"engine": name})
        for name in list(self.clients):
            if name not in targets and name not in self.placement.draining():
                self.placement.drain(name)
                log.info("engine draining (left discovery)", extra={"engine": name})
        await self.sweep()

    def add(self, target: EngineTarget) -> None:
        client = self._make_client(target)
        self.clients[target.name] = client
        self.registry.add_engine(target.name, client, target.capacity)
        self.admission.add(target.name, target.max_inflight, target.max_queue)
        self.registry.residency.start(target.name)
        log.info("engine added", extra={"engine": target.name, "url": target.url})

    async def sweep(self) -> None:
        """Remove drained engines this gateway no longer has a request on."""
        for name in self.placement.draining():
            if self.registry.inflight(name) > 0:
                continue
            await self.registry.remove_engine(name)
            self.placement.forget(name)
            self.admission.remove(name)
            client = self.clients.pop(name, None)
            if client is not None:
                await client.aclose()
            log.info("engine removed", extra={"engine": name})
