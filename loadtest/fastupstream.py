"""A minimal OpenAI-compatible upstream that answers at once, for measuring the gateway.

The simulated engine (`loadtest.sim`) is a FastAPI app costing ~3 ms of CPU per request: on
a 2-core machine that hides the gateway's own cost. This one is raw asyncio (HTTP/1.1,
keep-alive, Content-Length bodies in; JSON or a chunked SSE stream out) and does just enough
of vLLM's API for the gateway to run against it: health, /v1/models with runtime-loaded
LoRAs, load/unload, completions and chat completions (`stream: true` sends
`--stream-chunks` events and `data: [DONE]`).

    python -m loadtest.fastupstream --port 8101 --model tiny-base
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

DONE = b"data: [DONE]\n\n"


class Upstream:
    def __init__(self, model: str, stream_chunks: int) -> None:
        self.model = model
        self.stream_chunks = stream_chunks
        self.loras: dict[str, str] = {}

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bool]:
        """(status, body, is_sse) for one request."""
        if path == "/health":
            return 200, b"", False
        if path == "/v1/models":
            return 200, self._models(), False
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            request = json.loads(body)
            name = request["lora_name"]
            if path.endswith("/load_lora_adapter"):
                self.loras[name] = request["lora_path"]
            elif self.loras.pop(name, None) is None:
                return 404, b'{"error": {"message": "not found"}}', False
            return 200, b"Success", False
        if path in ("/v1/completions", "/v1/chat/completions"):
            request = json.loads(body)
            if request.get("stream"):
                return 200, self._stream(request["model"], path), True
            return 200, self._completion(request["model"], path), False
        if path == "/metrics":
            return 200, b"# no metrics\n", False
        return 404, b'{"error": {"message": "no route"}}', False

    def _models(self) -> bytes:
        base = {"id": self.model, "object": "model", "root": self.model, "parent": None}
        loras = [
            {"id": n, "object": "model", "root": p, "parent": self.model}
            for n, p in self.loras.items()
        ]
        return json.dumps({"object": "list", "data": [base, *loras]}).encode()

    def _completion(self, model: str, path: str) -> bytes:
        chat = path.endswith("chat/completions")
        choice = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "length",
            }
            if chat
            else {"index": 0, "text": " ok", "finish_reason": "length"}
        )
        return json.dumps({
            "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }).encode()  # fmt: skip

    def _stream(self, model: str, path: str) -> bytes:
        chat = path.endswith("chat/completions")
        events = []
        for i in range(self.stream_chunks):
            delta = {"delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
            chunk = {"id": "cmpl-1", "object": "chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, **delta, "finish_reason": None}]}  # fmt: skip
            events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"id": "cmpl-1", "object": "chunk", "created": 0, "model": model, "choices": [],
                 "usage": {"prompt_tokens": 3, "completion_tokens": self.stream_chunks,
                           "total_tokens": 3 + self.stream_chunks}}  # fmt: skip
        events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        return b"".join(events) + DONE


async def handle(
    upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            status, payload, sse = upstream.answer(method, path.partition("?")[0], body)
            kind = b"text/event-stream" if sse else b"application/json"
            if sse:  # one chunk per event, as an engine streams them
                writer.write(
                    b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n"
                    % (status, kind)
                )
                for event in payload.split(b"\n\n")[:-1]:
                    event += b"\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                    % (status, kind, len(payload), payload)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, upstream: Upstream) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(upstream, r, w), host, port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--model", default="tiny-base")
    parser.add_argument("--stream-chunks", type=int, default=16)
    args = parser.parse_args()
    upstream = Upstream(args.model, args.stream_chunks)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, upstream))
    else:
        uvloop.run(serve(args.host, args.port, upstream))


if __name__ == "__main__":
    main()
