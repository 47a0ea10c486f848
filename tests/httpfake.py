"""A real HTTP/1.1 server on loopback whose answers come from a plain function.

For testing HTTP clients without mocks: `handler(request)` returns a `Reply` (status, body,
or chunks sent one by one with delays; `hang` never answers; `cut` closes the connection
after the chunks without finishing the body). Only what the engine client needs: one request
per connection, `Content-Length` bodies in, chunked bodies out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (delay s, bytes)
    hang: bool = False
    cut: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(data).encode())


Handler = Callable[[Request], Reply]


async def _serve_one(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        reply = handler(Request(method, path, body))
        if reply.hang:
            await asyncio.sleep(3600)
        status = (
            f"HTTP/1.1 {reply.status} X\r\ncontent-type: {reply.content_type}\r\n"
            "connection: close\r\n"  # one request per connection
        )
        if not reply.chunks:
            writer.write(f"{status}content-length: {len(reply.body)}\r\n\r\n".encode())
            writer.write(reply.body)
        else:
            writer.write(f"{status}transfer-encoding: chunked\r\n\r\n".encode())
            for delay, chunk in reply.chunks:
                await asyncio.sleep(delay)
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            if not reply.cut:
                writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` on a free loopback port; yields the base URL."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(handler, reader, writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)
