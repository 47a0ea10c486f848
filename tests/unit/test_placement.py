"""Placement over a registry of fake engines: health, choice (residency, home, bounded load,
base to the least busy) and the lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engines.placement import Placement
from server.engines.registry import Registry
from server.errors import Unavailable
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.fakes import FakeEngine


def make(engines: int = 2) -> Placement:
    fakes = {f"e{i}": (FakeEngine(name=f"e{i}"), 2) for i in range(engines)}
    return Placement(Registry(fakes, Metrics()))  # type: ignore[arg-type]


@pytest.fixture
def version(store: AdapterStore, tmp_path: Path) -> AdapterVersion:
    return add_version(store, tmp_path, "a", "v1")


def test_a_version_has_a_stable_home_among_the_engines_up() -> None:
    placement = make(3)
    home = placement.choose("a@v1", adapter=True)
    assert all(placement.choose("a@v1", adapter=True) == home for _ in range(5))
    placement.mark_down(home)
    assert placement.choose("a@v1", adapter=True) != home
    placement.mark_down("e0"), placement.mark_down("e1"), placement.mark_down("e2")
    with pytest.raises(Unavailable):
        placement.choose("a@v1", adapter=True)


def test_mark_up_and_down_report_transitions() -> None:
    placement = make(2)
    assert placement.up_engines() == ["e0", "e1"]
    assert placement.mark_down("e1") and not placement.mark_down("e1")
    assert placement.up_engines() == ["e0"]
    assert placement.mark_up("e1") and not placement.mark_up("e1")


async def test_residency_wins_over_the_home_engine(version: AdapterVersion) -> None:
    placement = make(2)
    home = placement.choose("a@v1", adapter=True)
    other = "e1" if home == "e0" else "e0"
    placement.registry.release(await placement.registry.acquire(other, version))
    assert placement.choose("a@v1", adapter=True) == other


async def test_a_much_busier_home_sends_new_versions_to_the_least_busy() -> None:
    placement = make(2)
    home = placement.choose("z@v9", adapter=True)
    for _ in range(5):  # base requests in flight on the home engine
        await placement.registry.acquire(home, None)
    assert placement.choose("z@v9", adapter=True) != home
    assert placement.choose("demo-base", adapter=False) != home


async def test_the_lease_holds_and_releases(version: AdapterVersion) -> None:
    placement = make(1)
    async with placement.lease("a@v1", version) as engine:
        assert engine == "e0" and placement.registry.inflight("e0") == 1
        assert placement.registry.holds("e0", "a@v1")
    assert placement.registry.inflight("e0") == 0
    async with placement.lease("tiny-base", None) as engine:
        assert placement.registry.inflight(engine) == 1
    assert placement.registry.inflight("e0") == 0
