"""Placement policies: which engine serves a request. One class per policy, one interface.

- `affinity` (default): an engine that holds the version, else its rendezvous-hash home
  (or the next engine in that order when every slot of the home is busy), with bounded
  load (in the spirit of "consistent hashing with bounded loads", Mirrokni et al. 2018): no
  engine takes a request while it carries more than `load_factor` times the least loaded
  engine's load plus `SLACK`. A hot version whose demand exceeds one engine's share spills
  to the next engine in its rendezvous order and is loaded there too; the copies converge
  because every gateway replica ranks the engines the same way and sees the same
  residency. (A bound on the least, not the mean, load reacts on small fleets: with two
  engines a mean-based bound lets one carry everything up to ~20 requests.)
- `round_robin`: the next engine, whatever it holds (the baseline the others are measured
  against).
- `least_loaded`: the engine with the fewest requests, whatever it holds.

Load is what every gateway runs on the engine (`LoadView.load`), not only this replica's.
The base model (`key` None) goes to the least loaded engine under every policy but
round robin.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Literal, Protocol

PolicyName = Literal["affinity", "round_robin", "least_loaded"]
SLACK = 4  # requests an engine may carry above the bound before spilling: no spill at idle


class LoadView(Protocol):
    """What a policy may read about the engines (the registry implements it)."""

    def load(self, engine: str) -> int: ...
    def holds(self, engine: str, key: str) -> bool: ...
    def has_room(self, engine: str) -> bool:
        """A load there would not wait: a free slot, or an idle one to evict."""
        ...


class Policy(Protocol):
    name: str

    def choose(self, key: str | None, engines: Sequence[str], view: LoadView) -> str:
        """One of `engines` (non-empty) for `key` (an engine-side version name, or None for
        the base model)."""
        ...


def rendezvous(key: str, engines: Sequence[str]) -> list[str]:
    """`engines` in `key`'s rendezvous (highest random weight) order: the same on every
    replica, and removing one engine moves only the keys it was first for."""
    return sorted(engines, key=lambda e: _weight(e, key), reverse=True)


def _weight(engine: str, key: str) -> bytes:
    return hashlib.sha256(f"{engine}|{key}".encode()).digest()


class Affinity:
    name = "affinity"

    def __init__(self, load_factor: float = 2.0) -> None:
        self.load_factor = load_factor

    def choose(self, key: str | None, engines: Sequence[str], view: LoadView) -> str:
        if key is None:
            return min(engines, key=view.load)
        bound = self.load_factor * min(view.load(e) for e in engines) + SLACK
        holders = [e for e in engines if view.holds(e, key) and view.load(e) <= bound]
        if holders:
            return min(holders, key=view.load)
        # A miss: the first engine in rendezvous order within the bound, preferring one where
        # the load need not wait for a busy slot to drain. The least loaded engine is always
        # within the bound, so there is one.
        fits = [e for e in rendezvous(key, engines) if view.load(e) <= bound]
        return next((e for e in fits if view.has_room(e)), fits[0])


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, key: str | None, engines: Sequence[str], view: LoadView) -> str:
        return engines[next(self._turn) % len(engines)]


class LeastLoaded:
    name = "least_loaded"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, key: str | None, engines: Sequence[str], view: LoadView) -> str:
        loads = {e: view.load(e) for e in engines}
        least = min(loads.values())
        tied = [e for e in engines if loads[e] == least]  # rotate, or idle means "always e0"
        return tied[next(self._turn) % len(tied)]


def make_policy(name: PolicyName, load_factor: float = 2.0) -> Policy:
    """The policy called `name` (settings.placement_policy)."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_loaded":
        return LeastLoaded()
    return Affinity(load_factor)
