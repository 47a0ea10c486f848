"""Run a simulated engine on loopback, in a background thread, for tests and benchmarks.

    with SimEngineServer(SimConfig(max_loras=2)) as sim:
        httpx.get(f"{sim.url}/v1/models")

The listening socket is bound before the thread starts (port 0 picks a free port), so `url`
is known without races; entering returns once /health answers, exiting stops uvicorn and
joins the thread.
"""

from __future__ import annotations

from typing import Any

import httpx
import uvicorn

from loadtest.sim.app import create_app, get_engine_of
from loadtest.sim.config import SimConfig
from loadtest.sim.engine import SimEngine
from loadtest.threaded import ThreadedServer, bind_socket

__all__ = ["SimEngineServer", "bind_socket", "uvicorn_config"]


def uvicorn_config(app: Any, config: SimConfig, *, quiet: bool) -> uvicorn.Config:
    """uvicorn settings of the CLI (`quiet` leaves global logging alone)."""
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


class SimEngineServer(ThreadedServer):
    """One simulated engine served by uvicorn in a thread (see `loadtest.threaded`)."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        base = config or SimConfig()
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:  # model_copy does not validate; re-run the validators
            self.config = SimConfig.model_validate(self.config.model_dump())
        app = create_app(self.config)
        super().__init__(
            app,
            host=self.config.host,
            port=self.config.port,
            name="simengine",
            lifespan="on",
            graceful_shutdown_s=self.config.graceful_shutdown_s,
            # Open streams end now, not after the grace time.
            before_stop=lambda: get_engine_of(app).abort_threadsafe(),
        )

    @property
    def engine(self) -> SimEngine:
        """The engine (read its counters from the test thread; do not call its coroutines)."""
        return get_engine_of(self.app)

    def __enter__(self) -> SimEngineServer:
        self.start()
        try:
            with httpx.Client(base_url=self.url, timeout=1.0) as client:
                if client.get("/health").status_code != 200 and not self.config.faults.unhealthy:
                    raise RuntimeError("simulated engine is not healthy")
        except BaseException:
            self.close()
            raise
        return self
