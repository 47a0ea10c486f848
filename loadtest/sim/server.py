"""Run a simulated engine on loopback, in a background thread, for tests and benchmarks.

    with SimEngineServer(SimConfig(max_loras=2)) as sim:
        httpx.get(f"{sim.url}/v1/models")

The listening socket is bound before the thread starts (port 0 picks a free port), so `url`
is known without races; entering returns once /health answers, exiting stops uvicorn and
joins the thread.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from loadtest.sim.app import create_app, get_engine_of
from loadtest.sim.config import SimConfig
from loadtest.sim.engine import SimEngine

_START_TIMEOUT_S = 10.0
_POLL_S = 0.005


def uvicorn_config(app: Any, config: SimConfig, *, quiet: bool) -> uvicorn.Config:
    """Settings shared by the thread server and the CLI. `quiet` leaves global logging
    alone (uvicorn's default dictConfig would reconfigure the test process)."""
    return uvicorn.Config(
        app,
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        log_level="warning",
        access_log=False,
        ws="none",  # no websocket stack: nothing to import, nothing to warn about
        lifespan="on",
        # Annotated int, but uvicorn hands it to asyncio.wait_for, which takes seconds.
        timeout_graceful_shutdown=config.graceful_shutdown_s,  # type: ignore[arg-type]
    )


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


class SimEngineServer:
    """Context manager around one simulated engine served by uvicorn in a thread."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        base = config or SimConfig()
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:  # model_copy does not validate; re-run the validators
            self.config = SimConfig.model_validate(self.config.model_dump())
        self.app = create_app(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    @property
    def engine(self) -> SimEngine:
        """The engine (read its counters from the test thread; do not call its coroutines)."""
        return get_engine_of(self.app)

    def __enter__(self) -> SimEngineServer:
        self._sock = bind_socket(self.config.host, self.config.port)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._server = uvicorn.Server(uvicorn_config(self.app, self.config, quiet=True))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"simengine-{port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_until_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and join the thread; idempotent."""
        if self._server is not None:
            self.engine.abort_threadsafe()  # open streams end now, not after the grace time
            self._server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_START_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._sock = None
        if thread is not None and thread.is_alive():
            raise RuntimeError(f"simulated engine thread {thread.name} did not stop")

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        assert self._server is not None and self._thread is not None
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("simulated engine failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError("simulated engine did not start")
            time.sleep(_POLL_S)
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            if client.get("/health").status_code != 200 and not self.config.faults.unhealthy:
                raise RuntimeError("simulated engine is not healthy")
