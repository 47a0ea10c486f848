"""Placement over a registry of fake engines: health, choice (residency, home, bounded load,
base to the least busy) and the lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engines.placement import Placement
from server.engines.policies import (
    Affinity,
    LeastLoaded,
    PolicyName,
    RoundRobin,
    make_policy,
    rendezvous,
)
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


# --- policies --------------------------------------------------------------------------------


class Loads:
    """A `LoadView` from plain dicts: engine -> load, engine -> the keys it holds."""

    def __init__(self, load: dict[str, int], held: dict[str, set[str]] | None = None) -> None:
        self._load, self._held = load, held or {}

    def load(self, engine: str) -> int:
        return self._load[engine]

    def holds(self, engine: str, key: str) -> bool:
        return key in self._held.get(engine, set())

    def has_room(self, engine: str) -> bool:
        return engine not in self.full

    full: set[str] = set()


ENGINES = ["e0", "e1", "e2", "e3"]


def test_affinity_residency_first_then_the_same_home_on_every_replica() -> None:
    idle = Loads(dict.fromkeys(ENGINES, 0))
    homes = {k: rendezvous(k, ENGINES)[0] for k in (f"a{i}@v1" for i in range(40))}
    assert all(Affinity().choose(k, ENGINES, idle) == h for k, h in homes.items())
    assert set(homes.values()) == set(ENGINES)  # spread over all engines
    holder = next(e for e in ENGINES if e != homes["a0@v1"])
    assert Affinity().choose("a0@v1", ENGINES, Loads(idle._load, {holder: {"a0@v1"}})) == holder
    # Removing an engine moves only the keys whose home it was.
    rest = [e for e in ENGINES if e != "e0"]
    moved = [k for k, h in homes.items() if rendezvous(k, rest)[0] != h]
    assert all(homes[k] == "e0" for k in moved)


def test_affinity_spills_a_hot_version_to_its_next_engine_and_bounds_load() -> None:
    home, second = rendezvous("hot@v1", ENGINES)[:2]
    busy = Loads({**dict.fromkeys(ENGINES, 1), home: 6}, {home: {"hot@v1"}})
    assert Affinity(load_factor=2.0).choose("hot@v1", ENGINES, busy) == home  # 6 <= 2*1+4
    busier = Loads({**dict.fromkeys(ENGINES, 1), home: 7}, {home: {"hot@v1"}})
    assert Affinity(load_factor=2.0).choose("hot@v1", ENGINES, busier) == second
    assert Affinity().choose(None, ENGINES, busier) in set(ENGINES) - {home}  # base: least
    full = Loads(dict.fromkeys(ENGINES, 0))
    full.full = {home}  # every slot of the home busy: a miss goes where it need not wait
    assert Affinity().choose("hot@v1", ENGINES, full) == second
    full.full = set(ENGINES)  # busy everywhere: the home, and wait there
    assert Affinity().choose("hot@v1", ENGINES, full) == home


def test_round_robin_and_least_loaded_ignore_residency() -> None:
    held = Loads(dict.fromkeys(ENGINES, 0), {"e2": {"a@v1"}})
    rr = RoundRobin()
    assert [rr.choose("a@v1", ENGINES, held) for _ in range(5)] == [*ENGINES, "e0"]
    least = LeastLoaded()
    assert {least.choose("a@v1", ENGINES, held) for _ in range(4)} == set(ENGINES)  # ties rotate
    assert least.choose("a@v1", ENGINES, Loads({"e0": 3, "e1": 0, "e2": 2, "e3": 1})) == "e1"


@pytest.mark.parametrize("name", ["affinity", "round_robin", "least_loaded"])
def test_policies_are_chosen_by_name(name: PolicyName) -> None:
    assert make_policy(name).name == name


def test_a_drained_engine_gets_nothing_new_until_undrained() -> None:
    placement = make(2)
    placement.drain("e0")
    assert placement.up_engines() == ["e1"] and placement.draining() == ["e0"]
    assert {placement.choose(f"k{i}@v1", adapter=True) for i in range(20)} == {"e1"}
    placement.undrain("e0")
    assert placement.up_engines() == ["e0", "e1"]
    placement.forget("e0")
    assert placement.up_engines() == ["e1"]
