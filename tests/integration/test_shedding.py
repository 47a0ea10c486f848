"""Overload: past an engine's admission queue the gateway sheds at once (503 + Retry-After)
and every request it accepts is served; nothing hangs, nothing is dropped silently."""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from collections.abc import Callable

import httpx

from loadtest.simengine import SimEngineServer
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]


def complete(url: str) -> httpx.Response:
    body = {"model": "alpha", "prompt": "x", "max_tokens": 10}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=30)


def test_past_the_queue_requests_are_shed_with_retry_after_and_accepted_ones_served(
    gateway: Start,
) -> None:
    gw, (sim,) = gateway(
        engine={"max_inflight": 2, "max_queue": 2},
        settings={"max_queue_wait_s": 30},
        token_ms=300,  # ~3 s per request: all ten arrive while the first ones run
    )
    assert complete(gw.url).status_code == 200  # warm: alpha resident, service time known
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: complete(gw.url), range(10)))
    codes = Counter(a.status_code for a in answers)
    assert codes[200] == 4 and codes[503] == 6, codes  # 2 running + 2 queued; the rest shed
    for shed in (a for a in answers if a.status_code == 503):
        assert int(shed.headers["retry-after"]) >= 1
        assert shed.json()["error"]["code"] == "unavailable"
        assert "at capacity" in shed.json()["error"]["message"]
    stats = httpx.get(f"{sim.url}/sim/stats").json()
    assert sum(stats["requests"].values()) == 5  # the warm-up and the 4 accepted, no more


def test_a_queued_request_that_waits_too_long_is_refused_not_left_hanging(
    gateway: Start,
) -> None:
    gw, _ = gateway(
        engine={"max_inflight": 1, "max_queue": 5},
        settings={"max_queue_wait_s": 0.3},
        token_ms=100,  # ~1 s per request; no service time known yet, so it is queued
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: complete(gw.url), range(2)))
    assert sorted(a.status_code for a in answers) == [200, 503]
