"""What the release channels mean for serving: which versions stay warm (pins) and which
versions a channel points at (for metrics and listings)."""

from __future__ import annotations

from datetime import datetime, timedelta

from server.store.manifest import Channels
from server.store.snapshot import AdapterVersion, Snapshot


def pin_budget(slots: int, max_pinned_share: float) -> int:
    """How many versions may be pinned on an engine with `slots` slots: `max_pinned_share`
    of them, rounded down, and never every slot (#12.6: pins must not starve traffic)."""
    return max(0, min(int(slots * max_pinned_share), slots - 1))


def pinned_versions(
    snapshot: Snapshot, now: datetime, rollback_window_s: float, budget: int
) -> list[AdapterVersion]:
    """The first `budget` of `pin_candidates`."""
    return pin_candidates(snapshot, now, rollback_window_s)[: max(0, budget)]


def pin_candidates(
    snapshot: Snapshot, now: datetime, rollback_window_s: float
) -> list[AdapterVersion]:
    """Every version that wants to stay warm, in order: operator pins first, then the rollback
    targets (previous) of the adapters whose channels changed within the rollback window,
    then their stables, newest change first in each group. A stable carries traffic and stays
    warm by itself; a previous gets none, so when the budget is short the rollback target is
    the one kept. Every replica reads the same channels, so all agree on pins."""
    operator: list[AdapterVersion] = []
    previous: list[tuple[datetime, AdapterVersion]] = []
    stable: list[tuple[datetime, AdapterVersion]] = []
    horizon = now - timedelta(seconds=rollback_window_s)
    for adapter in snapshot.adapters.values():
        channels = adapter.channels
        operator += [adapter.versions[v] for v in channels.pinned if v in adapter.versions]
        if channels.updated_at is None or channels.updated_at < horizon:
            continue
        for group, v in ((previous, channels.previous), (stable, channels.stable)):
            if v is not None and v in adapter.versions:
                group.append((channels.updated_at, adapter.versions[v]))
    chosen: dict[str, AdapterVersion] = {}
    for version in [*operator, *_newest_first(previous), *_newest_first(stable)]:
        chosen.setdefault(version.engine_name, version)
    return list(chosen.values())


def _newest_first(items: list[tuple[datetime, AdapterVersion]]) -> list[AdapterVersion]:
    return [v for _, v in sorted(items, key=lambda item: item[0], reverse=True)]


def channel_of(channels: Channels) -> dict[str, str]:
    """version -> the channel pointing at it: stable, previous, or a live canary."""
    roles = {v: c for c, v in (("previous", channels.previous), ("stable", channels.stable)) if v}
    if channels.canary is not None and channels.canary.weight > 0:
        roles.setdefault(channels.canary.version, "canary")
    return roles


def active_versions(snapshot: Snapshot) -> list[tuple[str, str, str]]:
    """(adapter, version, channel) for every stable, previous and live canary pointer."""
    return [
        (adapter.name, version, channel)
        for adapter in snapshot.adapters.values()
        for version, channel in channel_of(adapter.channels).items()
    ]


def canaries_moved(current: Channels, new: Channels) -> tuple[str | None, str | None]:
    """The (from, to) canary versions of a change, for its audit entry."""
    return (
        current.canary.version if current.canary else None,
        new.canary.version if new.canary else None,
    )


def shadows_moved(current: Channels, new: Channels) -> tuple[str | None, str | None]:
    """The (from, to) shadow versions of a change, for its audit entry."""
    return (
        current.shadow.version if current.shadow else None,
        new.shadow.version if new.shadow else None,
    )
