"""Server-sent events relay: engine SSE in, client SSE out.

Each `data:` event's JSON gets the client's `model` back (the engine saw `name@version`);
usage is captured for metrics; `data: [DONE]` passes through. Once the stream has started,
an error can no longer change the HTTP status, so it is sent as an SSE error event followed
by `data: [DONE]` (what vLLM and OpenAI clients expect).
"""

from __future__ import annotations

from typing import Any

from server import jsonio
from server.errors import LoragateError
from server.serving.outcomes import delta_text

DONE = b"data: [DONE]\n\n"


class SSERewriter:
    """Splits a byte stream into SSE events and rewrites each event's `model` field."""

    def __init__(self, model: str, drop_usage_chunk: bool = False, keep_text: bool = False) -> None:
        self.model = model
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: dict[str, Any] | None = None
        # The first choice's text, assembled when asked for (output checks, shadow agreement).
        self.text: list[str] | None = [] if keep_text else None
        self.error = False  # the engine sent an error event (the stream failed after all)
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [out for e in events if e.strip() and (out := self._rewrite(e))]

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [out for out in (self._rewrite(rest),) if rest.strip() and out]

    def _rewrite(self, event: bytes) -> bytes:
        """The rewritten event, or b"" if it is a usage-only chunk the client did not ask for."""
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data = self._rewrite_data(line[5:].strip())
                if data is None:
                    return b""
                line = b"data: " + data
            lines.append(line)
        return b"\n".join(lines) + b"\n\n"

    def _rewrite_data(self, data: bytes) -> bytes | None:
        if data == b"[DONE]":
            return data
        try:
            payload = jsonio.loads(data)
        except ValueError:
            return data
        if isinstance(payload, dict):
            self.error = self.error or "error" in payload
            if self.text is not None:
                self.text.append(delta_text(payload))
            if "model" in payload:
                payload["model"] = self.model
            if payload.get("usage"):
                self.usage = payload["usage"]
                if self.drop_usage_chunk and not payload.get("choices"):
                    return None
                if self.drop_usage_chunk:
                    payload["usage"] = None
        return jsonio.dumps(payload)


def error_event(exc: LoragateError) -> bytes:
    return b"data: " + jsonio.dumps(exc.to_openai()) + b"\n\n"
