"""Adapter releases over the store: which versions stay warm, and the operations the admin
API calls (register, promote, rollback, canary, pin/unpin/prewarm, retire, listing). The
eval gate itself is `server.releases.gate`.

`ReleaseService` knows nothing of FastAPI. Every change of release pointers goes through
`AdapterStore.update_channels` (flock + atomic write + audit), so gateways sharing a store
converge on their next poll (within 1 s). Blocking store calls run in worker threads.

Choices:
- promote: candidate must validate; the gate (`evaluate_gate`) must pass unless `force`;
  the candidate is prewarmed on every engine that is up *before* the switch (a prewarm
  failure aborts, nothing switched); old stable → previous, and is kept warm (best effort).
  A canary or shadow of the promoted version ends. Audited `forced` only when force overrode
  a refusal. With `revision`, refused (409) unless channels.json is still at it (the
  canary controller's promotion after the last step: the first gateway wins).
- rollback: stable ← previous, previous ← None. Never loads anything: the switch is the
  channels write; engines where the restored version is not resident are reported. A
  second rollback is refused (409) instead of flipping back to the version just rolled
  away from; that version stays registered as an ordinary candidate.
- canary: weight > 0 validates and prewarms the version first; weight 0 ends the canary.
  Its bounds are stored with it (defaults in `Canary`); with steps the gate must pass at the
  start, since the last step promotes through it (`server.releases.canary_controller`).
- shadow: validates, writes the channel, then prewarms (best effort); share 0 ends it.
- retire: see `AdapterStore.retire`; afterwards the version is unloaded from idle engines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from server.engines.registry import Registry
from server.errors import (
    Conflict,
    InvalidRequest,
    LoragateError,
    PromotionRefused,
    StoreError,
)
from server.metrics import Metrics
from server.protocol.admin import (
    AdapterListing,
)
from server.releases.canary import canary_entry
from server.releases.channels import canaries_moved, shadows_moved
from server.releases.gate import evaluate_gate
from server.releases.listing import describe, resident
from server.releases.results import ChangeResult, PrewarmResult, RetireResult
from server.store.manifest import AuditEntry, Channels, Shadow, utcnow
from server.store.refs import check_name, check_version
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore, AuditVersions
from server.store.uploads import MultipartUpload, StagingTarget

log = logging.getLogger(__name__)


class ReleaseService:
    """The admin operations of one gateway."""

    def __init__(
        self,
        store: AdapterStore,
        registry: Registry,
        metrics: Metrics,
        *,
        engines_up: Callable[[], list[str]],
        pins_changed: Callable[[], None],
        max_upload_bytes: int,
    ) -> None:
        self.store, self.registry, self.metrics = store, registry, metrics
        self._engines_up = engines_up
        self._pins_changed = pins_changed  # re-applies warm pins right after a change
        self.max_upload_bytes = max_upload_bytes

    # --- register ----------------------------------------------------------------------

    async def register_upload(
        self,
        name: str,
        content_type: str,
        body: AsyncIterator[bytes],
        *,
        version: str | None,
        actor: str,
    ) -> AdapterVersion:
        """Stream a multipart upload into a staging directory inside the store, validate,
        rename into place. Raises `AdapterInvalid`, `PayloadTooLarge`, `InvalidRequest`,
        `VersionExists`; on any failure nothing is left behind."""
        check_name(name)
        target = StagingTarget(functools.partial(self.store.staging_dir, name), version)
        upload = MultipartUpload(content_type, target.open, max_bytes=self.max_upload_bytes)
        try:
            async for chunk in body:
                await asyncio.to_thread(upload.feed, chunk)
            await asyncio.to_thread(upload.finish)
            if target.staging is None or target.version is None:
                raise InvalidRequest("the upload holds no files")
            return await asyncio.to_thread(
                self.store.register_staged, target.staging, name, target.version, actor=actor
            )
        finally:
            upload.close()
            await asyncio.to_thread(target.stack.close)

    async def register_in_place(self, name: str, version: str, *, actor: str) -> AdapterVersion:
        """A directory already copied to `<store>/<name>/<version>`: validate it where it is.
        Raises `NotFound`, `AdapterInvalid` (the directory is left as it is)."""
        return await asyncio.to_thread(self.store.register_in_place, name, version, actor=actor)

    # --- channel changes ---------------------------------------------------------------

    async def promote(
        self,
        name: str,
        version: str,
        *,
        actor: str,
        force: bool = False,
        dataset: str | None = None,
        revision: int | None = None,
    ) -> ChangeResult:
        """Make `version` stable. Raises `PromotionRefused` (gate, with the numbers) unless
        `force`, `AdapterInvalid`, `NotFound`, `Conflict` (already stable, the stable changed
        meanwhile, or channels.json is no longer at `revision`), and the prewarm's
        `AdapterLoadFailed`/`Unavailable`."""
        candidate = await self._valid(name, version)
        adapter = self.store.adapter(name)
        old = adapter.channels.stable
        if old == version:
            raise Conflict(f"{candidate.engine_name} is already stable")
        stable = adapter.versions.get(old) if old else None
        gate = await asyncio.to_thread(evaluate_gate, candidate, stable, dataset)
        if not gate.passed and not force:
            raise PromotionRefused(
                f"promotion of {candidate.engine_name} refused: "
                f"{gate.reason}. force=true overrides (audited)"
            )
        prewarm_ms, warm = await self._prewarm_all(candidate)

        def change(current: Channels) -> Channels:
            if current.stable != old:
                raise Conflict(f"{name}: stable changed to {current.stable} meanwhile; retry")
            if revision is not None and current.revision != revision:
                raise Conflict(f"{name}: channels.json changed since revision {revision}")
            previous = old if old is not None else current.previous
            return _end_canary_of(
                current.model_copy(
                    update={
                        "stable": version,
                        "previous": None if previous == version else previous,
                    }
                ),
                version,
            )

        forced = force and not gate.passed
        detail = ("forced past the gate: " if forced else "") + gate.reason
        channels, switch_ms = await self._switch(name, change, actor, "promote", forced, detail)
        self.metrics.promotions.labels(name, str(forced).lower()).inc()
        if stable is not None:  # the rollback target: keep it warm (best effort)
            await self._prewarm_quietly(stable)
        return ChangeResult(
            name,
            "promote",
            channels.model_dump(mode="json"),
            switch_ms,
            prewarm_ms,
            warm,
            forced=forced,
            gate=gate,
            detail=detail,
        )

    async def rollback(self, name: str, *, actor: str) -> ChangeResult:
        """stable ← previous, previous ← None, without any engine load. Raises `Conflict`
        when there is no previous version, `NotFound` for an unknown adapter."""

        def change(current: Channels) -> Channels:
            if current.previous is None:
                raise Conflict(f"{name} has no previous version to roll back to")
            update = {"stable": current.previous, "previous": None}
            return _end_canary_of(current.model_copy(update=update), current.previous)

        channels, switch_ms = await self._switch(name, change, actor, "rollback")
        self.metrics.rollbacks.labels(name).inc()
        key = f"{name}@{channels.stable}"
        cold = [e for e in self._engines_up() if not resident(self.registry.view(e), key)]
        return ChangeResult(
            name, "rollback", channels.model_dump(mode="json"), switch_ms, not_resident=cold
        )

    async def canary(
        self,
        name: str,
        version: str | None,
        weight: float | None,
        *,
        actor: str,
        bounds: Mapping[str, Any] | None = None,
    ) -> ChangeResult:
        """Send `weight` of `name`'s requests to `version` (prewarmed first); 0 ends it.
        `bounds`: the canary's analysis fields (`Canary`); with `steps`, the weight is the first
        step and the gate must pass now (the last step promotes through it). Raises
        `InvalidRequest`, `NotFound`, `AdapterInvalid`, `Conflict` (it is stable),
        `PromotionRefused` (steps, and the gate refuses)."""
        if weight == 0:
            ended, ms = await self._switch(
                name,
                lambda c: c.model_copy(update={"canary": None}),
                actor,
                "canary",
                detail="canary ended",
                audit_versions=canaries_moved,
            )
            return ChangeResult(name, "canary", ended.model_dump(mode="json"), ms)
        if version is None:
            raise InvalidRequest("a canary weight > 0 needs a version", param="version")
        entry = canary_entry(version, weight, bounds or {}, utcnow())
        candidate = await self._valid(name, version)
        adapter = self.store.adapter(name)
        if adapter.channels.stable == version:
            raise Conflict(f"{candidate.engine_name} is stable; a canary must be another version")
        if entry.steps:
            stable = adapter.versions.get(adapter.channels.stable or "")
            gate = await asyncio.to_thread(evaluate_gate, candidate, stable)
            if not gate.passed:
                raise PromotionRefused(
                    f"a canary with steps ends in a promotion, which the eval gate refuses "
                    f"now: {gate.reason}"
                )
        prewarm_ms, warm = await self._prewarm_all(candidate)

        def change(current: Channels) -> Channels:
            if current.stable == version:
                raise Conflict(f"{candidate.engine_name} became stable meanwhile")
            return current.model_copy(update={"canary": entry})

        steps = f", steps {'/'.join(f'{s:g}' for s in entry.steps)} %" if entry.steps else ""
        detail = f"{version} at {entry.weight:.1%}{steps}"
        channels, ms = await self._switch(
            name, change, actor, "canary", detail=detail, audit_versions=canaries_moved
        )
        return ChangeResult(
            name, "canary", channels.model_dump(mode="json"), ms, prewarm_ms, warm, detail=detail
        )

    async def shadow(
        self, name: str, version: str | None, share: float, *, actor: str
    ) -> ChangeResult:
        """Mirror `share` of the stable's requests to `version` (prewarmed, best effort: a
        mirror never loads it); 0 ends the shadow. Raises `InvalidRequest`, `NotFound`,
        `AdapterInvalid`, `Conflict` (it is stable)."""
        if share == 0:
            ended, ms = await self._switch(
                name,
                lambda c: c.model_copy(update={"shadow": None}),
                actor,
                "shadow",
                detail="shadow ended",
                audit_versions=shadows_moved,
            )
            return ChangeResult(name, "shadow", ended.model_dump(mode="json"), ms)
        if version is None:
            raise InvalidRequest("a shadow share > 0 needs a version", param="version")
        candidate = await self._valid(name, version)
        entry = Shadow(version=version, share=share, started_at=utcnow())

        def change(current: Channels) -> Channels:
            if current.stable == version:
                raise Conflict(f"{candidate.engine_name} is stable; a shadow must be another")
            return current.model_copy(update={"shadow": entry})

        detail = f"{share:.1%} of the stable's requests mirrored to {version}"
        channels, ms = await self._switch(
            name, change, actor, "shadow", detail=detail, audit_versions=shadows_moved
        )
        warm = await self._prewarm_quietly(candidate)
        return ChangeResult(
            name, "shadow", channels.model_dump(mode="json"), ms, prewarmed=warm, detail=detail
        )

    async def pin(self, name: str, version: str, *, actor: str, pinned: bool) -> ChangeResult:
        """Add (`pinned`) or remove an operator pin; a newly pinned version is prewarmed
        (best effort). A no-op writes nothing. Raises `NotFound`, `AdapterInvalid`."""
        found = await self._valid(name, version) if pinned else self.store.version(name, version)
        current = self.store.adapter(name).channels
        action = "pin" if pinned else "unpin"
        if (version in current.pinned) == pinned:
            return ChangeResult(
                name,
                action,
                current.model_dump(mode="json"),
                0.0,
                detail=f"already {'pinned' if pinned else 'unpinned'}",
            )

        def change(c: Channels) -> Channels:
            pins = {*c.pinned, version} if pinned else set(c.pinned) - {version}
            return c.model_copy(update={"pinned": tuple(sorted(pins))})

        moved = (None, version) if pinned else (version, None)
        channels, ms = await self._switch(
            name, change, actor, action, audit_versions=lambda c, n: moved
        )
        warm = await self._prewarm_quietly(found) if pinned else []
        return ChangeResult(name, action, channels.model_dump(mode="json"), ms, prewarmed=warm)

    async def prewarm(self, name: str, version: str) -> PrewarmResult:
        """Load `version` on every engine that is up. Raises `NotFound`, `AdapterInvalid`,
        `AdapterLoadFailed`, `Unavailable`."""
        found = await self._valid(name, version)
        elapsed_ms, engines = await self._prewarm_all(found)
        return PrewarmResult(name, version, engines, elapsed_ms)

    async def retire(self, name: str, version: str, *, actor: str) -> RetireResult:
        """Move `version` out of the serving set (kept on disk) and unload it from idle
        engines. Raises `Conflict` (stable, previous, canary or pinned), `NotFound`."""
        try:
            moved = await asyncio.to_thread(self.store.retire, name, version, actor=actor)
        except OSError as exc:
            raise StoreError(f"{name}@{version} not retired: {exc}") from None
        self._pins_changed()
        key = f"{name}@{version}"
        busy = [e for e in self._engines_up() if not await self.registry.unload(e, key)]
        return RetireResult(name, version, moved.name, busy)

    async def audit(self, limit: int | None) -> list[AuditEntry]:
        return await asyncio.to_thread(self.store.audit, limit)

    # --- listing -----------------------------------------------------------------------

    async def describe(self) -> AdapterListing:
        """Every adapter: versions (validation if known, evals), channels, residency, pins."""
        return await describe(self.store, self.registry, self._engines_up())

    # --- helpers -----------------------------------------------------------------------

    async def _valid(self, name: str, version: str) -> AdapterVersion:
        """The version, deep-validated; raises `NotFound`, `AdapterInvalid`."""
        check_name(name)
        check_version(version)
        adapter = self.store.snapshot.adapters.get(name)
        if adapter is None or version not in adapter.versions:  # copied in since the last poll
            await asyncio.to_thread(self.store.scan)
        await asyncio.to_thread(self.store.validate, name, version)
        return self.store.version(name, version)

    async def _switch(
        self,
        name: str,
        change: Callable[[Channels], Channels],
        actor: str,
        action: str,
        forced: bool = False,
        detail: str = "",
        audit_versions: AuditVersions | None = None,
    ) -> tuple[Channels, float]:
        start = time.perf_counter()
        try:
            channels = await asyncio.to_thread(
                self.store.update_channels,
                name,
                change,
                actor=actor,
                action=action,
                forced=forced,
                detail=detail,
                audit_versions=audit_versions,
            )
        except OSError as exc:
            raise StoreError(f"{name}: channels.json not changed: {exc}") from None
        self._pins_changed()
        return channels, round((time.perf_counter() - start) * 1000, 3)

    async def _prewarm_all(self, version: AdapterVersion) -> tuple[float, list[str]]:
        """Load on every engine that is up; the first failure is raised."""
        engines = self._engines_up()
        start = time.perf_counter()
        results = await asyncio.gather(
            *(self.registry.prewarm(e, version) for e in engines), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return round((time.perf_counter() - start) * 1000, 3), engines

    async def _prewarm_quietly(self, version: AdapterVersion) -> list[str]:
        warm = []
        for engine in self._engines_up():
            try:
                await self.registry.prewarm(engine, version)
                warm.append(engine)
            except LoragateError as exc:
                log.warning(
                    "prewarm failed",
                    extra={"engine": engine, "error": exc.message, "adapter": version.engine_name},
                )
        return warm


def _end_canary_of(channels: Channels, version: str | None) -> Channels:
    """A canary or shadow ends when its version becomes stable."""
    if channels.canary is not None and channels.canary.version == version:
        channels = channels.model_copy(update={"canary": None})
    if channels.shadow is not None and channels.shadow.version == version:
        channels = channels.model_copy(update={"shadow": None})
    return channels
