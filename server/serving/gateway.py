"""Serving one OpenAI request: resolve the model, hold the adapter resident, forward, relay.

`Gateway` is the service the API routes call; it knows nothing of FastAPI. It returns an
`Answer` (JSON) or a `StreamAnswer` (SSE chunks + a close callback that releases the lease).
Engine choice and the lease belong to `server.engines.placement`. Each finished request is
reported to the outcome sink (canary analysis) and, when chosen, mirrored to its adapter's
shadow candidate (`server.serving.outcomes`, `server.serving.shadow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from server import logs
from server.engines.admission import Admission
from server.engines.client import EngineClient
from server.engines.placement import Placement
from server.errors import AdapterGone, EngineUnreachable, LoragateError, UpstreamError
from server.metrics import Metrics
from server.protocol.openai import ENGINE_PATHS, Kind, OpenAIRequest
from server.serving.limits import Limiter
from server.serving.outcomes import NoOutcomes, OutcomeSink, Watch, answer_text
from server.serving.prepare import Caps, Cost, apply_caps, apply_template
from server.serving.routing import Router, Target
from server.serving.shadow import ShadowTraffic
from server.serving.sse import DONE, SSERewriter, error_event
from server.serving.swap_cost import SwapCost
from server.serving.tenants import OPEN_TENANT, Tenant
from server.timing import RequestTiming
from server.timing import for_request as request_timing

log = logging.getLogger(__name__)


@dataclass
class Answer:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StreamAnswer:
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    close: contextlib.AsyncExitStack = field(repr=False)


class Gateway:
    """Resolve → pick engine → lease → forward → relay, with metrics on every path."""

    def __init__(
        self,
        router: Router,
        placement: Placement,
        admission: Admission,
        engines: dict[str, EngineClient],
        metrics: Metrics,
        caps: Caps,
        limiter: Limiter | None = None,
        *,
        hide_foreign: bool = True,
        outcomes: OutcomeSink | None = None,
        shadow: ShadowTraffic | None = None,
    ) -> None:
        self.router = router
        self.placement = placement
        self.admission = admission
        self.engines = engines
        self.metrics = metrics
        self.caps = caps
        self.limiter = limiter or Limiter()
        self.hide_foreign = hide_foreign
        # Safe rollout: outcomes for canary analysis, mirrors for shadows, first-request cost.
        self.outcomes: OutcomeSink = outcomes or NoOutcomes()
        self.shadow = shadow
        self.swap_cost = SwapCost(placement.registry, metrics)

    def _prepare(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant, task: str | None
    ) -> tuple[Target, dict[str, Any], Cost]:
        target = self.router.resolve_for(tenant, req.model, task, req.user, self.hide_foreign)
        body = req.engine_body()
        cost = apply_caps(kind, req, body, self.caps.for_tenant(tenant))
        body = apply_template(target, kind, body)
        body["model"] = target.engine_model
        return target, body, cost

    @contextlib.asynccontextmanager
    async def _lease(self, target: Target, timing: RequestTiming) -> AsyncIterator[str]:
        """The engine serving `target`, held for the body: the adapter resident, then one of
        the engine's admission slots. Waiting for either counts as time outside the gateway."""
        async with contextlib.AsyncExitStack() as stack:
            with timing.waiting():
                lease = self.placement.lease(target.engine_model, target.version)
                engine = await stack.enter_async_context(lease)
                await stack.enter_async_context(self.admission.admit(engine))
            yield engine

    def _headers(self, target: Target, engine: str) -> dict[str, str]:
        return {
            "X-Adapter-Version": target.engine_model,
            "X-Engine": engine,
        }

    def _record(self, target: Target, code: int, timing: RequestTiming, tenant: str) -> None:
        version = target.version_label
        log.info(
            "request",
            extra={
                "request_id": logs.request_id.get(),
                "tenant": tenant,
                "adapter": target.adapter_label,
                "version": version,
                "status": code,
                "ms": round((time.perf_counter() - timing.start) * 1000, 1),
            },
        )
        self.metrics.requests.labels(target.adapter_label, version, tenant, str(code)).inc()
        self.metrics.request_duration_seconds.labels(target.adapter_label, version).observe(
            time.perf_counter() - timing.start
        )

    def _watch(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant, target: Target
    ) -> Watch | None:
        """What the outcome sink and the shadow want of this request (None: the base)."""
        if target.version is None:
            return None
        mirror = self.shadow.plan(kind, req, tenant, target) if self.shadow else None
        wants_text = mirror is not None or self.outcomes.wants_text(target.version)
        return Watch(target.version, wants_text, mirror)

    def _report(
        self,
        watch: Watch | None,
        code: int,
        timing: RequestTiming,
        ttft_s: float | None,
        text: str | None,
    ) -> None:
        """The request's outcome to the sink; a successful answer to its mirror, if any."""
        if watch is None:
            return
        total_s = timing.elapsed()
        failed = code >= 500
        self.outcomes.record(
            watch.version, failed=failed, ttft_s=ttft_s, total_s=total_s, text=text
        )
        if watch.mirror is not None and code == 200 and text is not None:
            watch.mirror.send(text, total_s)

    def _settle(
        self, target: Target, tenant: Tenant, charged: int, usage: dict[str, Any] | None
    ) -> None:
        """Count the engine's usage and correct the tenant's up-front token charge by it
        (no usage, e.g. a failed request: the whole charge is refunded)."""
        used = 0
        for kind in ("prompt", "completion"):
            n = (usage or {}).get(f"{kind}_tokens")
            if isinstance(n, int) and n >= 0:
                self.metrics.tokens.labels(target.adapter_label, kind).inc(n)
                used += n
        self.limiter.settle(tenant, used - charged)

    async def generate(
        self,
        kind: Kind,
        req: OpenAIRequest,
        tenant: Tenant = OPEN_TENANT,
        task: str | None = None,
    ) -> Answer:
        """A non-streaming completion or chat completion."""
        timing = request_timing()
        target, body, cost = self._prepare(kind, req, tenant, task)
        watch = self._watch(kind, req, tenant, target)
        code, charged, usage, text = 500, 0, None, None
        try:
            with self.limiter.admit(tenant, cost.total):
                charged = cost.total
                engine, result = await self._generate_once_more_if_gone(kind, target, body, timing)
            code, usage = 200, result.get("usage")
            text = answer_text(result) if watch is not None and watch.wants_text else None
        except LoragateError as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            watch = None  # the client left: no outcome of the version's
            raise
        finally:
            self._settle(target, tenant, charged, usage)
            self._record(target, code, timing, tenant.name)
            self._report(watch, code, timing, None, text)
        result["model"] = target.requested
        return Answer(result, self._headers(target, engine))

    async def _generate_once_more_if_gone(
        self, kind: Kind, target: Target, body: dict[str, Any], timing: RequestTiming
    ) -> tuple[str, dict[str, Any]]:
        """Lease and call; if the engine answers 404 because another gateway unloaded the
        version meanwhile (`AdapterGone`), reload it and try once more; if it refused the
        connection (`EngineUnreachable`: it died since its last view), try another engine."""
        for retry in (True, False):
            resident = self.swap_cost.resident_on(target.version)
            async with self._lease(target, timing) as engine:
                try:
                    with timing.waiting():
                        t0 = time.perf_counter()
                        result = await self.engines[engine].generate(ENGINE_PATHS[kind], body)
                    seconds = time.perf_counter() - t0
                    self.swap_cost.observe(engine, target.version, resident, seconds, False)
                    return engine, result
                except (AdapterGone, EngineUnreachable) as exc:
                    if not retry or (target.version is None and isinstance(exc, AdapterGone)):
                        raise
                    failure = exc
            self._failed_before_sending(engine, target, failure)
        raise AssertionError("unreachable")

    def _failed_before_sending(self, engine: str, target: Target, exc: LoragateError) -> None:
        if isinstance(exc, EngineUnreachable):
            self.placement.unreachable(engine)
        else:
            self.placement.lost(engine, target.engine_model)

    async def _open_once_more_if_gone(
        self, kind: Kind, target: Target, body: dict[str, Any], timing: RequestTiming
    ) -> tuple[contextlib.AsyncExitStack, str, AsyncIterator[bytes], bytes]:
        """Lease, open the stream and read its first chunk (the lease and the stream are
        held by the returned stack). `AdapterGone` or `EngineUnreachable` before any byte:
        reload, or pick another engine, and try once more."""
        for retry in (True, False):
            stack = contextlib.AsyncExitStack()
            try:
                resident = self.swap_cost.resident_on(target.version)
                engine = await stack.enter_async_context(self._lease(target, timing))
                upstream = await stack.enter_async_context(
                    contextlib.aclosing(self.engines[engine].stream(ENGINE_PATHS[kind], body))
                )
                with timing.waiting():
                    t0 = time.perf_counter()
                    first = await anext(upstream, b"")
                seconds = time.perf_counter() - t0
                self.swap_cost.observe(engine, target.version, resident, seconds, True)
                return stack, engine, upstream, first
            except (AdapterGone, EngineUnreachable) as exc:
                await stack.aclose()
                if not retry or (target.version is None and isinstance(exc, AdapterGone)):
                    raise
                self._failed_before_sending(engine, target, exc)
            except BaseException:
                await stack.aclose()
                raise
        raise AssertionError("unreachable")

    async def stream(
        self,
        kind: Kind,
        req: OpenAIRequest,
        tenant: Tenant = OPEN_TENANT,
        task: str | None = None,
    ) -> StreamAnswer:
        """Open a streaming call. Errors before the first engine byte raise (a real HTTP status);
        later ones become an SSE error event. Closing the answer releases everything."""
        timing = request_timing()
        target, body, cost = self._prepare(kind, req, tenant, task)
        watch = self._watch(kind, req, tenant, target)
        # Ask for usage (token metrics); the extra usage-only chunk is dropped again unless
        # the client asked for it too.
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        stack = contextlib.AsyncExitStack()
        charged = 0
        try:
            stack.enter_context(self.limiter.admit(tenant, cost.total))
            charged = cost.total
            held, engine, upstream, first = await self._open_once_more_if_gone(
                kind, target, body, timing
            )
            stack.push_async_exit(held)
        except LoragateError as exc:
            await stack.aclose()
            self._settle(target, tenant, charged, None)
            self._record(target, exc.status, timing, tenant.name)
            self._report(watch, exc.status, timing, None, None)
            raise
        ttft_s = time.perf_counter() - timing.start
        self.metrics.time_to_first_token_seconds.labels(target.adapter_label).observe(ttft_s)
        headers = self._headers(target, engine)
        keep_text = watch is not None and watch.wants_text
        rewriter = SSERewriter(target.requested, not client_wants_usage, keep_text)

        def report(code: int, complete: bool) -> None:
            if code == 200 and not complete:
                return  # the client left mid-stream: no outcome of the version's
            code = 502 if rewriter.error else code  # the engine's error event, relayed
            texts = rewriter.text if code == 200 else None
            self._report(watch, code, timing, ttft_s, None if texts is None else "".join(texts))

        chunks = self._relay(target, rewriter, first, upstream, timing, tenant, charged, report)
        return StreamAnswer(headers, chunks, stack)

    async def _relay(
        self,
        target: Target,
        rewriter: SSERewriter,
        first: bytes,
        upstream: AsyncIterator[bytes],
        timing: RequestTiming,
        tenant: Tenant,
        charged: int,
        report: Callable[[int, bool], None],
    ) -> AsyncIterator[bytes]:
        code, saw_done = 200, False
        try:
            chunk: bytes | None = first
            while chunk is not None:
                # The events of one engine read go out in one write (one syscall, not one
                # per event); the client's SSE parser sees the same events.
                if events := rewriter.feed(chunk):
                    saw_done = saw_done or any(e.startswith(DONE) for e in events)
                    yield b"".join(events)
                with timing.waiting():
                    chunk = await anext(upstream, None)
            if events := rewriter.flush():
                saw_done = saw_done or any(e.startswith(DONE) for e in events)
                yield b"".join(events)
            if not saw_done:
                raise UpstreamError("the engine ended the stream without [DONE]")
        except LoragateError as exc:
            code = exc.status
            log.warning("stream failed", extra={"error": exc.message})
            yield error_event(exc)
            yield DONE
        finally:
            self._settle(target, tenant, charged, rewriter.usage)
            self._record(target, code, timing, tenant.name)
            report(code, saw_done)
