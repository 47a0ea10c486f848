"""The uvicorn configuration the gateway runs with (the CLI and the test servers share it)."""

from __future__ import annotations

from server.api.server import HeaderTimeoutProtocol, server_config
from server.settings import Settings


def test_the_gateway_runs_on_uvloop_and_httptools_with_its_timeouts() -> None:
    settings = Settings(header_timeout_s=3, drain_grace_s=7)
    config = server_config(object(), settings)
    config.load()
    factory = config.get_loop_factory()
    assert factory is not None and factory.__module__ == "uvloop"
    protocol = config.http_protocol_class
    assert issubclass(protocol, HeaderTimeoutProtocol) and protocol.header_timeout_s == 3
    assert "HttpToolsProtocol" in [k.__name__ for k in protocol.__mro__]
    assert config.timeout_graceful_shutdown == 7
