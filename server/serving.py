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

from server.engines import EngineClient
from server.errors import LoragateError, UpstreamError
from server.metrics import Metrics
from server.protocol import ENGINE_PATHS, Kind, OpenAIRequest
from server.registry import Registry
from server.routing import Router, Target
from server.streaming import DONE, SSERewriter, error_event

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
    ) -> None:
        self.router = router
        self.registry = registry
        self.engines = engines
        self.metrics = metrics
        self.up: set[str] = set(engines)

    def _prepare(self, kind: Kind, req: OpenAIRequest) -> tuple[Target, str, dict[str, Any]]:
        target = self.router.resolve(req.model, req.user)
        body = apply_template(target, kind, req.engine_body())
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
        self.metrics.requests.labels(target.adapter_label, version, tenant, str(code)).inc()
        self.metrics.request_duration_seconds.labels(target.adapter_label).observe(
            time.perf_counter() - timing.start
        )
        self.metrics.gateway_overhead_seconds.observe(timing.overhead())

    def _count_tokens(self, target: Target, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and n >= 0:
                self.metrics.tokens.labels(target.adapter_label, kind).inc(n)

    async def generate(self, kind: Kind, req: OpenAIRequest, tenant: str = "default") -> Answer:
        """A non-streaming completion or chat completion."""
        timing = _Timing()
        target, engine, body = self._prepare(kind, req)
        code = 500
        try:
            async with self._lease(engine, target, timing):
                with timing.waiting():
                    result = await self.engines[engine].generate(ENGINE_PATHS[kind], body)
            code = 200
        except LoragateError as exc:
            code = exc.status
            raise
        finally:
            self._record(target, code, timing, tenant)
        result["model"] = req.model
        self._count_tokens(target, result.get("usage"))
        return Answer(result, self._headers(target, engine, timing))

    async def stream(self, kind: Kind, req: OpenAIRequest, tenant: str = "default") -> StreamAnswer:
        """Open a streaming call. Errors before the first engine byte raise (a real HTTP status);
        later ones become an SSE error event. Closing the answer releases everything."""
        timing = _Timing()
        target, engine, body = self._prepare(kind, req)
        # Ask for usage (token metrics); the extra usage-only chunk is dropped again unless
        # the client asked for it too.
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self._lease(engine, target, timing))
            upstream = await stack.enter_async_context(
                contextlib.aclosing(self.engines[engine].stream(ENGINE_PATHS[kind], body))
            )
            with timing.waiting():
                first = await anext(upstream, b"")
        except LoragateError as exc:
            await stack.aclose()
            self._record(target, exc.status, timing, tenant)
            raise
        self.metrics.time_to_first_token_seconds.labels(target.adapter_label).observe(
            time.perf_counter() - timing.start
        )
        headers = self._headers(target, engine, timing)
        rewriter = SSERewriter(req.model, drop_usage_chunk=not client_wants_usage)
        chunks = self._relay(target, rewriter, first, upstream, timing, tenant)
        return StreamAnswer(headers, chunks, stack)

    async def _relay(
        self, target: Target, rewriter: SSERewriter, first: bytes,
        upstream: AsyncIterator[bytes], timing: _Timing, tenant: str,
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
            self._count_tokens(target, rewriter.usage)
            self._record(target, code, timing, tenant)
