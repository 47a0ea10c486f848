"""Per-version outcomes for canary analysis (server/releases/outcomes.py), over a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.releases.outcomes import OutcomeLog, percentile
from server.store.manifest import Canary, Channels
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version, set_channels


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def versions(store: AdapterStore, tmp_path: Path) -> tuple[AdapterVersion, AdapterVersion]:
    checks = {"deny_words": ["forbidden"]}
    v1 = add_version(store, tmp_path, "s", "v1")
    v2 = add_version(store, tmp_path, "s", "v2", seed=1, checks=checks)
    return v1, v2


def start_canary(store: AdapterStore, weight: float) -> None:
    channels = Channels(stable="v1", canary=Canary(version="v2", weight=weight))
    store.update_channels("s", set_channels(channels), actor="t", action="canary")


def test_only_adapters_under_a_live_canary_are_kept(
    store: AdapterStore, versions: tuple[AdapterVersion, AdapterVersion]
) -> None:
    v1, v2 = versions
    clock = Clock()
    log = OutcomeLog(lambda: store.snapshot, clock=clock)
    log.record(v2, failed=False, ttft_s=None, total_s=0.1, text="forbidden")
    assert log.stats("s@v2", 0).requests == 0 and not log.wants_text(v2)

    start_canary(store, 0.5)
    assert log.wants_text(v2) and not log.wants_text(v1)  # v1 declares no checks
    log.record(v2, failed=False, ttft_s=0.05, total_s=0.2, text="a forbidden word")
    log.record(v2, failed=False, ttft_s=None, total_s=0.3, text="fine")
    log.record(v2, failed=True, ttft_s=None, total_s=0.01, text=None)
    log.record(v1, failed=False, ttft_s=None, total_s=0.1, text=None)

    mine = log.stats("s@v2", 0)
    assert (mine.requests, mine.errors, mine.violations) == (3, 1, 1)
    assert (mine.error_rate, mine.violation_rate) == (1 / 3, 0.5)
    assert (mine.total_s, mine.ttft_s, mine.p(0.99)) == ((0.2, 0.3), (0.05,), 0.3)
    assert log.stats("s@v1", 0).requests == 1

    clock.now += 10
    log.record(v2, failed=False, ttft_s=None, total_s=0.2, text="fine")
    assert log.stats("s@v2", since=clock.now - 5).requests == 1  # the older ones left
    log.retain({"s@v1"})
    assert log.stats("s@v2", 0).requests == 0

    start_canary(store, 0.0)  # rolled back: nothing more is kept
    log.record(v1, failed=True, ttft_s=None, total_s=0.1, text=None)
    assert log.stats("s@v1", 0).requests == 1


def test_samples_per_version_are_bounded(
    store: AdapterStore, versions: tuple[AdapterVersion, AdapterVersion]
) -> None:
    start_canary(store, 0.5)
    log = OutcomeLog(lambda: store.snapshot, max_samples=10)
    for _ in range(25):
        log.record(versions[0], failed=False, ttft_s=None, total_s=0.1, text=None)
    assert log.stats("s@v1", 0).requests == 10


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.99, None), ([3.0], 0.5, 3.0), ([1, 2, 3, 4], 0.5, 2), (list(range(1, 101)), 0.99, 99)],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
