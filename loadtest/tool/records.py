"""One `RequestRecord` per request sent, and their compact JSON form (a column list and one
row per request: a 200 req/s run of a minute stays a few MB)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """Times are seconds; `start_s` is since the start of the round. `status` 0: no HTTP
    answer (connection error, timeout). A 200 whose stream ended with an error event has
    `error` set and is not `ok`. `version` and `engine` are what loragate reported
    (`X-Adapter-Version`, `X-Engine`)."""

    target: str
    round: int
    seq: int
    start_s: float
    total_s: float
    status: int
    adapter: str | None
    rank: int
    model: str
    stream: bool
    ttft_s: float | None = None
    error: str | None = None
    version: str | None = None
    engine: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    overhead_ms: float | None = None
    cold: bool | None = None
    warmup: bool = False
    lag_s: float | None = None  # open loop: how late it was sent (a busy load generator)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None

    @property
    def end_s(self) -> float:
        return self.start_s + self.total_s

    @property
    def outcome(self) -> str:
        """`200`, `503`, … or `stream-error`, `no-answer`: the error classes of the plots."""
        if self.status == 0:
            return "no-answer"
        if self.error is not None and 200 <= self.status < 300:
            return "stream-error"
        return str(self.status)


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RequestRecord))


def to_rows(records: Iterable[RequestRecord]) -> list[list[Any]]:
    rows = []
    for record in records:
        row = [getattr(record, name) for name in COLUMNS]
        rows.append([round(v, 6) if isinstance(v, float) else v for v in row])
    return rows


def from_rows(columns: list[str], rows: list[list[Any]]) -> list[RequestRecord]:
    """Records from `to_rows` output (columns unknown to this version are dropped)."""
    known = set(COLUMNS)
    return [
        RequestRecord(**{c: v for c, v in zip(columns, row, strict=True) if c in known})
        for row in rows
    ]
