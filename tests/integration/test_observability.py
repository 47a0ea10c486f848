"""Dashboards and alert rules against a real Prometheus scraping a real gateway and simulated
engines under scripted traffic (loopback only, bounded in time and count).

- fleet: two engines (one external, one managed that is killed once and restarted, the
  external one stopped near the end), a canary whose loads fail, more adapters than slots,
  streaming and non-streaming requests, a GitOps promotion and rollback, and a dead gateway
  target. Then every dashboard query must return data and every alert must fire (the rules'
  `for:` shortened to 2 s; thresholds that this short run cannot reach are lowered, see
  FLEET_THRESHOLDS).
- thrash: one slot, two adapters alternating: the thrash alert fires with its real threshold.
- calm: two slots, the same traffic: no alert fires.

With LORAGATE_RENDER_DASHBOARDS=<dir>, the fleet run also renders each dashboard to a PNG
(loadtest/render_dashboards.py); docs/dashboards/ holds the committed ones.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest import dashboards
from loadtest.simengine import SimConfig, SimEngineServer
from loadtest.threaded import free_port
from server.store.layout import ValidationLimits
from server.store.manifest import Canary, Channels, Shadow, utcnow
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, set_channels
from tests.fakes import crash
from tests.prometheus import (
    PrometheusServer,
    alert_names,
    prometheus_binary,
    rules_for_test,
)
from tests.servers import GatewayServer, tiny_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="prometheus not installed: run scripts/install_prometheus.sh",
    ),
]

# Thresholds a ~40 s run cannot reach honestly (they average over minutes, or need seconds of
# latency): lowered for the fleet run only. The thrash/calm runs use the real ones.
FLEET_THRESHOLDS = {
    "LoragateAdapterThrashing": ("* 60 > 2", "* 60 > 0"),
    "LoragateSwapRatioHigh": (
        "loragate_swap_request_ratio) > 0.3",
        "loragate_swap_request_ratio) > 0",
    ),
    "LoragateEngineRestarting": (") > 2", ") > 0"),
    "LoragateRequestLatencyP99High": ("> 10", "> 0"),
    "LoragateTimeToFirstTokenP99High": ("> 2", "> 0"),
    "LoragateGatewayOverheadHigh": ("> 0.05", "> 0"),
    "LoragateCanaryLatencyWorse": ("(1.5 *", "(0 *"),
}
HOST_DEPENDENT = {
    "LoragateGatewayOverheadHigh",
    "LoragateRequestLatencyP99High",
    "LoragateTimeToFirstTokenP99High",
}
SWAP_ALERTS = {"LoragateAdapterThrashing", "LoragateSwapRatioHigh"}
ADMIN_TOKEN = "observability-test-admin-token"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is for a 1 s scrape at a 2-3 s step
RENDER_DIR = os.environ.get("LORAGATE_RENDER_DASHBOARDS")
PHASE_S = 20.0 if RENDER_DIR else 5.0  # longer phases only for the documentation PNGs
ALL_QUERIES = [q for d in dashboards.load().values() for q in dashboards.queries(d)]


# --- scripted traffic ------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests from a few threads until stopped (or a cap): weighted models, some streamed."""

    url: str
    models: dict[str, float]
    threads: int = 3
    stream_share: float = 0.3
    max_requests: int = 5000
    codes: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _count: Iterator[int] = field(default_factory=itertools.count)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for seed in range(self.threads):
            worker = threading.Thread(target=self._run, args=(seed,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        names, weights = list(self.models), list(self.models.values())
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and next(self._count) < self.max_requests:
                body = {
                    "model": rng.choices(names, weights)[0],
                    "prompt": "hello",
                    "max_tokens": 6,
                    "user": f"user-{rng.randrange(1000)}",
                }
                try:
                    if rng.random() < self.stream_share:
                        with client.stream(
                            "POST", "/v1/completions", json={**body, "stream": True}
                        ) as r:
                            r.read()
                    else:
                        r = client.post("/v1/completions", json=body)
                except httpx.HTTPError:
                    time.sleep(0.05)  # a stopped engine mid-request; keep going
                    continue
                self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1


def metrics_target(gw: GatewayServer) -> str:
    """host:port of the gateway's metrics listener, for a Prometheus scrape config."""
    return gw.metrics_url.removeprefix("http://").removesuffix("/metrics")


def alternate(url: str, models: list[str], seconds: float, until: Callable[[], bool]) -> int:
    """One request at a time, cycling through `models`, for at most `seconds` or until
    `until()` (checked every second). Returns the number of requests sent."""
    sent, deadline, next_check = 0, time.monotonic() + seconds, time.monotonic() + 1
    with httpx.Client(base_url=url, timeout=10) as client:
        for model in itertools.cycle(models):
            client.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 4})
            sent += 1
            now = time.monotonic()
            if now > deadline:
                return sent
            if now > next_check:
                next_check = now + 1
                if until():
                    return sent
    return sent


