"""Requests the container tests send to a gateway: a completion, a stream read to its end."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPT = "The battery died after a day."


def complete(
    base_url: str, model: str = "sentiment", max_tokens: int = 4, timeout: float = 30.0
) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens}
    return httpx.post(f"{base_url}/v1/completions", json=body, timeout=timeout)


@dataclass
class Stream:
    """A chat completion streamed in a thread: `first` is set once the first event arrived,
    `done` once the stream ended (or failed: `error`)."""

    base_url: str
    model: str = "qa"
    max_tokens: int = 40
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # the response's, lower-case names
    lines: list[str] = field(default_factory=list)  # the `data:` lines, in order
    error: BaseException | None = None
    first: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        threading.Thread(target=self._read, name="stream", daemon=True).start()
        return self

    def _read(self) -> None:
        body = {"model": self.model, "stream": True, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip
        try:
            with httpx.stream("POST", f"{self.base_url}/v1/chat/completions", json=body,
                              timeout=60.0) as response:  # fmt: skip
                self.status = response.status_code
                self.headers = dict(response.headers)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.lines.append(line)
                        self.first.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first.set()
            self.done.set()

    def chunks(self) -> list[dict[str, Any]]:
        """The JSON events before `data: [DONE]`."""
        return [json.loads(line.removeprefix("data:")) for line in self.lines
                if line.strip() != "data: [DONE]"]  # fmt: skip

    def finished(self) -> bool:
        """Ended with `data: [DONE]` after a choice with a finish_reason and no error event."""
        chunks = self.chunks()
        reasons = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
        return (
            self.error is None
            and bool(self.lines)
            and self.lines[-1].strip() == "data: [DONE]"
            and not any("error" in c for c in chunks)
            and any(reasons)
        )


@dataclass(frozen=True)
class Sent:
    at: float  # time.monotonic() when the request was sent
    endpoint: str
    status: int | None  # None: refused, reset or timed out
    engine: str | None = None  # the engine that served it (the gateway's X-Engine header)


class ServiceTraffic:
    """Completions through a Service as kube-proxy routes them: round-robin over the endpoints
    whose readiness probe passes (probed every `period` seconds), one request at a time, no
    retries. `sent` records every request."""

    MODELS = ("sentiment", "qa", "summarize")

    def __init__(self, endpoints: dict[str, str], readiness: dict[str, str], period: float = 0.25):
        self.endpoints, self.readiness, self.period = endpoints, readiness, period
        self.sent: list[Sent] = []
        self._ready: list[str] = list(endpoints)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._probe, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]  # fmt: skip

    def __enter__(self) -> ServiceTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _probe(self) -> None:
        while not self._stop.wait(self.period):
            ready = []
            for name, url in self.readiness.items():
                try:
                    if httpx.get(url, timeout=1.0).status_code < 400:
                        ready.append(name)
                except httpx.HTTPError:
                    pass
            self._ready = ready

    def _send(self) -> None:
        turn = 0
        while not self._stop.is_set():
            ready = self._ready
            if not ready:
                self._stop.wait(0.05)
                continue
            name = ready[turn % len(ready)]
            model = self.MODELS[turn % len(self.MODELS)]
            turn += 1
            at = time.monotonic()
            try:
                response = complete(self.endpoints[name], model, 2, timeout=5.0)
                sent = Sent(at, name, response.status_code, response.headers.get("x-engine"))
            except httpx.HTTPError:
                sent = Sent(at, name, None)
            self.sent.append(sent)
