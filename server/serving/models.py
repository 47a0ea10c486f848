"""`/v1/models` for one tenant: the base (if it may call it) and the adapters it may use,
with their release channels, versions, residency and task aliases."""

from __future__ import annotations

from server.engines.placement import Placement
from server.protocol.openai import AdapterCard, CanaryInfo, ModelCard, ModelList, ModelVersion
from server.serving.tenants import Tenant
from server.store.snapshot import Adapter
from server.store.store import AdapterStore


class ModelCatalog:
    """What a tenant may call, read from the store's current snapshot."""

    def __init__(self, store: AdapterStore, placement: Placement, base_model: str) -> None:
        self.store = store
        self.placement = placement
        self.base_model = base_model

    def list_for(self, tenant: Tenant) -> ModelList:
        base = self.base_model
        cards: list[AdapterCard | ModelCard] = []
        if tenant.allow_base:
            cards.append(ModelCard(id=base, created=0, root=base, parent=None))
        aliases: dict[str, list[str]] = {}
        for task, target in tenant.tasks.items():
            aliases.setdefault(target.partition("@")[0], []).append(task)
        resident = self.placement.registry.resident_keys()
        for adapter in self.store.snapshot.adapters.values():
            if tenant.may_use(adapter.name):
                cards.append(self._card(adapter, resident, sorted(aliases.get(adapter.name, []))))
        return ModelList(data=cards)

    def _card(self, adapter: Adapter, resident: set[str], tasks: list[str]) -> AdapterCard:
        channels = adapter.channels
        versions = adapter.versions.values()
        canary = channels.canary
        return AdapterCard(
            id=adapter.name,
            created=int(min((v.manifest.created_at.timestamp() for v in versions), default=0)),
            root=self.base_model,
            parent=self.base_model,
            stable=channels.stable,
            previous=channels.previous,
            canary=CanaryInfo(version=canary.version, weight=canary.weight) if canary else None,
            versions=[
                ModelVersion(
                    version=v.version,
                    created_at=v.manifest.created_at.isoformat(),
                    resident=v.engine_name in resident,
                )
                for v in versions
            ],
            tasks=tasks,
        )
