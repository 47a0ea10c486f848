"""From a request to the exact thing to serve, and whether its tenant may.

Resolution order: an explicit `model` (the base id, `name`, `name@version`, or one of the
tenant's task aliases, also as `alias@version`) → the `X-Task` header (a task alias) → the
tenant's default adapter. `model` counts as absent when empty or `auto`.

`name` means its stable version, or its canary for the canary's share of requests (sticky per
`user` when the request names one, random otherwise). Anything else — unknown names, invalid
spellings, and (with `hide_foreign`) adapters the tenant may not use — is the same 404, so a
tenant cannot learn which adapters exist; with `hide_foreign=False` a known foreign adapter is
a 403 instead.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from server.errors import Forbidden, InvalidName, InvalidRequest, NotFound
from server.serving.tenants import Tenant
from server.store.manifest import PromptTemplate
from server.store.refs import AdapterRef
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

AUTO_MODELS = frozenset({"", "auto"})


@dataclass(frozen=True)
class Target:
    """What a request resolved to: the base model (`version is None`) or one version."""

    requested: str
    engine_model: str  # the name the engine knows: base id or `name@version`
    version: AdapterVersion | None
    channel: str  # base, stable, canary, pinned

    @property
    def adapter_label(self) -> str:
        """Bounded metric label: the adapter name from the store, or the base id."""
        return self.version.name if self.version else self.engine_model

    @property
    def version_label(self) -> str:
        """Bounded metric label: the version, or "" for the base model."""
        return self.version.version if self.version else ""

    @property
    def template(self) -> PromptTemplate | None:
        return self.version.manifest.prompt_template if self.version else None


def not_found(model: str) -> NotFound:
    return NotFound(f"The model `{model}` does not exist.", param="model")


class Router:
    """Resolves model strings against the store's current snapshot."""

    def __init__(self, store: AdapterStore, base_model: str, rng: random.Random | None = None):
        self.store = store
        self.base_model = base_model
        self._rng = rng or random.Random()  # a traffic split, not a secret

    def resolve_for(
        self,
        tenant: Tenant,
        model: str | None,
        task: str | None = None,
        user: str | None = None,
        hide_foreign: bool = True,
    ) -> Target:
        """Resolve for `tenant`; raise `NotFound`, `Forbidden` or `InvalidRequest`."""
        requested, name = self._requested(tenant, model, task)
        if name == self.base_model:
            if not tenant.allow_base:
                if hide_foreign:
                    raise not_found(requested)
                message = f"tenant {tenant.name!r} may not call the base model"
                raise Forbidden(message, param="model")
            return self.resolve(name, user)
        try:
            ref = AdapterRef.parse(name)
        except InvalidName:
            raise not_found(requested) from None
        if not tenant.may_use(ref.name):
            exists = ref.name in self.store.snapshot.adapters
            if hide_foreign or not exists:
                raise not_found(requested)
            raise Forbidden(f"tenant {tenant.name!r} may not use {ref.name!r}", param="model")
        return self._resolve_ref(requested, ref, user)

    def _requested(self, tenant: Tenant, model: str | None, task: str | None) -> tuple[str, str]:
        """(what the client asked for, the model string after task aliases)."""
        if model is not None and model.strip() not in AUTO_MODELS:
            alias, sep, version = model.partition("@")
            if alias in tenant.tasks:
                return model, tenant.tasks[alias] + (sep + version if sep else "")
            return model, model
        if task:
            if task not in tenant.tasks:
                raise InvalidRequest(f"unknown task {task!r} (X-Task)", param="X-Task")
            return task, tenant.tasks[task]
        if tenant.default is not None:
            return tenant.default, tenant.default
        raise InvalidRequest("no model given and the tenant has no default", param="model")

    def resolve(self, model: str, user: str | None = None) -> Target:
        """Raise `NotFound` for anything that is not the base or a servable version."""
        if model == self.base_model:
            return Target(model, model, None, "base")
        try:
            ref = AdapterRef.parse(model)
        except InvalidName:
            raise not_found(model) from None
        return self._resolve_ref(model, ref, user)

    def _resolve_ref(self, model: str, ref: AdapterRef, user: str | None) -> Target:
        adapter = self.store.snapshot.adapters.get(ref.name)
        if adapter is None:
            raise not_found(model)
        if ref.version is not None:
            version = adapter.versions.get(ref.version)
            if version is None:
                raise not_found(model)
            return Target(model, version.engine_name, version, "pinned")
        channels = adapter.channels
        canary = channels.canary
        if canary and canary.weight > 0 and self._draw(ref.name, user) < canary.weight:
            version = adapter.versions[canary.version]
            return Target(model, version.engine_name, version, "canary")
        if channels.stable is None:
            raise NotFound(
                f"The model `{model}` has no stable version yet; call `{model}@<version>`.",
                param="model",
            )
        stable = adapter.versions[channels.stable]
        return Target(model, stable.engine_name, stable, "stable")

    def _draw(self, adapter: str, user: str | None) -> float:
        """A number in [0, 1): from the user's hash (sticky) or at random."""
        if user is None:
            return self._rng.random()
        digest = hashlib.sha256(f"{adapter}\x00{user}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
