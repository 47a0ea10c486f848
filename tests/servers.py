"""The gateway served by uvicorn in a thread on a free loopback port (streaming needs a real
server: httpx's ASGITransport buffers whole bodies)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from loadtest.sim.server import bind_socket
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings
from tests.factory import TINY_CONFIG


def tiny_settings(store: Path, engine_urls: list[str], tmp: Path, **overrides: Any) -> Settings:
    import json

    base_config = tmp / "tiny-base-config.json"
    base_config.write_text(json.dumps(TINY_CONFIG))
    data: dict[str, Any] = {
        "store": store, "base_model": "tiny-base", "base_config": base_config,
        "engines": [{"url": u, "max_cpu_loras": 2} for u in engine_urls],
        "load_wait_timeout_s": 2.0, "reconcile_interval_s": 60.0, "log_json": False,
        **overrides,
    }  # fmt: skip
    return Settings(**data)


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def __enter__(self) -> GatewayServer:
        sock = bind_socket("127.0.0.1", 0)
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_config=None, log_level="warning",
                                access_log=False, ws="none", lifespan="on",
                                timeout_graceful_shutdown=1)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True)  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0
