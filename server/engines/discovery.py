"""Which engines exist: the static list, plus every address behind a DNS name.

`engines: [{dns: "vllm-headless:8000"}]` names a Kubernetes headless Service: its A (or
AAAA) records are the ready engine pods. `Discovery.resolve` re-reads them with the event
loop's `getaddrinfo` (a worker thread inside asyncio, never the loop itself); each address
becomes an engine named `ip:port`. A name that does not resolve keeps its last known
addresses: a DNS blip must not drain every engine. `Fleet` applies the difference.

The resolver is a plain async function, so tests pass their own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.settings import EngineConfig, ManagedEngine

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_dns(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (A and AAAA), sorted. Raises `OSError`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class EngineTarget:
    """One engine to route to."""

    name: str  # metric label
    url: str
    capacity: int  # adapter slots (its --max-cpu-loras)
    managed: ManagedEngine | None = None
    max_inflight: int = 64  # admission: requests sent to it at once ...
    max_queue: int = 256  # ... and waiting for one of those


def static_targets(entries: list[EngineConfig]) -> dict[str, EngineTarget]:
    """The `url` and `managed` entries, named `name` or `engine-<index>`."""
    return {
        (e.name or f"engine-{i}"): EngineTarget(
            e.name or f"engine-{i}",
            e.base_url(),
            e.max_cpu_loras,
            e.managed,
            e.max_inflight,
            e.max_queue,
        )
        for i, e in enumerate(entries)
        if e.dns is None
    }


class Discovery:
    """Static entries and DNS entries → the engines that exist now."""

    def __init__(self, entries: list[EngineConfig], resolver: Resolver = resolve_dns) -> None:
        self.entries = entries
        self.resolver = resolver
        self._last: dict[str, list[str]] = {}  # dns name -> the addresses it last resolved to

    @property
    def dynamic(self) -> bool:
        return any(e.dns is not None for e in self.entries)

    async def resolve(self) -> dict[str, EngineTarget]:
        targets = static_targets(self.entries)
        for entry in self.entries:
            if entry.dns is None:
                continue
            host, _, port = entry.dns.rpartition(":")
            for address in await self._addresses(entry.dns, host, int(port)):
                url_host = f"[{address}]" if ":" in address else address
                name = f"{url_host}:{port}"
                target = EngineTarget(
                    name,
                    f"http://{name}",
                    entry.max_cpu_loras,
                    max_inflight=entry.max_inflight,
                    max_queue=entry.max_queue,
                )
                targets.setdefault(name, target)
        return targets

    async def _addresses(self, dns: str, host: str, port: int) -> list[str]:
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            log.warning("engine DNS lookup failed", extra={"dns": dns, "error": str(exc)})
            return self._last.get(dns, [])
        if addresses != self._last.get(dns):
            log.info("engines resolved", extra={"dns": dns, "addresses": addresses})
        self._last[dns] = addresses
        return addresses
