"""Requests the container tests send to a gateway: a completion, a stream read to its end."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPT = "The battery died after a day."


def complete(base_url: str, model: str = "sentiment", max_tokens: int = 4) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens}
    return httpx.post(f"{base_url}/v1/completions", json=body, timeout=30.0)


@dataclass
class Stream:
    """A chat completion streamed in a thread: `first` is set once the first event arrived,
    `done` once the stream ended (or failed: `error`)."""

    base_url: str
    model: str = "qa"
    max_tokens: int = 40
    status: int | None = None
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
