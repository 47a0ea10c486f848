"""Live progress in the terminal: per round, requests sent and answered, in flight, rps and
p50/p99 over the last few seconds, answers by status, and the loads / evictions / thrash
reloads loragate reported since the round started.

The runner owns `LiveStats` (plain counters, updated on the event loop); a `Progress` only
reads them when asked to `refresh`, so rendering never runs while a request is timed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from loadtest.tool.records import RequestRecord
from loadtest.tool.stats import percentile

WINDOW_S = 5.0


@dataclass
class LiveStats:
    """Counters of one round, for the display."""

    target: str
    round: int
    started: float = field(default_factory=time.perf_counter)
    sent: int = 0
    done: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (end, latency s)
    scraped: dict[str, float] = field(default_factory=dict)  # deltas since the round started
    finished: bool = False

    def add(self, record: RequestRecord) -> None:
        self.done += 1
        self.outcomes[record.outcome] += 1
        if record.ok:
            self.recent.append((time.perf_counter(), record.total_s))

    def window(self) -> list[float]:
        horizon = time.perf_counter() - WINDOW_S
        while self.recent and self.recent[0][0] < horizon:
            self.recent.popleft()
        return [latency for _, latency in self.recent]


class Progress(Protocol):
    def start(self) -> None: ...
    def refresh(self, rounds: list[LiveStats]) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    """For tests and scripts: shows nothing."""

    def start(self) -> None:
        pass

    def refresh(self, rounds: list[LiveStats]) -> None:
        pass

    def stop(self) -> None:
        pass


def table(rounds: list[LiveStats]) -> Table:
    """One row per round; fits 80 columns (the answers column folds)."""
    grid = Table(title="loragate loadtest", expand=False)
    grid.add_column("target", no_wrap=True)
    for column in ("s", "done/sent", "rps", "p50/p99 ms"):
        grid.add_column(column, justify="right", no_wrap=True)
    grid.add_column("answers", overflow="fold", min_width=8)
    grid.add_column("loads/ev/thr", justify="right", no_wrap=True)
    for stats in rounds:
        window = stats.window()
        elapsed = time.perf_counter() - stats.started
        latency = "-"
        if window:
            latency = f"{percentile(window, 0.5) * 1000:.0f}/{percentile(window, 0.99) * 1000:.0f}"
        scraped = stats.scraped
        swaps = "/".join(f"{scraped.get(k, 0):.0f}" for k in ("loads", "evictions", "thrash"))
        grid.add_row(
            f"{stats.target} r{stats.round}",
            f"{elapsed:.0f}" + (" ✓" if stats.finished else ""),
            f"{stats.done}/{stats.sent}",
            f"{len(window) / min(WINDOW_S, max(elapsed, 1e-3)):.1f}",
            latency,
            " ".join(f"{k}:{v}" for k, v in sorted(stats.outcomes.items())) or "-",
            swaps if scraped else "-",
        )
    return grid


class RichProgress:
    """A `rich.live.Live` table, redrawn when the runner calls `refresh` (twice a second)."""

    def __init__(self, console: Console | None = None) -> None:
        self._live = Live(
            table([]), console=console, auto_refresh=False, transient=False, redirect_stderr=False
        )

    def start(self) -> None:
        self._live.start()

    def refresh(self, rounds: list[LiveStats]) -> None:
        self._live.update(table(rounds[-8:]), refresh=True)

    def stop(self) -> None:
        self._live.stop()
