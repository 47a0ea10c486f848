"""The per-engine admission queue: a bounded FIFO that refuses early, with a Retry-After
computed from the queue, and never loses or leaks a slot (cancellations, timeouts)."""

from __future__ import annotations

import asyncio

import pytest

from server.engines.admission import EngineQueue
from server.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def hold(queue: EngineQueue, release: asyncio.Event, log: list[str], name: str) -> None:
    async with queue.admit():
        log.append(name)
        await release.wait()


async def test_past_the_limit_requests_wait_in_order_then_past_the_queue_are_refused() -> None:
    queue = EngineQueue("e0", limit=2, max_queue=2, max_wait_s=5)
    release, log = asyncio.Event(), list[str]()
    tasks = [asyncio.create_task(hold(queue, release, log, f"r{i}")) for i in range(4)]
    await asyncio.sleep(0.01)
    assert log == ["r0", "r1"] and queue.waiting == 2
    with pytest.raises(Unavailable) as refused:
        async with queue.admit():
            pass
    assert refused.value.status == 503 and refused.value.retry_after_s is not None
    release.set()
    await asyncio.gather(*tasks)
    assert log == ["r0", "r1", "r2", "r3"] and queue.inflight == 0 and queue.waiting == 0


async def test_a_request_that_would_wait_too_long_is_refused_at_once_with_retry_after() -> None:
    clock = Clock()
    queue = EngineQueue("e0", limit=1, max_queue=100, max_wait_s=3, clock=clock)
    async with queue.admit():  # teach it that a request takes 2 s
        clock.now += 2
    release, log = asyncio.Event(), list[str]()
    running = asyncio.create_task(hold(queue, release, log, "r0"))
    waiting = asyncio.create_task(hold(queue, release, log, "r1"))  # expected wait 2 s: queued
    await asyncio.sleep(0.01)
    assert queue.waiting == 1
    with pytest.raises(Unavailable) as refused:  # expected wait 4 s > 3 s: refused now
        async with queue.admit():
            pass
    assert refused.value.retry_after_s == pytest.approx(4.0)
    release.set()
    await asyncio.gather(running, waiting)


async def test_a_waiter_that_times_out_or_is_cancelled_gives_its_place_back() -> None:
    queue = EngineQueue("e0", limit=1, max_queue=5, max_wait_s=0.05)
    release, log = asyncio.Event(), list[str]()
    running = asyncio.create_task(hold(queue, release, log, "r0"))
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable):
        async with queue.admit():  # waits 50 ms, then gives up
            pass
    assert queue.waiting == 0
    cancelled = asyncio.create_task(hold(queue, release, log, "gone"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert queue.waiting == 0
    release.set()
    await running
    assert queue.inflight == 0 and log == ["r0"]
    async with queue.admit():
        assert queue.inflight == 1


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    queue = EngineQueue("e0", limit=1, max_queue=5, max_wait_s=5)
    release, log = asyncio.Event(), list[str]()
    running = asyncio.create_task(hold(queue, release, log, "r0"))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(hold(queue, asyncio.Event(), log, "doomed"))
    survivor = asyncio.create_task(hold(queue, release, log, "r2"))
    await asyncio.sleep(0.01)
    release.set()  # r0 leaves and hands its slot to `doomed` ...
    await running
    doomed.cancel()  # ... which is cancelled before it runs: the slot goes on to r2
    await asyncio.gather(doomed, survivor, return_exceptions=True)
    assert "r2" in log and queue.inflight == 0 and queue.waiting == 0


async def test_the_limit_is_learned_from_the_engines_own_queue() -> None:
    queue = EngineQueue("e0", limit=10, max_queue=100, max_wait_s=5)
    queue.observe(engine_running=10, engine_waiting=3)  # the engine queues: we send too many
    assert queue.limit == 9
    for _ in range(30):
        queue.observe(engine_running=1, engine_waiting=5)
    assert queue.limit == 1  # never below one
    queue.observe(engine_running=0, engine_waiting=0)  # nobody waits here: no reason to grow
    assert queue.limit == 1

    release, log = asyncio.Event(), list[str]()
    tasks = [asyncio.create_task(hold(queue, release, log, f"r{i}")) for i in range(4)]
    await asyncio.sleep(0.01)
    assert log == ["r0"] and queue.waiting == 3
    queue.observe(engine_running=1, engine_waiting=0)  # requests wait here, the engine idles
    await asyncio.sleep(0.01)
    assert queue.limit == 2 and log == ["r0", "r1"]  # the room made lets one in at once
    for _ in range(20):
        queue.observe(engine_running=2, engine_waiting=0)
    assert queue.limit == 4  # grows only while requests wait here
    release.set()
    await asyncio.gather(*tasks)
    assert queue.inflight == 0 and queue.waiting == 0 and queue.limit <= queue.max_limit


async def test_a_shrunk_limit_holds_waiters_back_until_the_engine_has_room() -> None:
    queue = EngineQueue("e0", limit=3, max_queue=100, max_wait_s=5)
    releases = [asyncio.Event() for _ in range(4)]
    log = list[str]()
    tasks = [asyncio.create_task(hold(queue, releases[i], log, f"r{i}")) for i in range(4)]
    await asyncio.sleep(0.01)
    assert log == ["r0", "r1", "r2"]
    queue.observe(engine_running=3, engine_waiting=2)  # 3 -> 2
    releases[0].set()
    await asyncio.sleep(0.01)
    assert log == ["r0", "r1", "r2"] and queue.inflight == 2  # r3 not let in: 2 run already
    releases[1].set()
    await asyncio.sleep(0.01)
    assert "r3" in log  # now one leaves with two running: its slot goes to r3
    for release in releases:
        release.set()
    await asyncio.gather(*tasks)
    assert queue.inflight == 0


async def test_a_limit_shrunk_by_another_clients_burst_recovers_once_the_engine_is_free() -> None:
    clock = Clock()
    queue = EngineQueue("e0", limit=8, max_queue=100, max_wait_s=0.25, clock=clock)
    async with queue.admit():  # a request takes 0.33 s
        clock.now += 0.33
    for _ in range(30):  # someone else floods the engine: it queues for half a minute
        queue.observe(engine_running=8, engine_waiting=40)
    assert queue.limit == 1
    release, log = asyncio.Event(), list[str]()
    running = asyncio.create_task(hold(queue, release, log, "r0"))
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable):  # 0.33 s expected > 0.25 s: refused without waiting
        async with queue.admit():
            pass
    queue.observe(engine_running=1, engine_waiting=0)  # the engine is free again
    assert queue.limit == 2  # the refusal counts as pressure: the limit grows back
    release.set()
    await running


async def test_the_limit_never_drops_below_our_share_of_the_engines_batch() -> None:
    queue = EngineQueue("e0", limit=64, max_queue=100, max_wait_s=5)
    release, log = asyncio.Event(), list[str]()
    tasks = [asyncio.create_task(hold(queue, release, log, f"r{i}")) for i in range(16)]
    await asyncio.sleep(0.01)
    for _ in range(40):  # alone on an engine that runs 8 and queues the other 8 we sent
        queue.observe(engine_running=8, engine_waiting=8)
    assert queue.limit == 8  # its batch stays full; it does not shrink to 1
    for _ in range(40):  # another gateway sends as many: half of the batch is ours
        queue.observe(engine_running=8, engine_waiting=24)
    assert queue.limit == 4
    release.set()
    await asyncio.gather(*tasks)
    assert queue.inflight == 0
