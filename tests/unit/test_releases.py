"""Release policy and operations against a real store and a fake engine (no HTTP)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.engines.registry import Registry
from server.errors import AdapterLoadFailed, Conflict, NotFound, PromotionRefused
from server.metrics import Metrics
from server.releases.channels import active_versions, pin_budget, pinned_versions
from server.releases.service import ReleaseService
from server.serving.routing import Router
from server.store.manifest import Channels, EvalReport
from server.store.snapshot import Adapter, Snapshot
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.fakes import FakeEngine

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ACTOR = "admin:test"


def evals(store: AdapterStore, name: str, **scores: float) -> None:
    for version, score in scores.items():
        report = EvalReport(dataset="heldout", metric="exact_match", score=score, n=50)
        store.add_eval(name, version, report, actor="ci")


def service(store: AdapterStore, engine: FakeEngine, capacity: int = 4) -> ReleaseService:
    metrics = Metrics()
    registry = Registry({"e0": (engine, capacity)}, metrics)

    def pins_changed() -> None:
        now = datetime.now(UTC)
        registry.set_pins(pinned_versions(store.snapshot, now, 3600, capacity - 1))

    return ReleaseService(
        store,
        registry,
        metrics,
        engines_up=lambda: ["e0"],
        pins_changed=pins_changed,
        max_upload_bytes=10**6,
    )


@pytest.fixture
def s_store(store: AdapterStore, tmp_path: Path) -> AdapterStore:
    """Adapter `s`: v1 stable (eval 0.70), v2 and v3 candidates (0.80, 0.60)."""
    for i, v in enumerate(("v1", "v2", "v3")):
        add_version(store, tmp_path, "s", v, seed=i)
    evals(store, "s", v1=0.70, v2=0.80, v3=0.60)
    store.update_channels("s", lambda c: Channels(stable="v1"), actor="setup", action="promote")
    return store


def sample(svc: ReleaseService, name: str, **labels: str) -> float:
    return svc.metrics.registry.get_sample_value(name, labels) or 0.0


# --- policy ----------------------------------------------------------------------------


def test_pins_operator_first_then_rollback_targets_then_stables_within_budget(
    store: AdapterStore, tmp_path: Path
) -> None:
    versions = {f"{n}@{v}": add_version(store, tmp_path, n, v) for n in "abc" for v in ("v1", "v2")}

    def adapter(name: str, age_s: float, **channels: object) -> Adapter:
        ch = Channels(updated_at=NOW - timedelta(seconds=age_s), **channels)  # type: ignore[arg-type,unused-ignore]
        return Adapter(
            name, {k.split("@")[1]: v for k, v in versions.items() if k.startswith(name)}, ch
        )

    snap = Snapshot(
        {
            "a": adapter("a", 10, stable="v2", previous="v1"),
            "b": adapter("b", 5000, stable="v2", previous="v1", pinned=("v1",)),  # window passed
            "c": adapter("c", 1, stable="v2", previous="v1"),
        }
    )
    keys = [v.engine_name for v in pinned_versions(snap, NOW, 3600, budget=4)]
    assert keys == ["b@v1", "c@v1", "a@v1", "c@v2"]  # a short budget keeps the rollback targets
    assert [v.engine_name for v in pinned_versions(snap, NOW, 0, budget=4)] == ["b@v1"]
    assert active_versions(snap)[:2] == [("a", "v1", "previous"), ("a", "v2", "stable")]


@pytest.mark.parametrize(
    ("slots", "share", "budget"),
    [(4, 0.5, 2), (4, 1.0, 3), (3, 0.5, 1), (8, 0.25, 2), (1, 0.5, 0), (4, 0.0, 0)],
)
def test_pins_take_at_most_their_share_of_slots_and_never_all(
    slots: int, share: float, budget: int
) -> None:
    assert pin_budget(slots, share) == budget


def test_canary_split_within_tolerance_and_sticky_by_user(
    store: AdapterStore, tmp_path: Path
) -> None:
    add_version(store, tmp_path, "s", "v1")
    add_version(store, tmp_path, "s", "v2", seed=1)
    store.update_channels(
        "s",
        lambda c: Channels(
            stable="v1",
            canary={
                "version": "v2",
                "weight": 0.1,
            },
        ),
        actor="t",
        action="canary",
    )
    router = Router(store, "tiny-base", random.Random(7))
    n, sigma = 2000, (0.1 * 0.9 / 2000) ** 0.5  # binomial: 0.0067

    by_user = [router.resolve("s", f"user-{i}").channel == "canary" for i in range(n)]
    at_random = [router.resolve("s").channel == "canary" for _ in range(n)]

    for draws in (by_user, at_random):
        assert abs(sum(draws) / n - 0.1) < 4 * sigma
    for i in range(50):  # the same user always lands on the same version
        assert {router.resolve("s", f"user-{i}").engine_model for _ in range(5)} == {
            "s@v2" if by_user[i] else "s@v1"
        }


# --- operations ------------------------------------------------------------------------


async def test_promotion_prewarms_then_switches_and_rollback_loads_nothing(
    s_store: AdapterStore,
) -> None:
    engine = FakeEngine()
    svc = service(s_store, engine)

    result = await svc.promote("s", "v2", actor=ACTOR)

    assert engine.loads() == ["s@v2", "s@v1"]  # candidate first, then the rollback target
    assert (result.channels["stable"], result.channels["previous"]) == ("v2", "v1")
    assert result.prewarmed == ["e0"] and result.gate is not None and result.gate.passed
    assert svc.registry.pinned() == {"s@v2", "s@v1"}  # re-applied at once, not on a poll
    assert sample(svc, "loragate_promotions_total", adapter="s", forced="false") == 1

    back = await svc.rollback("s", actor=ACTOR)

    assert engine.loads() == ["s@v2", "s@v1"] and back.not_resident == []
    assert (back.channels["stable"], back.channels["previous"]) == ("v1", None)
    assert "v2" in s_store.scan().adapters["s"].versions  # rolled back, still a candidate
    with pytest.raises(Conflict, match="no previous version"):
        await svc.rollback("s", actor=ACTOR)
    entries = s_store.audit()
    assert [(e.action, e.from_version, e.to_version) for e in entries[-2:]] == [
        ("promote", "v1", "v2"),
        ("rollback", "v2", "v1"),
    ]
    assert sample(svc, "loragate_rollbacks_total", adapter="s") == 1


async def test_refused_promotion_changes_nothing_and_force_is_audited(
    s_store: AdapterStore,
) -> None:
    engine = FakeEngine()
    svc = service(s_store, engine)
    channels_file = s_store.root / "s" / "channels.json"
    before = (channels_file.read_bytes(), len(s_store.audit()))

    with pytest.raises(PromotionRefused) as refused:
        await svc.promote("s", "v3", actor=ACTOR)

    assert "0.6000" in refused.value.message and "0.7000" in refused.value.message
    assert (channels_file.read_bytes(), len(s_store.audit())) == before
    assert engine.calls == []

    forced = await svc.promote("s", "v3", actor=ACTOR, force=True)

    assert forced.forced and forced.channels["stable"] == "v3"
    last = s_store.audit()[-1]
    assert (last.action, last.forced, last.actor) == ("promote", True, ACTOR)
    assert last.detail.startswith("forced past the gate: ")
    assert sample(svc, "loragate_promotions_total", adapter="s", forced="true") == 1


async def test_a_failed_prewarm_aborts_the_promotion(s_store: AdapterStore) -> None:
    svc = service(s_store, FakeEngine(fail_load={"s@v2"}))
    with pytest.raises(AdapterLoadFailed):
        await svc.promote("s", "v2", actor=ACTOR)
    assert s_store.scan().adapters["s"].channels.stable == "v1"


async def test_canary_is_prewarmed_and_weight_zero_ends_it(s_store: AdapterStore) -> None:
    engine = FakeEngine()
    svc = service(s_store, engine)

    started = await svc.canary("s", "v2", 0.25, actor=ACTOR)

    canary = started.channels["canary"]
    assert (canary["version"], canary["weight"]) == ("v2", 0.25)
    assert canary["max_error_rate_delta"] == 0.02 and canary["steps"] == []  # the defaults
    assert canary["started_at"] == canary["stepped_at"] is not None
    assert engine.loads() == ["s@v2"]
    with pytest.raises(Conflict, match="is stable"):
        await svc.canary("s", "v1", 0.5, actor=ACTOR)
    ended = await svc.canary("s", None, 0.0, actor=ACTOR)
    assert ended.channels["canary"] is None
    assert [(e.action, e.from_version, e.to_version) for e in s_store.audit()[-2:]] == [
        ("canary", None, "v2"),
        ("canary", "v2", None),
    ]


async def test_retire_refuses_what_is_referenced_and_moves_the_rest(
    s_store: AdapterStore,
) -> None:
    engine = FakeEngine()
    svc = service(s_store, engine)
    await svc.prewarm("s", "v3")
    with pytest.raises(Conflict, match="stable"):
        await svc.retire("s", "v1", actor=ACTOR)
    await svc.pin("s", "v3", actor=ACTOR, pinned=True)
    with pytest.raises(Conflict, match="pinned"):
        await svc.retire("s", "v3", actor=ACTOR)
    assert (await svc.pin("s", "v3", actor=ACTOR, pinned=True)).detail == "already pinned"
    await svc.pin("s", "v3", actor=ACTOR, pinned=False)

    result = await svc.retire("s", "v3", actor=ACTOR)

    assert result.retired_to.startswith(".retired-v3-") and result.still_loaded == []
    assert (s_store.root / "s" / result.retired_to / "manifest.json").exists()
    assert "v3" not in s_store.snapshot.adapters["s"].versions
    assert "s@v3" not in engine.loaded
    assert s_store.audit()[-1].action == "retire"
    with pytest.raises(NotFound):
        await svc.retire("s", "v3", actor=ACTOR)
