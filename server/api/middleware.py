"""Pure ASGI middleware (no `BaseHTTPMiddleware`: no task group, no body copies per request).

`RequestContext` is the outermost layer: a request id for logs and the response, and a
catch-all that answers a clean 500 instead of letting the server drop the connection.
`BodyLimit` counts the bytes of the request body as they arrive, however they are sent
(`Content-Length` or chunked), and answers 413 once they pass the limit.

A route that accepts bigger bodies (an adapter upload) raises its own limit with
`allow_body(scope, n)` before it reads; the middleware knows no routes.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import logs
from server.api.errors import json_error
from server.errors import LoragateError, PayloadTooLarge

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BUDGET_KEY = "loragate.body_budget"


class RequestContext:
    """Request id (`X-Request-Id` in, or a new one) in the log context and on the response;
    any exception that escapes the app becomes a 500 in OpenAI's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = logs.request_id.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not started:
                error = LoragateError("internal error; see the gateway log")
                await json_error(error)(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


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
    exceeded: bool = False


def allow_body(scope: Scope, limit: int) -> None:
    """Let this request's body be up to `limit` bytes (a route that streams its body)."""
    budget = scope.get(_BUDGET_KEY)
    if isinstance(budget, _Budget):
        budget.limit = limit


class BodyLimit:
    """413 once a request body passes `limit_bytes` (or the route's own limit)."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = scope[_BUDGET_KEY] = _Budget(self.limit_bytes)
        declared = _content_length(scope)
        started = False

        def too_large() -> PayloadTooLarge:
            budget.exceeded = True
            return PayloadTooLarge(f"request body over {budget.limit} bytes")

        async def counting_receive() -> Message:
            if declared is not None and declared > budget.limit:
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                budget.received += len(message.get("body", b""))
                if budget.received > budget.limit:
                    raise too_large()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if budget.exceeded:
                return  # whatever the app answers after the limit, the client gets the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not budget.exceeded:
                raise
        if budget.exceeded and not started:
            await json_error(PayloadTooLarge(f"request body over {budget.limit} bytes"))(
                scope, receive, send
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # Not a number: uvicorn refuses most; anything left is treated as too large.
            return int(value) if value.isdigit() else 1 << 62
    return None
