"""The gateway served in a thread on a free loopback port, for tests and benchmarks (streaming
needs a real server: httpx's ASGITransport buffers whole bodies)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.threaded import ThreadedServer
from server.api.server import header_timeout_protocol
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings


class GatewayServer(ThreadedServer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(
            create_app(settings),
            lifespan="on",
            name="gateway",
            http=header_timeout_protocol(settings.header_timeout_s),
        )

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def __enter__(self) -> GatewayServer:
        self.start()
        return self

    @property
    def metrics_url(self) -> str:
        """The metrics listener's `/metrics` (settings.metrics_port; tests use port 0)."""
        url: str = self.app.state.metrics_url
        return f"{url}/metrics"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the gateway's metrics (0.0 if absent)."""
        for family in text_string_to_metric_families(httpx.get(self.metrics_url).text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0
