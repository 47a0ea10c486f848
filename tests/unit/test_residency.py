"""Engine views: fetched concurrently, epochs, listeners, the refresh loop and kicks."""

from __future__ import annotations

import asyncio

from server.engines.residency import EngineView, Residency, fetch_view
from server.errors import Unavailable
from tests.fakes import FakeEngine


class DownEngine(FakeEngine):
    async def models(self) -> list:  # type: ignore[type-arg]
        raise Unavailable("engine down is unreachable: ConnectError", retry_after_s=5)


async def test_a_view_is_what_the_engine_lists_and_runs() -> None:
    engine = FakeEngine(loaded={"a@v1": "/p", "b@v1": "/p"}, busy={"b@v1"})
    view = await fetch_view(engine, epoch=3)
    assert view.epoch == 3 and view.healthy
    assert view.held == {"a@v1", "b@v1"} and view.busy == {"b@v1"}
    assert view.load.running == 1
    assert not (await fetch_view(DownEngine(), 4)).healthy
    assert not (await fetch_view(FakeEngine(healthy=False), 5)).healthy


async def test_listeners_hear_each_view_and_older_ones_are_ignored() -> None:
    residency = Residency()
    heard: list[tuple[str, int]] = []
    residency.listen(lambda name, view: heard.append((name, view.epoch)))
    residency.track("e0", FakeEngine())
    assert residency.view("e0") is None and residency.epoch("e0") == 0
    view = await residency.look("e0")
    assert heard == [("e0", 1)] and residency.view("e0") == view and residency.epoch("e0") == 1
    residency._publish("e0", residency._engines["e0"], EngineView(0, healthy=False))
    assert residency.view("e0") == view  # a view older than the current one is dropped


async def test_the_refresh_loop_runs_every_interval_and_on_a_kick() -> None:
    residency = Residency(interval_s=60)
    engine = FakeEngine()
    residency.track("e0", engine)
    residency.start("e0")
    await asyncio.sleep(0.05)
    assert residency.epoch("e0") == 1  # the first refresh, at once
    engine.loaded["a@v1"] = "/p"
    residency.kick("e0")
    await asyncio.sleep(0.25)  # a kick waits min_gap_s (0.1 s) after the previous refresh
    view = residency.view("e0")
    assert residency.epoch("e0") == 2 and view is not None and view.held == {"a@v1"}
    await residency.aclose()
    assert residency.view("e0") is None
