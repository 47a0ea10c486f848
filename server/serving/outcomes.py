"""What the gateway reports of each finished request, and the answer text it saw.

The gateway knows nothing of canaries or shadows. Before it forwards a request it asks for a
`Watch` (is the answer text wanted, is the request mirrored); when the request ends it reports
the outcome to an `OutcomeSink` (the runtime wires `server.releases.outcomes.OutcomeLog`,
which keeps the versions under a canary) and hands a successful answer to the request's
`Mirror`, if any (`server.serving.shadow`). Text is only assembled when someone wants it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from server.store.snapshot import AdapterVersion


class OutcomeSink(Protocol):
    """Where finished requests are reported (one method call per request, on the loop)."""

    def wants_text(self, version: AdapterVersion) -> bool:
        """Whether `record` needs the answer's text for `version` (output checks)."""
        ...

    def record(
        self,
        version: AdapterVersion,
        *,
        failed: bool,
        ttft_s: float | None,
        total_s: float,
        text: str | None,
    ) -> None: ...


class NoOutcomes:
    """The sink of a gateway that keeps no outcomes (tests, tools)."""

    def wants_text(self, version: AdapterVersion) -> bool:
        return False

    def record(
        self,
        version: AdapterVersion,
        *,
        failed: bool,
        ttft_s: float | None,
        total_s: float,
        text: str | None,
    ) -> None:
        return None


class Mirror(Protocol):
    """A request chosen for a shadow: sent to the candidate once the primary has answered."""

    def send(self, reference_text: str, reference_latency_s: float) -> None: ...


@dataclass(frozen=True)
class Watch:
    """What the gateway owes the outcome sink and the shadow for one request."""

    version: AdapterVersion
    wants_text: bool
    mirror: Mirror | None


def answer_text(result: dict[str, Any]) -> str:
    """The first choice's text of a (non-streamed) completion or chat completion."""
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    message = first.get("message")
    text = message.get("content") if isinstance(message, dict) else first.get("text")
    return text if isinstance(text, str) else ""


def delta_text(payload: dict[str, Any]) -> str:
    """The text a streamed chunk adds to the first choice (index 0)."""
    for choice in payload.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            return text if isinstance(text, str) else ""
    return ""
