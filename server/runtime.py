"""The gateway's shared objects, built once from `Settings`, and its background loops.

Built in the app's lifespan (no module-level state); loops are tasks kept in a set and
cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from server.engines.admission import Admission, EngineQueue
from server.engines.client import EngineClient, HttpEngineClient
from server.engines.placement import Placement
from server.engines.registry import Registry
from server.engines.supervisor import EngineSupervisor
from server.errors import AdapterInvalid, LoragateError, VersionNotReady
from server.metrics import Metrics
from server.releases.canary_controller import CanaryController
from server.releases.channels import active_versions, pinned_versions
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
from server.settings import EngineConfig, Settings
from server.store.base_model import BaseModelSpec, demo_base_config
from server.store.layout import ValidationLimits
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

log = logging.getLogger(__name__)

STORE_POLL_S = 0.5  # a store change is picked up within 1 s


class Runtime:
    """Store, engines, registry, router, gateway and metrics of one gateway process."""

    def __init__(self, settings: Settings, engines: dict[str, EngineClient] | None = None):
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
        names = settings.engine_names()
        self.engines: dict[str, EngineClient] = engines or {
            name: self._client(name, cfg.base_url())
            for name, cfg in zip(names, settings.engines, strict=True)
        }
        capacity = {n: cfg.max_cpu_loras for n, cfg in zip(names, settings.engines, strict=True)}
        self.registry = Registry(
            {name: (client, capacity.get(name, 4)) for name, client in self.engines.items()},
            self.metrics,
            thrash_window_s=settings.thrash_window_s,
            wait_timeout_s=settings.load_wait_timeout_s,
            check=self._check_version,
        )
        self.supervisors = [
            EngineSupervisor(
                name,
                cfg.managed,
                cfg.max_cpu_loras,
                settings.base_model,
                settings.log_dir,
                on_ready=self.check_engines,
                on_restart=functools.partial(self._engine_exited, name),
            )
            for name, cfg in zip(names, settings.engines, strict=True)
            if cfg.managed is not None and engines is None
        ]
        self.placement = Placement(self.registry)
        configs = dict(zip(names, settings.engines, strict=True))
        self.admission = Admission(
            {name: self._queue(name, configs.get(name)) for name in self.engines}
        )
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

    def _queue(self, name: str, cfg: EngineConfig | None) -> EngineQueue:
        fields = EngineConfig.model_fields
        limit = cfg.max_inflight if cfg else fields["max_inflight"].default
        queue = cfg.max_queue if cfg else fields["max_queue"].default
        return EngineQueue(name, limit, queue, self.settings.max_queue_wait_s)

    def _client(self, name: str, url: str) -> EngineClient:
        s = self.settings
        return HttpEngineClient(
            name,
            url,
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
        await self.check_engines()
        self._spawn(self._every(self.settings.reconcile_interval_s, self.check_engines))
        self._spawn(self._every(STORE_POLL_S, self.poll_store))
        self._spawn(self._every(self.settings.canary_interval_s, self.canaries.tick))
        self._spawn(self._every(self.settings.shadow_report_interval_s, self.shadow_reports.flush))

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
        """Health of every engine; reconcile residency of those that answer."""
        self._apply_pins()  # rollback windows expire with time, not only on store changes
        for name, client in self.engines.items():
            healthy = await client.health()
            self.metrics.engine_up.labels(name).set(1 if healthy else 0)
            if not healthy:
                if self.placement.mark_down(name):
                    log.warning("engine down", extra={"engine": name})
                continue
            self.placement.mark_up(name)
            try:
                await self.registry.reconcile(name)
            except LoragateError as exc:
                log.warning("reconcile failed", extra={"engine": name, "error": exc.message})

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
        budget = min((e.capacity for e in self.registry.engines.values()), default=1) - 1
        pins = pinned_versions(
            self.store.snapshot, datetime.now(UTC), self.settings.rollback_window_s, budget
        )
        self.registry.set_pins(pins)

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
