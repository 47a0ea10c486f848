"""Shadow traffic: a share of the requests the stable version serves is sent again to a
candidate version (channels.json `shadow: {version, share}`) once the client has its answer.

The client never sees the candidate: not in the answer, not in a header, not in its tenant's
limits or request metrics. A mirror must never slow the primary traffic, so it is dropped
rather than queued when
- this gateway already has `max_inflight` mirrors running (`limit`),
- the candidate is not resident on an engine that is up (`cold`: a mirror never loads an
  adapter, which could evict one the primary traffic uses; prewarm or pin the candidate),
- the engine's admission queue has anyone waiting, or under `FREE_SHARE` of its request slots
  free (`busy`).
Each mirror is one non-streamed call with the candidate's own prompt template; its outcome
and the primary's answer go to a `ShadowSink` (the runtime wires
`server.releases.shadow_report.ShadowReports`, which scores agreement and writes the
candidate's eval report). Nothing of the request's text is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from server.engines.admission import Admission
from server.engines.client import EngineClient
from server.engines.placement import Placement
from server.errors import LoragateError
from server.metrics import Metrics
from server.protocol.openai import ENGINE_PATHS, Kind, OpenAIRequest
from server.serving.outcomes import answer_text
from server.serving.prepare import Caps, apply_caps, apply_template
from server.serving.routing import Target
from server.serving.tenants import Tenant
from server.store.snapshot import AdapterVersion, Snapshot

log = logging.getLogger(__name__)

FREE_SHARE = 0.25  # of an engine's admission slots that must be free for a mirror to run


class ShadowSink(Protocol):
    """Where mirrored requests end up (called on the event loop)."""

    def record_shadow(
        self,
        candidate: AdapterVersion,
        reference: AdapterVersion,
        *,
        failed: bool,
        latency_s: float,
        text: str | None,
        reference_text: str,
        reference_latency_s: float,
    ) -> None: ...

    def dropped(self, candidate: AdapterVersion, reference: AdapterVersion) -> None: ...


class ShadowTraffic:
    """Chooses and sends mirrors for one gateway."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        placement: Placement,
        admission: Admission,
        engines: dict[str, EngineClient],
        metrics: Metrics,
        caps: Caps,
        sink: ShadowSink,
        *,
        max_inflight: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.placement, self.admission, self.engines = placement, admission, engines
        self.metrics, self.caps, self.sink = metrics, caps, sink
        self.max_inflight = max_inflight
        self._rng = rng or random.Random()  # a traffic share, not a secret
        self._tasks: set[asyncio.Task[None]] = set()

    def plan(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant, target: Target
    ) -> _Mirror | None:
        """A mirror for this request, if its adapter has a shadow and the draw falls in it."""
        version = target.version
        if version is None or target.channel != "stable":
            return None
        adapter = self._snapshot().adapters.get(version.name)
        shadow = adapter.channels.shadow if adapter is not None else None
        if shadow is None or shadow.version == version.version:
            return None
        candidate = adapter.versions.get(shadow.version) if adapter is not None else None
        if candidate is None or self._rng.random() >= shadow.share:
            return None
        return _Mirror(self, kind, req, tenant, target, candidate)

    def _drop(self, mirror: _Mirror, reason: str) -> None:
        self.metrics.shadow_requests.labels(mirror.candidate.name, f"dropped_{reason}").inc()
        assert mirror.target.version is not None
        self.sink.dropped(mirror.candidate, mirror.target.version)

    def _start(self, mirror: _Mirror, reference_text: str, reference_latency_s: float) -> None:
        if len(self._tasks) >= self.max_inflight:
            self._drop(mirror, "limit")
            return
        task = asyncio.create_task(self._run(mirror, reference_text, reference_latency_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _engine_for(self, candidate: AdapterVersion) -> tuple[str | None, str]:
        """(the least busy up engine holding the candidate with room to spare, or None; why
        not: `cold` or `busy`)."""
        registry = self.placement.registry
        key = candidate.engine_name
        holding = [e for e in self.placement.up_engines() if registry.holds(e, key)]
        if not holding:
            return None, "cold"
        engine = min(holding, key=registry.load)
        queue = self.admission.queues[engine]
        if queue.waiting or queue.limit - queue.inflight < max(1.0, FREE_SHARE * queue.limit):
            return None, "busy"
        return engine, ""

    async def _run(self, mirror: _Mirror, reference_text: str, reference_latency_s: float) -> None:
        candidate, reference = mirror.candidate, mirror.target.version
        assert reference is not None
        engine, why_not = self._engine_for(candidate)
        if engine is None:
            self._drop(mirror, why_not)
            return
        registry = self.placement.registry
        # Resident (checked above, no await since): a hit that never loads or waits.
        hold = await registry.acquire(engine, candidate)
        start, text, failed = time.perf_counter(), None, True
        try:
            async with self.admission.admit(engine):
                path = ENGINE_PATHS[mirror.kind]
                result = await self.engines[engine].generate(path, mirror.body())
            text, failed = answer_text(result), False
        except LoragateError as exc:
            extra = {"adapter": candidate.engine_name, "error": exc.message}
            log.info("shadow request failed", extra=extra)
        finally:
            registry.release(hold)
        outcome = "failed" if failed else "answered"
        self.metrics.shadow_requests.labels(candidate.name, outcome).inc()
        self.sink.record_shadow(
            candidate,
            reference,
            failed=failed,
            latency_s=time.perf_counter() - start,
            text=text,
            reference_text=reference_text,
            reference_latency_s=reference_latency_s,
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Mirror:
    """One request chosen for the shadow (`server.serving.outcomes.Mirror`)."""

    def __init__(
        self,
        shadow: ShadowTraffic,
        kind: Kind,
        req: OpenAIRequest,
        tenant: Tenant,
        target: Target,
        candidate: AdapterVersion,
    ) -> None:
        self.shadow, self.kind, self.req, self.tenant = shadow, kind, req, tenant
        self.target, self.candidate = target, candidate

    def send(self, reference_text: str, reference_latency_s: float) -> None:
        self.shadow._start(self, reference_text, reference_latency_s)

    def body(self) -> dict[str, object]:
        """The engine body for the candidate: the client's request, the caps the primary
        had, the candidate's template, never streamed."""
        body = self.req.engine_body()
        apply_caps(self.kind, self.req, body, self.shadow.caps.for_tenant(self.tenant))
        candidate = self.candidate
        as_candidate = Target(self.target.requested, candidate.engine_name, candidate, "shadow")
        body = apply_template(as_candidate, self.kind, body)
        body["model"] = self.candidate.engine_name
        body["stream"] = False
        body.pop("stream_options", None)
        return body
