"""The live display renders what the runner counted (into a string, as a terminal would)."""

from __future__ import annotations

import io

from rich.console import Console

from loadtest.tool.progress import LiveStats, RichProgress, table
from loadtest.tool.records import RequestRecord


def record(status: int, total: float, error: str | None = None) -> RequestRecord:
    return RequestRecord("gw", 0, 0, 0.0, total, status, "a", 1, "a", False, error=error)


def test_the_table_shows_answers_by_status_latency_and_scraped_swaps() -> None:
    stats = LiveStats("gateway-a", 1)
    stats.sent = 4
    for r in (record(200, 0.1), record(200, 0.3), record(503, 0.01, "503: busy")):
        stats.add(r)
    stats.scraped = {"loads": 7.0, "evictions": 5.0, "thrash": 2.0}
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=False).print(table([stats]))
    text = out.getvalue()
    assert "gateway-a" in text and "200:2 503:1" in text and "3/4" in text
    assert "7/5/2" in text
    assert "100/300" in text  # p50/p99 of the OK answers, ms


def test_rich_progress_starts_refreshes_and_stops() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=160, force_terminal=True))
    progress.start()
    progress.refresh([LiveStats("t", 0)])
    progress.stop()
    assert "loragate loadtest" in out.getvalue()
