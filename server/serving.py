"""Serving one OpenAI request: resolve the model, hold the adapter resident, forward, relay.

`Gateway` is the service the API routes call; it knows nothing of FastAPI. It returns an
`Answer` (JSON) or a `StreamAnswer` (SSE chunks + a close callback that releases the lease).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from server import logs
from server.engines import EngineClient
from server.errors import InvalidRequest, LoragateError, UpstreamError
from server.limits import Limiter
from server.metrics import Metrics
from server.protocol import ENGINE_PATHS, Kind, OpenAIRequest
from server.registry import Registry
from server.routing import Router, Target
from server.streaming import DONE, SSERewriter, error_event
from server.tenants import OPEN_TENANT, Tenant

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


@dataclass
class _Timing:
    """Where a request's time went, for the overhead metric (perf_counter seconds)."""

    start: float = field(default_factory=time.perf_counter)
    outside: float = 0.0  # waiting on engines: adapter load waits + generation

    @contextlib.contextmanager
    def waiting(self) -> Any:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.outside += time.perf_counter() - t0

    def overhead(self) -> float:
        return max(0.0, time.perf_counter() - self.start - self.outside)


def prompt_chars(kind: Kind, body: dict[str, Any]) -> int:
    """Characters of text the client sent (token-id prompts count one per id)."""
    if kind == "completions":
        prompt = body["prompt"]
        items = prompt if isinstance(prompt, list) else [prompt]
        return sum(len(p) if isinstance(p, str) else 1 for p in items)
    total = 0
    for message in body["messages"]:
        content = message.get("content")
        total += len(content) if isinstance(content, str) else len(str(content or ""))
    return total


def apply_limits(kind: Kind, body: dict[str, Any], tenant: Tenant, max_prompt_chars: int) -> None:
    """The tenant's max_tokens cap (filled in when absent) and prompt length; raises
    `InvalidRequest` (400) naming the parameter."""
    cap = tenant.max_tokens
    if cap is not None:
        asked = body.get("max_tokens")
        if asked is None:
            body["max_tokens"] = cap
        elif asked > cap:
            raise InvalidRequest(f"max_tokens {asked} is over this key's limit of {cap}",
                                 param="max_tokens")  # fmt: skip
    limit = min(max_prompt_chars, tenant.max_prompt_chars or max_prompt_chars)
    if (n := prompt_chars(kind, body)) > limit:
        param = "prompt" if kind == "completions" else "messages"
        raise InvalidRequest(f"the prompt is {n} characters, over the limit of {limit}",
                             param=param)  # fmt: skip


