"""The gateway's shared objects, built once from `Settings`, and its background loops.

Built in the app's lifespan (no module-level state); loops are tasks kept in a set and
cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from server.engines.admission import Admission
from server.engines.client import EngineClient, HttpEngineClient
from server.engines.discovery import (
    Discovery,
    EngineTarget,
    Resolver,
    resolve_dns,
    static_targets,
)
from server.engines.fleet import Fleet
from server.engines.placement import Placement
from server.engines.policies import make_policy
from server.engines.registry import Registry
from server.engines.residency import EngineView, Residency
from server.engines.slots import Demand
from server.engines.supervisor import EngineSupervisor
from server.engines.swaplock import LOCK_DIR, FileSwapLocks
from server.engines.swaps import ColdLoadHold
from server.errors import AdapterInvalid, LoragateError, VersionNotReady
from server.metrics import Metrics
from server.releases.canary_controller import CanaryController
from server.releases.channels import active_versions, pin_budget, pin_candidates
from server.releases.outcomes import OutcomeLog
from server.releases.service import ReleaseService
from server.releases.shadow_report import ShadowReports
from server.serving.gateway import Gateway
from server.serving.limits import Limiter
from server.serving.models import ModelCatalog
from server.serving.prepare import Caps
from server.serving.routing import Router
from server.serving.shadow import ShadowTraffic
from server.serving.tenants import Tenants
from server.settings import Settings
from server.store.base_model import BaseModelSpec, demo_base_config
from server.store.layout import ValidationLimits
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

log = logging.getLogger(__name__)

STORE_POLL_S = 0.5  # a store change is picked up within 1 s


class Runtime:
    """Store, engines, registry, router, gateway and metrics of one gateway process."""

    def __init__(
        self,
        settings: Settings,
        engines: dict[str, EngineClient] | None = None,
        resolver: Resolver = resolve_dns,
    ):
        self.settings = settings
        self.metrics = Metrics(window_s=settings.swap_ratio_window_s)
        base = BaseModelSpec.from_config_file(
            settings.base_config or demo_base_config(),
            settings.base_model,
            tuple(settings.base_aliases),
        )
        self.store = AdapterStore(
            settings.store, base, ValidationLimits(max_lora_rank=settings.max_lora_rank)
        )
        static = static_targets(settings.engines)
        self.engines: dict[str, EngineClient] = engines or {
            name: self._client(target) for name, target in static.items()
        }
        self.residency = Residency(settings.residency_refresh_s)
        self.residency.listen(self._engine_view)
        self._swap_locks = FileSwapLocks(settings.store / LOCK_DIR)
        self.registry = Registry(
            {
                name: (client, static[name].capacity if name in static else 4)
                for name, client in self.engines.items()
            },
            self.metrics,
            thrash_window_s=settings.thrash_window_s,
            wait_timeout_s=settings.load_wait_timeout_s,
            min_hold_s=settings.slot_min_hold_s,
            check=self._check_version,
            residency=self.residency,
            locks=self._swap_locks,
            demand=Demand(settings.demand_half_life_s)
            if settings.eviction_policy == "demand"
            else None,
            hold=ColdLoadHold(settings.thrash_hold_ratio, settings.thrash_hold_s)
            if settings.thrash_hold_s > 0
            else None,
        )
        self.supervisors = [
            EngineSupervisor(
                name,
                target.managed,
                target.capacity,
                settings.base_model,
                settings.log_dir,
                on_ready=self.check_engines,
                on_restart=functools.partial(self._engine_exited, name),
            )
            for name, target in static.items()
            if target.managed is not None and engines is None
        ]
        policy = make_policy(settings.placement_policy, settings.placement_load_factor)
        self.placement = Placement(self.registry, policy)
        self.admission = Admission(settings.max_queue_wait_s, self.metrics)
        for name in self.engines:
            target = static.get(name) or EngineTarget(name, "", 4)
            self.admission.add(name, target.max_inflight, target.max_queue)
        self.discovery = Discovery(settings.engines, resolver)
        self.fleet = Fleet(self.engines, self.placement, self.admission, self._client)
        self.router = Router(self.store, settings.base_model)
        self.tenants = Tenants(settings.tenants_file)
        self.catalog = ModelCatalog(self.store, self.placement, settings.base_model)
        caps = Caps(
            max_tokens=settings.max_tokens,
            max_n=settings.max_n,
            max_logprobs=settings.max_logprobs,
            max_prompt_chars=settings.max_prompt_chars,
            max_prompt_tokens=settings.max_prompt_tokens,
        )
        self._rollout_parts(caps)
        self.gateway = Gateway(
            self.router,
            self.placement,
            self.admission,
            self.engines,
            self.metrics,
            caps,
            Limiter(),
            hide_foreign=settings.hide_foreign_adapters,
            outcomes=self.outcomes,
            shadow=self.shadow,
        )
        self.releases = ReleaseService(
            self.store,
            self.registry,
            self.metrics,
            engines_up=self.placement.up_engines,
            pins_changed=self._apply_pins,
            max_upload_bytes=settings.max_upload_bytes,
        )
        self.canaries = CanaryController(
            self.store, self.outcomes, self.releases, self.metrics, pins_changed=self._apply_pins
        )
        self.metrics.track_versions(lambda: active_versions(self.store.snapshot))
        self._tasks: set[asyncio.Task[None]] = set()
        self._store_mark: object = None
        self._started = False
        self.draining = False  # set on SIGTERM: /readyz answers 503 from then on

    def _rollout_parts(self, caps: Caps) -> None:
        """Canary outcomes and shadow mirrors (server/releases, server/serving/shadow.py)."""
        self.outcomes = OutcomeLog(lambda: self.store.snapshot)
        self.shadow_reports = ShadowReports(self.store)
        self.shadow = ShadowTraffic(
            lambda: self.store.snapshot,
            self.placement,
            self.admission,
            self.engines,
            self.metrics,
            caps,
            self.shadow_reports,
            max_inflight=self.settings.shadow_max_inflight,
        )

    def _client(self, target: EngineTarget) -> EngineClient:
        s = self.settings
        return HttpEngineClient(
            target.name,
            target.url,
            connect_timeout_s=s.connect_timeout_s,
            request_timeout_s=s.request_timeout_s,
            load_timeout_s=s.load_timeout_s,
        )

    async def _check_version(self, version: AdapterVersion) -> None:
        """Before any load: raises `VersionNotReady` (503) while the version's files fail
        validation, e.g. a directory still being copied into the store."""
        try:
            await asyncio.to_thread(self.store.validate, version.name, version.version)
        except AdapterInvalid as exc:
            raise VersionNotReady(
                f"{version.engine_name} is not servable: {exc.message} (still being copied "
                "into the store, or broken)",
                retry_after_s=1.0,
            ) from None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.tenants.open:
            log.warning(
                "RUNNING OPEN: no tenants_file is configured, so every caller may use every "
                "adapter without an API key. Set LORAGATE_TENANTS_FILE for multi-tenant use."
            )
        snapshot = await asyncio.to_thread(self.store.scan)
        self._store_mark = await asyncio.to_thread(self.store.fingerprint)
        log.info(
            "store loaded",
            extra={
                "adapters": len(snapshot.adapters),
                "versions": snapshot.version_count(),
                "broken": len(snapshot.broken),
            },
        )
        self._apply_pins()
        for supervisor in self.supervisors:
            supervisor.start()
        if self.discovery.dynamic:
            await self.discover()
            self._spawn(self._every(self.settings.discovery_interval_s, self.discover))
        await self.check_engines()
        for name in list(self.engines):
            self.residency.start(name)
        self._started = True
        self._spawn(self._every(self.settings.reconcile_interval_s, self.check_engines))
        self._spawn(self._every(STORE_POLL_S, self.poll_store))
        self._spawn(self._every(self.settings.canary_interval_s, self.canaries.tick))
        self._spawn(self._every(self.settings.shadow_report_interval_s, self.shadow_reports.flush))
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stall a request for milliseconds now and then.
        gc.freeze()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.shadow.aclose()
        await self.shadow_reports.flush()  # what this gateway mirrored since the last flush
        for supervisor in self.supervisors:
            await supervisor.stop()
        await self.registry.aclose()
        for client in self.engines.values():
            await client.aclose()
        self._swap_locks.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, period_s: float, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await job()
            except Exception:
                log.exception("background job failed", extra={"job": job.__name__})

    # --- jobs ----------------------------------------------------------------------------

    async def check_engines(self) -> None:
        """Reconcile every engine: a fresh look (health and residency), trim, warm pins."""
        self._apply_pins()  # rollback windows expire with time, not only on store changes
        for name in list(self.engines):
            await self._reconcile(name)

    async def _reconcile(self, name: str) -> None:
        try:
            await self.registry.reconcile(name)
        except LoragateError as exc:
            log.warning("reconcile failed", extra={"engine": name, "error": exc.message})

    def _engine_view(self, name: str, view: EngineView) -> None:
        """Health from each fresh view: route to the engines that answer; an engine that
        comes back (restarted, or recovered) is reconciled and gets its pins re-warmed."""
        self.metrics.engine_up.labels(name).set(1 if view.healthy else 0)
        if not view.healthy:
            if self.placement.mark_down(name):
                log.warning("engine down", extra={"engine": name})
            return
        self.admission.observe(name, view.load.running, view.load.waiting)
        if self.placement.mark_up(name) and self._started:
            log.info("engine up", extra={"engine": name})
            self._spawn(self._reconcile(name))

    async def discover(self) -> None:
        """Re-resolve the DNS entries; engines that appear are added (and reconciled), those
        that vanish are drained."""
        await self.fleet.sync(await self.discovery.resolve())

    def _engine_exited(self, name: str) -> None:
        """A managed engine died: stop routing to it now; `on_ready` brings it back."""
        self.metrics.engine_restarts.labels(name).inc()
        self.metrics.engine_up.labels(name).set(0)
        self.placement.mark_down(name)

    async def poll_store(self) -> None:
        """Rescan when an adapter directory or channels.json changed (other gateways, GitOps);
        re-read the tenants file when it changed."""
        await asyncio.to_thread(self.tenants.maybe_reload)
        mark = await asyncio.to_thread(self.store.fingerprint)
        if mark == self._store_mark:
            return
        self._store_mark = mark
        await asyncio.to_thread(self.store.scan)
        self._apply_pins()
        log.info("store rescanned", extra={"versions": self.store.snapshot.version_count()})

    def _apply_pins(self) -> None:
        """Pins within `max_pinned_share` of the smallest engine's slots (#12.6)."""
        slots = [e.capacity for e in self.registry.engines.values()] or [
            e.max_cpu_loras for e in self.settings.engines
        ]
        budget = pin_budget(min(slots, default=4), self.settings.max_pinned_share)
        wanted = pin_candidates(
            self.store.snapshot, datetime.now(UTC), self.settings.rollback_window_s
        )
        self.registry.set_pins(wanted[:budget])
        self.metrics.pins_over_budget.set(max(0, len(wanted) - budget))

    def ready(self) -> bool:
        return (
            not self.draining and bool(self.placement.up_engines()) and self._store_mark is not None
        )

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()
