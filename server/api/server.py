"""The HTTP server around the app: uvicorn, with a drain on SIGTERM and slow-client limits.

SIGTERM (or Ctrl-C) starts a drain instead of an immediate stop: the runtime is marked
draining (`/readyz` answers 503 so load balancers stop sending), requests are still served
for `drain_delay_s`, then uvicorn closes the listener and gives requests in flight
`drain_grace_s` to finish, and the process exits 0. A second signal stops at once.

A connection must deliver a request's headers within `header_timeout_s` (uvicorn itself only
times out idle keep-alive connections, so a client trickling headers could hold a connection
forever); body pauses are bounded by the `BodyLimit` middleware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.settings import Settings

log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers do not arrive in time."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request headers were too slow")
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeout", (HeaderTimeoutProtocol,), {"header_timeout_s": seconds})


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None], delay_s: float):
        super().__init__(config)
        self._on_drain = on_drain
        self._delay_s = delay_s
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after the shutdown and
        # the process would die of SIGTERM instead of exiting 0.
        if self._drain_started is None:
            self._drain_started = time.monotonic()
            self._on_drain()
        else:
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        started = self._drain_started
        if started is not None and time.monotonic() - started >= self._delay_s:
            self.should_exit = True
        return await super().on_tick(counter)


def server_config(app: object, settings: Settings, **overrides: object) -> uvicorn.Config:
    """uvicorn's configuration for the gateway (the CLI and the test servers share it)."""
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "http": header_timeout_protocol(settings.header_timeout_s),
        "timeout_graceful_shutdown": settings.drain_grace_s,
        **overrides,
    }
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