def apply_template(target: Target, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    """The version's prompt template: `{input}` around completion prompts and the last user
    message of a chat; its system prompt first when the chat has none."""
    if target.version is None:
        return body
    template = target.version.manifest.prompt_template
    if kind == "completions":
        prompt = body["prompt"]
        if isinstance(prompt, str):
            body["prompt"] = template.render(prompt)
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            body["prompt"] = [template.render(p) for p in prompt]
        return body
    messages = body["messages"]
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = template.render(message["content"])
            break
    if template.system and not any(m.get("role") == "system" for m in messages):
        body["messages"] = [{"role": "system", "content": template.system}, *messages]
    return body


class Gateway:
    """Resolve → pick engine → lease → forward → relay, with metrics on every path."""

    def __init__(
        self,
        router: Router,
        registry: Registry,
        engines: dict[str, EngineClient],
        metrics: Metrics,
        limiter: Limiter | None = None,
        *,
        hide_foreign: bool = True,
        max_prompt_chars: int = 100_000,
    ) -> None:
        self.router = router
        self.registry = registry
        self.engines = engines
        self.metrics = metrics
        self.limiter = limiter or Limiter()
        self.hide_foreign = hide_foreign
        self.max_prompt_chars = max_prompt_chars
        self.up: set[str] = set(engines)

    def _prepare(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant, task: str | None
    ) -> tuple[Target, str, dict[str, Any]]:
        target = self.router.resolve_for(tenant, req.model, task, req.user, self.hide_foreign)
        body = req.engine_body()
        apply_limits(kind, body, tenant, self.max_prompt_chars)
        body = apply_template(target, kind, body)
        body["model"] = target.engine_model
        engine = self.registry.pick_engine(
            target.engine_model if target.version else None, sorted(self.up)
        )
        return target, engine, body

    @contextlib.asynccontextmanager
    async def _lease(self, engine: str, target: Target, timing: _Timing) -> AsyncIterator[None]:
        if target.version is None:
            self.metrics.inflight_requests.labels(engine).inc()
            try:
                yield
            finally:
                self.metrics.inflight_requests.labels(engine).dec()
            return
        with timing.waiting():
            await self.registry.acquire(engine, target.version)
        try:
            yield
        finally:
            self.registry.release(engine, target.engine_model)

    def _headers(self, target: Target, engine: str, timing: _Timing) -> dict[str, str]:
        return {
            "X-Adapter-Version": target.engine_model,
            "X-Engine": engine,
            "X-Gateway-Overhead-Ms": f"{timing.overhead() * 1000:.3f}",
        }

    def _record(self, target: Target, code: int, timing: _Timing, tenant: str) -> None:
        version = target.version.version if target.version else ""
        log.info("request", extra={
            "request_id": logs.request_id.get(), "tenant": tenant, "adapter": target.adapter_label,
            "version": version, "status": code,
            "ms": round((time.perf_counter() - timing.start) * 1000, 1),
        })  # fmt: skip
        self.metrics.requests.labels(target.adapter_label, version, tenant, str(code)).inc()
        self.metrics.request_duration_seconds.labels(target.adapter_label, version).observe(
            time.perf_counter() - timing.start
        )
        self.metrics.gateway_overhead_seconds.observe(timing.overhead())

    def _count_tokens(self, target: Target, tenant: Tenant, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and n >= 0:
                self.metrics.tokens.labels(target.adapter_label, kind).inc(n)
                self.limiter.charge_tokens(tenant, n)

    async def generate(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant = OPEN_TENANT,
        task: str | None = None,
    ) -> Answer:  # fmt: skip
        """A non-streaming completion or chat completion."""
        timing = _Timing()
        target, engine, body = self._prepare(kind, req, tenant, task)
        code = 500
        try:
            with self.limiter.admit(tenant):
                async with self._lease(engine, target, timing):
                    with timing.waiting():
                        result = await self.engines[engine].generate(ENGINE_PATHS[kind], body)
            code = 200
        except LoragateError as exc:
            code = exc.status
            raise
        finally:
            self._record(target, code, timing, tenant.name)
        result["model"] = target.requested
        self._count_tokens(target, tenant, result.get("usage"))
        return Answer(result, self._headers(target, engine, timing))

    async def stream(
        self, kind: Kind, req: OpenAIRequest, tenant: Tenant = OPEN_TENANT,
        task: str | None = None,
    ) -> StreamAnswer:  # fmt: skip
        """Open a streaming call. Errors before the first engine byte raise (a real HTTP status);
        later ones become an SSE error event. Closing the answer releases everything."""
        timing = _Timing()
        target, engine, body = self._prepare(kind, req, tenant, task)
        # Ask for usage (token metrics); the extra usage-only chunk is dropped again unless
        # the client asked for it too.
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        stack = contextlib.AsyncExitStack()
        try:
            stack.enter_context(self.limiter.admit(tenant))
            await stack.enter_async_context(self._lease(engine, target, timing))
            upstream = await stack.enter_async_context(
                contextlib.aclosing(self.engines[engine].stream(ENGINE_PATHS[kind], body))
            )
            with timing.waiting():
                first = await anext(upstream, b"")
        except LoragateError as exc:
            await stack.aclose()
            self._record(target, exc.status, timing, tenant.name)
            raise
        self.metrics.time_to_first_token_seconds.labels(target.adapter_label).observe(
            time.perf_counter() - timing.start
        )
        headers = self._headers(target, engine, timing)
        rewriter = SSERewriter(target.requested, drop_usage_chunk=not client_wants_usage)
        chunks = self._relay(target, rewriter, first, upstream, timing, tenant)
        return StreamAnswer(headers, chunks, stack)

    async def _relay(
        self, target: Target, rewriter: SSERewriter, first: bytes,
        upstream: AsyncIterator[bytes], timing: _Timing, tenant: Tenant,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        code, saw_done = 200, False
        try:
            for event in rewriter.feed(first):
                saw_done = saw_done or event.startswith(DONE)
                yield event
            while True:
                with timing.waiting():
                    chunk = await anext(upstream, None)
                if chunk is None:
                    break
                for event in rewriter.feed(chunk):
                    saw_done = saw_done or event.startswith(DONE)
                    yield event
            for event in rewriter.flush():
                saw_done = saw_done or event.startswith(DONE)
                yield event
            if not saw_done:
                raise UpstreamError("the engine ended the stream without [DONE]")
        except LoragateError as exc:
            code = exc.status
            log.warning("stream failed", extra={"error": exc.message})
            yield error_event(exc)
            yield DONE
        finally:
            self._count_tokens(target, tenant, rewriter.usage)
            self._record(target, code, timing, tenant.name)
