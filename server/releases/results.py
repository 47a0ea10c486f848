"""What the release operations of `server.releases.service` answer (the admin API renders
them as they are)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.releases.gate import GateResult


@dataclass(frozen=True)
class ChangeResult:
    """What a release change did. `switch_ms`: the channels write (lock, atomic write,
    audit, rescan, pins) — the moment traffic moves; prewarm time is not in it."""

    adapter: str
    action: str
    channels: dict[str, Any]
    switch_ms: float
    prewarm_ms: float = 0.0
    prewarmed: list[str] = field(default_factory=list)  # engines loaded/confirmed before
    not_resident: list[str] = field(default_factory=list)  # engines that will load on use
    forced: bool = False
    gate: GateResult | None = None
    detail: str = ""


@dataclass(frozen=True)
class RetireResult:
    adapter: str
    version: str
    retired_to: str  # directory name under <store>/<adapter>/
    still_loaded: list[str]  # engines where requests were using it (LRU evicts it later)


@dataclass(frozen=True)
class PrewarmResult:
    adapter: str
    version: str
    engines: list[str]
    elapsed_ms: float
