"""Canaries that roll themselves back, over real HTTP: simulated engines (requests to the
canary failing through the sim's `fail_models`), gateways, one store on disk.

Each test sends its traffic, then waits for the canary controller (every 0.2 s here) to act;
waits are bounded by the canary's window, never by a measured duration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.simengine import SimEngineServer
from server.store.manifest import Channels, EvalReport
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.integration.conftest import ADMIN_TOKEN
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = {"canary_interval_s": 0.2}
FAIL_V3 = {"fail_requests": 0.2, "fail_models": "^alpha@v3$"}  # a fifth of v3's requests: 500


def admin(gw: GatewayServer, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin{path}", headers=AUTH, timeout=30, **kw)


def send(gw: GatewayServer, n: int, model: str = "alpha") -> dict[str, int]:
    """`n` completions, one at a time; the count of each X-Adapter-Version (or status)."""
    seen: dict[str, int] = {}
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for _ in range(n):
            r = client.post(
                "/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}
            )
            key = (
                r.headers.get("x-adapter-version", "")
                if r.status_code == 200
                else str(r.status_code)
            )
            seen[key] = seen.get(key, 0) + 1
    return seen


@pytest.fixture
def traffic() -> Iterator[Callable[[GatewayServer], None]]:
    """Start background traffic to a gateway (until the test ends)."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(gw: GatewayServer) -> None:
        def loop() -> None:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                while not stop.is_set():
                    body = {"model": "alpha", "prompt": "hi", "max_tokens": 2}
                    client.post("/v1/completions", json=body)

        threads.append(threading.Thread(target=loop, daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(10)


def channels(store: AdapterStore) -> Channels:
    return store.scan().adapters["alpha"].channels


def weight(store: AdapterStore) -> float | None:
    """alpha's canary weight on disk (None: no canary)."""
    canary = channels(store).canary
    return None if canary is None else canary.weight


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def audits(gw: GatewayServer, action: str) -> list[dict[str, Any]]:
    entries = admin(gw, "GET", "/audit", params={"limit": 1000}).json()["entries"]
    return [e for e in entries if e["action"] == action]


def start_canary(gw: GatewayServer, **fields: Any) -> httpx.Response:
    response = admin(gw, "POST", "/adapters/alpha/canary", json={"version": "v3", **fields})
    assert response.status_code == 200, response.text
    return response


def test_a_canary_failing_a_fifth_of_its_requests_is_rolled_back_within_its_window(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway(settings=FAST, faults=FAIL_V3)
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    window_s = 30.0
    started = start_canary(gw, weight=0.5, min_requests=40, window_s=window_s)
    canary = started.json()["channels"]["canary"]
    assert (canary["max_error_rate_delta"], canary["min_requests"]) == (0.02, 40)
    t0 = time.monotonic()

    seen = send(gw, 200)

    assert seen["502"] > 0 and seen["alpha@v2"] > 0  # the canary failed some (engine 500)
    wait_for(lambda: weight(tiny_store) == 0, window_s, "the rollback")
    assert time.monotonic() - t0 < window_s
    (rollback,) = audits(gw, "canary-rollback")
    assert rollback["actor"] == "canary-analysis"
    assert (rollback["from_version"], rollback["to_version"]) == ("v3", None)
    assert "5xx ratio" in rollback["detail"] and "vs stable 0.0%" in rollback["detail"]
    assert "> max_error_rate_delta 2.0" in rollback["detail"]
    assert gw.metric("loragate_canary_rollbacks_total", adapter="alpha", reason="error_rate") == 1
    assert set(send(gw, 20)) == {"alpha@v2"}  # every request back on stable
    canary = channels(tiny_store).canary
    assert canary is not None and canary.version == "v3"  # the entry stays, at weight 0


def test_a_healthy_canary_is_not_rolled_back(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway(settings=FAST)
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    start_canary(gw, weight=0.5, min_requests=40, window_s=30)

    seen = send(gw, 300)
    time.sleep(1.0)  # five analysis ticks with every request in the window

    assert set(seen) == {"alpha@v2", "alpha@v3"}
    assert audits(gw, "canary-rollback") == []
    assert weight(tiny_store) == 0.5
    assert gw.metric("loragate_canary_rollbacks_total", adapter="alpha", reason="error_rate") == 0


def test_two_gateways_sharing_a_store_roll_back_once(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    first, _ = admin_gateway(settings=FAST, faults=FAIL_V3)
    second, _ = admin_gateway(settings=FAST, faults=FAIL_V3)
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    start_canary(first, weight=0.5, min_requests=40, window_s=30)
    snapshot = second.runtime.store  # its snapshot is replaced on every rescan

    def second_sees_it() -> bool:
        return snapshot.snapshot.adapters["alpha"].channels.canary is not None

    wait_for(second_sees_it, 5, "the second gateway sees the canary")

    both = [threading.Thread(target=send, args=(gw, 200)) for gw in (first, second)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(60)
    wait_for(lambda: weight(tiny_store) == 0, 30, "the rollback")
    time.sleep(1.0)  # both controllers have judged the traffic they saw

    assert len(audits(first, "canary-rollback")) == 1
    counts = [
        gw.metric("loragate_canary_rollbacks_total", adapter="alpha", reason="error_rate")
        for gw in (first, second)
    ]
    assert sorted(counts) == [0, 1]  # one wrote it; the other found the revision moved


def add_evals(store: AdapterStore, **scores: float) -> None:
    for version, score in scores.items():
        report = EvalReport(dataset="heldout", metric="exact_match", score=score, n=50)
        store.add_eval("alpha", version, report, actor="ci")


def test_progressive_steps_advance_to_a_promotion_and_a_failing_step_rolls_back(
    admin_gateway: Start,
    tiny_store: AdapterStore,
    tmp_path: Path,
    traffic: Callable[[GatewayServer], None],
) -> None:
    gw, (sim,) = admin_gateway(settings=FAST)
    for version, seed in (("v3", 3), ("v4", 4)):
        add_version(tiny_store, tmp_path, "alpha", version, seed=seed)
    add_evals(tiny_store, v2=0.5, v3=0.6, v4=0.7)
    steps = {"steps": [20, 50, 100], "dwell_s": 1, "min_requests": 20, "window_s": 60}
    refused = admin(gw, "POST", "/adapters/alpha/canary", json={"version": "v1", **steps})
    assert refused.status_code == 409 and "eval gate refuses" in refused.json()["error"]["message"]

    start_canary(gw, **steps)
    assert weight(tiny_store) == 0.2
    traffic(gw)
    wait_for(lambda: channels(tiny_store).stable == "v3", 30, "the promotion after 100 %")

    promoted = channels(tiny_store)
    assert (promoted.previous, promoted.canary) == ("v2", None)
    steps_taken = [e["detail"] for e in audits(gw, "canary-step")]
    assert [d.split(": ")[1].split(" held")[0] for d in steps_taken] == ["20 %", "50 %"]
    assert [d.rsplit("; now ", 1)[1] for d in steps_taken] == ["50 %", "100 %"]
    (promotion,) = [e for e in audits(gw, "promote") if e["actor"] == "canary-analysis"]
    assert (promotion["from_version"], promotion["to_version"]) == ("v2", "v3")
    assert "beats stable v2" in promotion["detail"]  # through the eval gate
    assert gw.metric("loragate_canary_steps_total", adapter="alpha") == 3

    add_evals(tiny_store, v3=0.6)  # v4 must beat the new stable: it does (0.7)
    start_canary(gw, **{**steps, "version": "v4", "dwell_s": 5})  # time to break the 2nd step
    wait_for(lambda: weight(tiny_store) == 0.5, 30, "the second step")
    httpx.post(f"{sim.url}/sim/faults", json={"fail_requests": 0.5, "fail_models": "^alpha@v4$"})
    wait_for(lambda: weight(tiny_store) == 0, 30, "the rollback at 50 %")

    after = channels(tiny_store)
    assert after.stable == "v3" and after.canary is not None and after.canary.version == "v4"
    (rollback,) = audits(gw, "canary-rollback")
    assert "rolled back from 50.0% to 0: 5xx ratio" in rollback["detail"]


def test_a_promotion_the_gate_refuses_after_the_last_step_rolls_the_canary_back(
    admin_gateway: Start,
    tiny_store: AdapterStore,
    tmp_path: Path,
    traffic: Callable[[GatewayServer], None],
) -> None:
    gw, _ = admin_gateway(settings=FAST)
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    add_evals(tiny_store, v2=0.5, v3=0.6)
    start_canary(gw, steps=[50, 100], dwell_s=0.5, min_requests=10, window_s=60)
    add_evals(tiny_store, v3=0.4)  # a new eval, while the canary runs: v3 no longer beats v2

    traffic(gw)
    wait_for(lambda: weight(tiny_store) == 0, 30, "the rollback at the end of the steps")

    assert channels(tiny_store).stable == "v2"
    (rollback,) = audits(gw, "canary-rollback")
    assert (
        "rolled back from 100.0% to 0: promotion after the last step refused"
        in (rollback["detail"])
    )
    assert "0.4000" in rollback["detail"] and "0.5000" in rollback["detail"]
    assert gw.metric("loragate_canary_rollbacks_total", adapter="alpha", reason="gate") == 1
