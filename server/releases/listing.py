"""The admin listing (`GET /admin/adapters`): every adapter version with its channel,
validation state, evals and residency, and every engine's slots."""

from __future__ import annotations

import asyncio

from server.engines.registry import Registry
from server.engines.slots import SlotView
from server.errors import AdapterInvalid
from server.protocol.admin import (
    AdapterInfo,
    AdapterListing,
    BrokenInfo,
    EngineInfo,
    SlotInfo,
    VersionInfo,
)
from server.releases.channels import channel_of
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore


async def describe(store: AdapterStore, registry: Registry, up: list[str]) -> AdapterListing:
    """The listing; validation states are read from the store's cache (never computed here)."""
    views = {engine: registry.view(engine) for engine in registry.engines}
    adapters = await asyncio.to_thread(_adapters, store, views, registry.pinned())
    engines = {
        e: EngineInfo(
            up=e in up,
            capacity=registry.engines[e].capacity,
            slots=[SlotInfo(**vars(s)) for s in v],
        )
        for e, v in views.items()
    }
    broken = [BrokenInfo(path=b.path, error=b.error) for b in store.snapshot.broken]
    return AdapterListing(adapters=adapters, engines=engines, broken=broken)


def _adapters(
    store: AdapterStore, views: dict[str, list[SlotView]], warm_pins: set[str]
) -> list[AdapterInfo]:
    adapters = []
    for adapter in store.snapshot.adapters.values():
        roles = channel_of(adapter.channels)
        versions = [
            VersionInfo(
                version=v.version,
                created_at=v.manifest.created_at,
                created_by=v.manifest.created_by,
                channel=roles.get(v.version),
                validation=_validation(store, v),
                resident_on=[e for e, slots in views.items() if resident(slots, v.engine_name)],
                warm_pinned=v.engine_name in warm_pins,
                evals=v.evals(),
            )
            for v in adapter.versions.values()
        ]
        adapters.append(
            AdapterInfo(name=adapter.name, versions=versions, channels=adapter.channels)
        )
    return adapters


def _validation(store: AdapterStore, version: AdapterVersion) -> str:
    state = store.validation_state(version.name, version.version)
    if state is None:
        return "unknown"
    return f"invalid: {state.message}" if isinstance(state, AdapterInvalid) else "valid"


def resident(slots: list[SlotView], key: str) -> bool:
    return any(s.key == key and s.state == "ready" for s in slots)
