"""An ASGI app served by uvicorn in a background thread on a loopback port (port 0: a free one).

Used by tests and benchmarks for the simulated engine and the gateway alike. The socket is
bound before the thread starts, so `url` is known without races; entering returns once uvicorn
has started (and the lifespan ran); `close()` stops it and joins the thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import uvicorn

START_TIMEOUT_S = 10.0
_POLL_S = 0.005


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (for servers in other processes, which bind it themselves)."""
    with bind_socket(host, 0) as sock:
        port: int = sock.getsockname()[1]
        return port


class ThreadedServer:
    """`with ThreadedServer(app) as s: httpx.get(s.url + "/health")`."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: Literal["on", "off"] = "off",
        graceful_shutdown_s: float = 1.0,
        name: str = "server",
        before_stop: Callable[[], None] | None = None,
        http: Any = "auto",
    ) -> None:
        self.app = app
        self.host, self.port, self.name = host, port, name
        self._config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            lifespan=lifespan,
            http=http,
            # Annotated int, but uvicorn hands it to asyncio.wait_for, which takes seconds.
            timeout_graceful_shutdown=graceful_shutdown_s,  # type: ignore[arg-type]
        )
        self._before_stop = before_stop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self._sock = bind_socket(self.host, self.port)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"{self.name}-{port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(_POLL_S)

    def close(self) -> None:
        """Stop serving and join the thread; idempotent. Raises if the thread does not stop."""
        if self._server is not None:
            if self._before_stop is not None:
                self._before_stop()
            self._server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=START_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._sock = None
        if thread is not None and thread.is_alive():
            raise RuntimeError(f"{self.name} thread {thread.name} did not stop")
