"""Responses the routes build beyond plain JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ReleasingStreamingResponse(StreamingResponse):
    """A `StreamingResponse` that always runs `on_close` — after the last byte, after a client
    disconnect, and even if the body was never iterated — so the adapter lease and the
    upstream request are released exactly once."""

    def __init__(self, *args: Any, on_close: Callable[[], Awaitable[None]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()
