"""From the `model` string of a request to the exact thing to serve.

`model` is the base id, `name` (its stable version, or its canary for a share of requests),
or `name@version`. Anything else — including names that are not even valid spellings — is
the same 404 a client gets for an unknown model. Canary choice is sticky per `user` when the
request names one (hash of user + adapter), random otherwise.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from server.errors import InvalidName, NotFound
from server.refs import AdapterRef
from server.store import AdapterStore, AdapterVersion


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


def not_found(model: str) -> NotFound:
    return NotFound(f"The model `{model}` does not exist.", param="model")


class Router:
    """Resolves model strings against the store's current snapshot."""

    def __init__(self, store: AdapterStore, base_model: str, rng: random.Random | None = None):
        self.store = store
        self.base_model = base_model
        self._rng = rng or random.Random()  # a traffic split, not a secret

    def resolve(self, model: str, user: str | None = None) -> Target:
        """Raise `NotFound` for anything that is not the base or a servable version."""
        if model == self.base_model:
            return Target(model, model, None, "base")
        try:
            ref = AdapterRef.parse(model)
        except InvalidName:
            raise not_found(model) from None
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
