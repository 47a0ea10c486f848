"""Pure ASGI middleware (no `BaseHTTPMiddleware`: no task group, no body copies per request).

`RequestContext` is the outermost layer: a request id for logs and the response, and a
catch-all that answers a clean 500 instead of letting the server drop the connection.
`BodyLimit` counts the bytes of the request body as they arrive, however they are sent
(`Content-Length` or chunked), and answers 413 once they pass the limit.

A route that accepts bigger bodies (an adapter upload) raises its own limit with
`allow_body(scope, n)` before it reads; the middleware knows no routes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import logs
from server.api.errors import json_error
from server.errors import LoragateError, PayloadTooLarge, RequestTimeout
from server.timing import RequestTiming
from server.timing import current as current_timing

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BUDGET_KEY = "loragate.body_budget"


class RequestContext:
    """Request id (`X-Request-Id` in, or a new one) in the log context and on the response;
    the request's timing (`server.timing`): for a request that went to an engine,
    `X-Gateway-Overhead-Ms` on the response and `on_proxied(overhead_s)` after its last
    byte; any exception that escapes the app becomes a 500 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, on_proxied: Callable[[float], None] | None = None) -> None:
        self.app = app
        self.on_proxied = on_proxied

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        timing = RequestTiming()
        tokens = logs.request_id.set(rid), current_timing.set(timing)
        started = False

        async def send_with_context(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                if timing.outside:
                    overhead = f"{timing.overhead() * 1000:.3f}".encode()
                    headers.append((b"x-gateway-overhead-ms", overhead))
                message["headers"] = headers
            await send(message)
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and timing.outside and self.on_proxied is not None:
                self.on_proxied(timing.overhead())

        try:
            await self.app(scope, receive, send_with_context)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not started:
                error = LoragateError("internal error; see the gateway log")
                await json_error(error)(scope, receive, send_with_context)
        finally:
            logs.request_id.reset(tokens[0])
            current_timing.reset(tokens[1])


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming: str = value.decode("latin-1")
            if _REQUEST_ID_RE.fullmatch(incoming):
                return incoming
            break
    return uuid.uuid4().hex


@dataclass
class _Budget:
    limit: int
    received: int = 0
    complete: bool = False  # the last body chunk arrived
    error: LoragateError | None = None  # why the body was refused


def allow_body(scope: Scope, limit: int) -> None:
    """Let this request's body be up to `limit` bytes (a route that streams its body)."""
    budget = scope.get(_BUDGET_KEY)
    if isinstance(budget, _Budget):
        budget.limit = limit


class BodyLimit:
    """413 once a request body passes `limit_bytes` (or the route's own limit); 408 when the
    client pauses more than `pause_s` in the middle of sending it."""

    def __init__(self, app: ASGIApp, limit_bytes: int, pause_s: float = 30.0) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.pause_s = pause_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = scope[_BUDGET_KEY] = _Budget(self.limit_bytes)
        declared = _content_length(scope)
        started = False

        def refuse(error: LoragateError) -> LoragateError:
            budget.error = error
            return error

        async def counting_receive() -> Message:
            if declared is not None and declared > budget.limit:
                raise refuse(PayloadTooLarge(f"request body over {budget.limit} bytes"))
            if budget.complete:  # after the body, receive() waits for a disconnect: no timeout
                return await receive()
            try:
                async with asyncio.timeout(self.pause_s):
                    message = await receive()
            except TimeoutError:
                pause = RequestTimeout(f"the request body paused over {self.pause_s:g} s")
                raise refuse(pause) from None
            if message["type"] == "http.request":
                budget.complete = not message.get("more_body", False)
                budget.received += len(message.get("body", b""))
                if budget.received > budget.limit:
                    raise refuse(PayloadTooLarge(f"request body over {budget.limit} bytes"))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if budget.error is not None:
                return  # whatever the app answers after the refusal, the client gets ours
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if budget.error is None:
                raise
        if budget.error is not None and not started:
            await json_error(budget.error)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # Not a number: uvicorn refuses most; anything left is treated as too large.
            return int(value) if value.isdigit() else 1 << 62
    return None
