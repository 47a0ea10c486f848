"""The pure ASGI middleware on a real server (uvicorn on loopback, raw sockets where the
client must misbehave): the catch-all 500 keeps the connection usable, body limits count
bytes however they are sent, a paused body is a 408, slow headers are cut off."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from loadtest.threaded import ThreadedServer
from server.api.middleware import BodyLimit, RequestContext, allow_body
from server.api.server import header_timeout_protocol
from server.timing import for_request


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/boom` raises; `/big` lets its body be 1 MB; `/proxied` waits 0.3 s "on an engine";
    anything else echoes the body size."""
    if scope["path"] == "/boom":
        raise RuntimeError("a bug nobody expected")
    if scope["path"] == "/proxied":
        with for_request().waiting():
            await asyncio.sleep(0.3)
    if scope["path"] == "/big":
        allow_body(scope, 1_000_000)
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


OVERHEADS: list[float] = []


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    OVERHEADS.clear()
    inner = BodyLimit(app, limit_bytes=1000, pause_s=0.3)
    wrapped = RequestContext(inner, on_proxied=OVERHEADS.append)
    with ThreadedServer(wrapped, http=header_timeout_protocol(0.5)) as running:
        yield running


def test_the_gateways_own_time_excludes_waiting_on_engines(server: ThreadedServer) -> None:
    start = time.monotonic()
    proxied = httpx.post(f"{server.url}/proxied", content=b"x")
    total = time.monotonic() - start
    # Whatever the machine's speed, the 300 ms spent "on the engine" is not the gateway's.
    assert float(proxied.headers["x-gateway-overhead-ms"]) / 1000 <= total - 0.29
    assert len(OVERHEADS) == 1 and 0 < OVERHEADS[0] <= total - 0.29  # after the last byte
    plain = httpx.post(f"{server.url}/echo", content=b"x")  # no engine: not a proxied request
    assert "x-gateway-overhead-ms" not in plain.headers and len(OVERHEADS) == 1


def test_an_unexpected_error_is_a_clean_500_and_the_connection_stays_usable(
    server: ThreadedServer,
) -> None:
    with httpx.Client(base_url=server.url) as client:
        boom = client.get("/boom", headers={"X-Request-Id": "req-1"})
        assert boom.status_code == 500 and boom.headers["x-request-id"] == "req-1"
        assert boom.json()["error"]["code"] == "internal_error"
        assert "nobody expected" not in boom.text  # no internals in the answer
        again = client.post("/echo", content=b"x" * 10)  # the same keep-alive connection
        assert again.json() == {"size": 10}


def chunks(total: int, size: int = 100) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


@pytest.mark.parametrize("path", ["/echo", "/big"])
def test_the_body_limit_counts_bytes_whatever_the_framing(
    server: ThreadedServer, path: str
) -> None:
    limit = 1000 if path == "/echo" else 1_000_000
    fits = httpx.post(f"{server.url}{path}", content=chunks(limit))  # chunked
    assert fits.json() == {"size": limit}
    for body in (b"x" * (limit + 1), chunks(limit + 100)):  # Content-Length, then chunked
        over = httpx.post(f"{server.url}{path}", content=body)
        assert over.status_code == 413 and over.json()["error"]["code"] == "payload_too_large"


def test_a_huge_chunked_body_is_refused_long_before_it_is_read(server: ThreadedServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent, answer = 0, b""
        chunk = b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000)
        sock.settimeout(0.05)
        while sent < 20_000_000 and b"\r\n\r\n" not in answer:
            try:
                sock.sendall(chunk)
                sent += 10_000
                answer += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        if b"\r\n\r\n" not in answer:
            sock.settimeout(5)
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and sent < 1_000_000


def test_a_body_that_pauses_too_long_is_a_408(server: ThreadedServer) -> None:
    def slow() -> Iterator[bytes]:
        yield b"x" * 10
        time.sleep(1.0)
        yield b"x" * 10

    response = httpx.post(f"{server.url}/echo", content=slow())
    assert response.status_code == 408 and response.json()["error"]["code"] == "request_timeout"


def test_slow_headers_are_cut_off(server: ThreadedServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    for opening in (b"", b"POST /echo HTTP/1.1\r\nHost: x\r\n"):  # silent, or trickling
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(opening)
            start = time.monotonic()
            assert sock.recv(100) == b""  # closed by the server
            assert time.monotonic() - start < 3
