"""Prometheus metrics on their own listener, away from the public API port.

The metrics name every adapter, version and tenant: on the API port they would tell any
caller what other tenants use. This listener answers `GET /metrics` (and `/healthz`) and
nothing else, one request per connection; bind it where only Prometheus can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_S = 5.0


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _answer(
    registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        method, path, *_ = head[: head.index(b"\r\n")].decode("latin-1").split(" ")
        if method == "GET" and path.partition("?")[0] == "/metrics":
            body = await asyncio.to_thread(generate_latest, registry)
            writer.write(_response("200 OK", body, CONTENT_TYPE_LATEST))
        elif method == "GET" and path == "/healthz":
            writer.write(_response("200 OK", b'{"status":"ok"}', "application/json"))
        else:
            writer.write(_response("404 Not Found", b"not found\n", "text/plain"))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass  # slow, truncated, oversized or malformed: just close
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> AsyncIterator[str]:
    """Serve `registry` on `host:port` (0: a free port) for the body; yields the base URL."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer(registry, reader, writer)

    server = await asyncio.start_server(on_connect, host, port, limit=MAX_HEAD_BYTES)
    bound = server.sockets[0].getsockname()
    url = f"http://{bound[0]}:{bound[1]}"
    log.info("metrics listener", extra={"url": f"{url}/metrics"})
    try:
        yield url
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)