FAILING_LOADS = "^(alpha@v3|gamma@v2)$"


def make_store(root: Path, tmp: Path) -> AdapterStore:
    """alpha v1..v3 (stable v2, previous v1, canary v3 at 50 % that the gateway does not judge
    on errors, so that the canary alerts fire), beta v1+v2 (stable v1), gamma v1+v2 (canary v2
    at 50 %, rolled back by the gateway), delta v1+v2 (canary v2 in steps of 50 and 100 %: it
    advances, then the eval gate refuses the promotion: rolled back), epsilon v1+v2 (shadow
    v2, never loaded: its mirrors are dropped)."""
    store = AdapterStore(root, TINY_SPEC, ValidationLimits(max_lora_rank=8))
    layout = {"alpha": 3, "beta": 2, "gamma": 2, "delta": 2, "epsilon": 2}
    for name, count in layout.items():
        for i in range(1, count + 1):
            add_version(store, tmp, name, f"v{i}", seed=i)
    unjudged = Canary(version="v3", weight=0.5, max_error_rate_delta=None)
    judged = Canary(version="v2", weight=0.5, min_requests=20, started_at=utcnow())
    stepped = Canary(
        version="v2", weight=0.5, steps=(50, 100), dwell_s=2, min_requests=5, started_at=utcnow()
    )
    channels = {
        "alpha": Channels(stable="v2", previous="v1", canary=unjudged),
        "beta": Channels(stable="v1"),
        "gamma": Channels(stable="v1", canary=judged),
        "delta": Channels(stable="v1", canary=stepped),
        "epsilon": Channels(stable="v1", shadow=Shadow(version="v2", share=1.0)),
    }
    for name in layout:
        chosen = channels.get(name, Channels(stable="v1"))
        store.update_channels(name, set_channels(chosen), actor="setup", action="promote")
    return store


# --- the fleet run ---------------------------------------------------------------------------


@dataclass
class FleetRun:
    prom: PrometheusServer
    gateway: GatewayServer
    start: float
    end: float
    traffic: Traffic


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRun]:
    tmp = tmp_path_factory.mktemp("fleet")
    store = make_store(tmp / "store", tmp)
    sim_args = {
        "model": "tiny-base",
        "max_loras": 2,
        "max_cpu_loras": 3,
        "load_ms": 80.0,
        "ttft_ms": 2.0,
        "token_ms": 2.0,
        "load_pauses_decoding": False,
        "faults": {"fail_load": FAILING_LOADS},
    }
    managed_port = free_port()
    with SimEngineServer(SimConfig.model_validate(sim_args)) as engine0:
        settings = tiny_settings(
            store.root,
            [],
            tmp,
            rollback_window_s=0,
            reconcile_interval_s=1.0,
            swap_ratio_window_s=20.0,
            log_dir=tmp / "logs",
            admin_token=ADMIN_TOKEN,
            engines=[
                {"name": "engine-0", "url": engine0.url, "max_cpu_loras": 3},
                {
                    "name": "engine-1",
                    "max_cpu_loras": 3,
                    "managed": {
                        "kind": "sim",
                        "model": "tiny-base",
                        "port": managed_port,
                        "max_loras": 2,
                        "restart_backoff_s": 0.2,
                        "ready_timeout_s": 30,
                        "extra_args": [
                            "--load-ms",
                            "80",
                            "--ttft-ms",
                            "2",
                            "--token-ms",
                            "2",
                            "--fail-load",
                            FAILING_LOADS,
                        ],
                    },
                },
            ],
        )
        with GatewayServer(settings) as gw:
            _wait_engines_up(gw, 2)
            targets = {
                "loragate": [metrics_target(gw), f"127.0.0.1:{free_port()}"],
                "vllm": [engine0.url.removeprefix("http://"), f"127.0.0.1:{managed_port}"],
            }
            rules = rules_for_test(replace=FLEET_THRESHOLDS)
            with PrometheusServer(tmp / "prometheus", targets, rules) as prom:
                assert prom.wait_until(lambda: len(prom.api.query("up")) == 4, timeout_s=15)
                yield _run_fleet(prom, gw, engine0, store)


