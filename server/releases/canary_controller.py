"""The canary controller: every `canary_interval_s` (1 s), for every adapter with a live
canary, compare the canary with the stable version (`server.releases.canary`) and act.

- Roll back: the canary's weight is set to 0 (its entry stays in channels.json, bounds and
  all, until the next canary call), audited with the numbers, counted in
  `loragate_canary_rollbacks_total{adapter, reason}`.
- Advance a step: the next weight, audited.
- Promote after the last step: `ReleaseService.promote` without force, so the eval gate
  applies (live health says nothing of answer quality, and a regulated release needs the
  eval evidence); refused, the canary is rolled back (`reason="gate"`).

Gateways sharing a store each judge the traffic they served and may reach the same verdict.
Every write carries the channels revision the verdict was made on: the first write wins, the
others find the revision moved and do nothing, so a rollback is written (and audited) once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime

from server.errors import Conflict, LoragateError, PromotionRefused
from server.metrics import Metrics
from server.releases.canary import Action, Bound, Decision, decide
from server.releases.outcomes import OutcomeLog, WindowStats
from server.releases.service import ReleaseService
from server.store.manifest import Canary, Channels, utcnow
from server.store.snapshot import Adapter
from server.store.store import AdapterStore

log = logging.getLogger(__name__)

ACTOR = "canary-analysis"


class CanaryController:
    """Judges and acts on every live canary of the store, once per `tick`."""

    def __init__(
        self,
        store: AdapterStore,
        outcomes: OutcomeLog,
        releases: ReleaseService,
        metrics: Metrics,
        *,
        pins_changed: Callable[[], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.outcomes, self.releases, self.metrics = store, outcomes, releases, metrics
        self._pins_changed = pins_changed
        self._clock = clock
        # (adapter, version, weight) -> when this gateway first saw a step without timestamps
        # (a channels.json entry written by hand): its dwell counts from there.
        self._first_seen: dict[tuple[str, str, float], datetime] = {}

    async def tick(self) -> None:
        now = self._clock()
        watched: set[str] = set()
        seen: dict[tuple[str, str, float], datetime] = {}
        for adapter in list(self.store.snapshot.adapters.values()):
            canary = adapter.channels.canary
            if canary is None or canary.weight <= 0:
                continue
            step = (adapter.name, canary.version, canary.weight)
            seen[step] = self._first_seen.get(step, now)
            mine_key = f"{adapter.name}@{canary.version}"
            stable_key = f"{adapter.name}@{adapter.channels.stable}"
            watched |= {mine_key, stable_key}
            started = canary.started_at.timestamp() if canary.started_at else -math.inf
            since = max(now.timestamp() - canary.window_s, started)
            mine = self.outcomes.stats(mine_key, since)
            stable = self.outcomes.stats(stable_key, since) if adapter.channels.stable else None
            decision = decide(canary, mine, stable or WindowStats(), now, seen[step])
            if decision.action is not Action.HOLD:
                await self._act(adapter, canary, decision, now)
        self._first_seen = seen
        self.outcomes.retain(watched)

    async def _act(
        self, adapter: Adapter, canary: Canary, decision: Decision, now: datetime
    ) -> None:
        name, seen = adapter.name, adapter.channels
        if decision.action is Action.ROLLBACK:
            assert decision.breach is not None
            await self._roll_back(name, seen, canary, decision.breach.bound, decision.reason, now)
        elif decision.action is Action.ADVANCE:
            assert decision.weight is not None
            stepped = canary.model_copy(update={"weight": decision.weight, "stepped_at": now})
            detail = f"canary {canary.version} advanced: {decision.reason}"
            if await self._write(name, seen, stepped, "canary-step", detail, canary.version):
                self.metrics.canary_steps.labels(name).inc()
        elif decision.action is Action.PROMOTE:
            await self._promote(name, seen, canary, decision, now)

    async def _roll_back(
        self, name: str, seen: Channels, canary: Canary, bound: Bound, reason: str, now: datetime
    ) -> None:
        stopped = canary.model_copy(update={"weight": 0.0, "stepped_at": now})
        detail = f"canary {canary.version} rolled back from {canary.weight:.1%} to 0: {reason}"
        if await self._write(name, seen, stopped, "canary-rollback", detail, None):
            self.metrics.canary_rollbacks.labels(name, bound.value).inc()
            log.warning("canary rolled back", extra={"adapter": name, "detail": detail})

    async def _promote(
        self, name: str, seen: Channels, canary: Canary, decision: Decision, now: datetime
    ) -> None:
        try:
            await self.releases.promote(name, canary.version, actor=ACTOR, revision=seen.revision)
        except PromotionRefused as exc:
            reason = f"promotion after the last step refused: {exc.message}"
            await self._roll_back(name, seen, canary, Bound.GATE, reason, now)
            return
        except Conflict:
            return  # another gateway promoted or changed the channels first
        except LoragateError as exc:  # a prewarm failed: nothing switched, try again next tick
            log.warning("canary promotion failed", extra={"adapter": name, "error": exc.message})
            return
        self.metrics.canary_steps.labels(name).inc()
        log.info("canary promoted", extra={"adapter": name, "detail": decision.reason})

    async def _write(
        self,
        name: str,
        seen: Channels,
        canary: Canary,
        action: str,
        detail: str,
        to_version: str | None,
    ) -> bool:
        """Write `canary` if channels.json is still at the revision the verdict saw; False when
        another writer was first (or the write failed)."""

        def change(current: Channels) -> Channels:
            if current.revision != seen.revision:
                raise Conflict(f"{name}: channels.json moved past revision {seen.revision}")
            return current.model_copy(update={"canary": canary})

        try:
            await asyncio.to_thread(
                self.store.update_channels,
                name,
                change,
                actor=ACTOR,
                action=action,
                detail=detail,
                audit_versions=lambda current, new: (canary.version, to_version),
            )
        except Conflict:
            return False
        except (OSError, LoragateError) as exc:
            log.warning("canary change not written", extra={"adapter": name, "error": str(exc)})
            return False
        self._pins_changed()
        return True