def _wait_engines_up(gw: GatewayServer, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len(httpx.get(f"{gw.url}/readyz").json()["engines_up"]) < count:
        assert time.monotonic() < deadline, "engines did not come up"
        time.sleep(0.2)


def _run_fleet(
    prom: PrometheusServer, gw: GatewayServer, engine0: SimEngineServer, store: AdapterStore
) -> FleetRun:
    models = {
        "alpha": 4,
        "beta": 2,
        "gamma": 1,
        "delta": 1,
        "epsilon": 1,
        "alpha@v1": 0.5,
        "tiny-base": 1,
    }
    start = time.time()
    traffic = Traffic(gw.url, models).start()
    try:
        time.sleep(PHASE_S)
        crash(gw.runtime.supervisors[0])  # a crash: restarted by the supervisor
        time.sleep(PHASE_S)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        promoted = httpx.post(
            f"{gw.url}/admin/adapters/beta/promote",
            headers=admin,
            json={"version": "v2", "force": True},
            timeout=30,
        )
        assert promoted.status_code == 200, promoted.text
        time.sleep(PHASE_S)
        rolled_back = httpx.post(f"{gw.url}/admin/adapters/beta/rollback", headers=admin)
        assert rolled_back.status_code == 200, rolled_back.text
        time.sleep(PHASE_S)
        engine0.close()  # an engine goes away for good
        expected = set(alert_names())
        prom.wait_until(lambda: expected <= prom.api.firing(), timeout_s=40)
    finally:
        traffic.stop()
    return FleetRun(prom, gw, start, time.time(), traffic)


@pytest.mark.parametrize("query", ALL_QUERIES, ids=[q.id for q in ALL_QUERIES])
def test_dashboard_query_returns_data(fleet: FleetRun, query: dashboards.Query) -> None:
    expr = dashboards.expand(query.expr, rate_interval=RATE_INTERVAL, range_="1m")
    if query.instant:
        series = fleet.prom.api.query(expr, at=fleet.end)
    else:
        series = fleet.prom.api.query_range(expr, fleet.start, fleet.end, step=2)
    finite = [v for s in series for _, v in s.points if v == v and abs(v) != float("inf")]
    assert finite, f"{query.id}: no data for {expr}"


@pytest.mark.parametrize("alert", alert_names())
def test_alert_fires_in_fleet_run(fleet: FleetRun, alert: str) -> None:
    rules = {r["name"]: r for r in fleet.prom.api.rules()}
    assert rules[alert]["health"] == "ok", rules[alert].get("lastError")
    assert rules[alert]["state"] == "firing", (alert, rules[alert]["state"], fleet.traffic.codes)
    assert fleet.prom.api.query(rules[alert]["query"]), f"{alert}: expression returns no data"


def test_recording_rules_healthy_and_render(fleet: FleetRun) -> None:
    for rule in fleet.prom.api.rules():
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    if RENDER_DIR:
        from loadtest.render_dashboards import render_all

        written = render_all(
            fleet.prom.api,
            fleet.start,
            fleet.end,
            Path(RENDER_DIR),
            step=2,
            scrape_interval_s=1,
            interval="10s",
        )
        assert len(written) == len(dashboards.load())


# --- thrash and calm -------------------------------------------------------------------------


def _swap_run(
    tiny_store: AdapterStore, tmp: Path, slots: int, seconds: float, stop_when_firing: bool
) -> tuple[set[str], list[Any], int]:
    sim = SimConfig(
        model="tiny-base", max_loras=1, max_cpu_loras=slots, load_ms=20.0, ttft_ms=1.0, token_ms=1.0
    )
    with SimEngineServer(sim) as engine:
        settings = tiny_settings(
            tiny_store.root,
            [],
            tmp,
            rollback_window_s=0,
            reconcile_interval_s=1.0,
            swap_ratio_window_s=20.0,
            engines=[{"url": engine.url, "max_cpu_loras": slots}],
        )
        with GatewayServer(settings) as gw:
            targets = {
                "loragate": [metrics_target(gw)],
                "vllm": [engine.url.removeprefix("http://")],
            }
            with PrometheusServer(tmp / "prometheus", targets, rules_for_test()) as prom:

                def firing() -> bool:
                    return stop_when_firing and prom.api.firing() >= SWAP_ALERTS

                sent = alternate(gw.url, ["alpha", "beta"], seconds, firing)
                time.sleep(3)  # the last scrapes and evaluations
                thrash = prom.api.query(
                    "sum by (adapter) (rate(loragate_adapter_thrash_total[5m])) * 60"
                )
                return {a["labels"]["alertname"] for a in prom.api.alerts()}, thrash, sent


def test_thrash_alert_fires_when_one_slot_serves_two_adapters(
    tiny_store: AdapterStore, tmp_path: Path
) -> None:
    active, thrash, sent = _swap_run(
        tiny_store, tmp_path, slots=1, seconds=30, stop_when_firing=True
    )
    assert "LoragateAdapterThrashing" in active, (active, sent)
    assert "LoragateSwapRatioHigh" in active, active
    assert {s.labels["adapter"] for s in thrash} == {"alpha", "beta"}
    assert min(s.last() for s in thrash) > 2  # reloads per minute, the real threshold


def test_no_alert_when_two_slots_serve_two_adapters(
    tiny_store: AdapterStore, tmp_path: Path
) -> None:
    active, thrash, sent = _swap_run(
        tiny_store, tmp_path, slots=2, seconds=12, stop_when_firing=False
    )
    assert sent > 50, sent
    # Neither firing nor pending. The latency alerts are left out: on a shared 2-core machine
    # a few slow requests can cross their real thresholds whatever the scenario does.
    assert active - HOST_DEPENDENT == set(), active
    assert thrash == []
