"""Mirrors (server/serving/shadow.py) over a real registry, placement and admission queues in
front of a fake engine: which requests are mirrored, what the candidate is sent, and every
reason a mirror is dropped instead of slowing the primary traffic."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.engines.admission import Admission, EngineQueue
from server.engines.placement import Placement
from server.engines.registry import Registry
from server.metrics import Metrics
from server.protocol.openai import CompletionRequest
from server.serving.prepare import Caps
from server.serving.routing import Target
from server.serving.shadow import ShadowTraffic
from server.serving.tenants import Tenant
from server.store.manifest import Channels
from server.store.manifest import Shadow as ShadowChannel
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version, set_channels
from tests.fakes import FakeEngine

CAPS = Caps(max_tokens=64, max_n=4, max_logprobs=5, max_prompt_chars=1000, max_prompt_tokens=100)


@dataclass
class RecordingEngine(FakeEngine):
    bodies: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0

    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        await asyncio.sleep(self.delay_s)
        return await super().generate(path, body)


@dataclass
class Sink:
    records: list[dict[str, Any]] = field(default_factory=list)
    drops: int = 0

    def record_shadow(
        self, candidate: AdapterVersion, reference: AdapterVersion, **kw: Any
    ) -> None:
        self.records.append(
            {"candidate": candidate.engine_name, "reference": reference.engine_name, **kw}
        )

    def dropped(self, candidate: AdapterVersion, reference: AdapterVersion) -> None:
        self.drops += 1


@dataclass
class Setup:
    shadow: ShadowTraffic
    engine: RecordingEngine
    sink: Sink
    registry: Registry
    queue: EngineQueue
    stable: AdapterVersion
    candidate: AdapterVersion
    metrics: Metrics


@pytest.fixture
def setup(store: AdapterStore, tmp_path: Path) -> Setup:
    stable = add_version(store, tmp_path, "s", "v1", prompt_template={"completion": "S1 {input}"})
    template = {"completion": "S2 {input}"}
    candidate = add_version(store, tmp_path, "s", "v2", seed=1, prompt_template=template)
    channels = Channels(stable="v1", shadow=ShadowChannel(version="v2", share=1.0))
    store.update_channels("s", set_channels(channels), actor="t", action="shadow")
    engine = RecordingEngine(name="e0")
    metrics = Metrics()
    registry = Registry({"e0": (engine, 4)}, metrics)
    admission = Admission(max_wait_s=1.0)
    admission.add("e0", limit=8, max_queue=8)
    queue = admission.queues["e0"]
    sink = Sink()
    engines: dict[str, Any] = {"e0": engine}
    placement = Placement(registry)
    shadow = ShadowTraffic(
        lambda: store.snapshot,
        placement,
        admission,
        engines,
        metrics,
        CAPS,
        sink,
        max_inflight=2,
        rng=random.Random(0),
    )
    return Setup(shadow, engine, sink, registry, queue, stable, candidate, metrics)


def request(stream: bool = False) -> CompletionRequest:
    return CompletionRequest(model="s", prompt="hello", max_tokens=3, stream=stream, user="u1")


def target(version: AdapterVersion, channel: str = "stable") -> Target:
    return Target("s", version.engine_name, version, channel)


def count(s: Setup, outcome: str) -> float:
    value = s.metrics.registry.get_sample_value(
        "loragate_shadow_requests_total", {"adapter": "s", "outcome": outcome}
    )
    return value or 0.0


async def drain(s: Setup) -> None:
    await asyncio.gather(*list(s.shadow._tasks))


async def test_a_mirror_sends_the_candidate_its_own_prompt_never_streamed(setup: Setup) -> None:
    s = setup
    await s.registry.prewarm("e0", s.candidate)
    mirror = s.shadow.plan("completions", request(stream=True), Tenant(), target(s.stable))
    assert mirror is not None

    mirror.send("[s@v1] answer", 0.01)
    await drain(s)

    (body,) = s.engine.bodies
    assert body["model"] == "s@v2" and body["prompt"] == "S2 hello"
    assert body["stream"] is False and "stream_options" not in body
    assert (body["max_tokens"], body["user"]) == (3, "u1")
    (record,) = s.sink.records
    assert (record["candidate"], record["reference"], record["failed"]) == ("s@v2", "s@v1", False)
    assert (record["text"], record["reference_text"]) == ("[s@v2]", "[s@v1] answer")
    assert count(s, "answered") == 1 and s.queue.inflight == 0
    assert s.registry.inflight("e0") == 0  # the candidate's hold was released


@pytest.mark.parametrize("channel", ["canary", "pinned"])
async def test_only_the_stables_traffic_is_mirrored(setup: Setup, channel: str) -> None:
    assert (
        setup.shadow.plan("completions", request(), Tenant(), target(setup.stable, channel)) is None
    )


async def test_the_share_is_a_draw(store: AdapterStore, setup: Setup) -> None:
    channels = Channels(stable="v1", shadow=ShadowChannel(version="v2", share=0.25))
    store.update_channels("s", set_channels(channels), actor="t", action="shadow")
    plans = [
        setup.shadow.plan("completions", request(), Tenant(), target(setup.stable))
        for _ in range(2000)
    ]
    assert 400 < sum(p is not None for p in plans) < 600


async def test_a_cold_candidate_is_dropped_never_loaded(setup: Setup) -> None:
    s = setup
    mirror = s.shadow.plan("completions", request(), Tenant(), target(s.stable))
    assert mirror is not None
    mirror.send("x", 0.01)
    await drain(s)
    assert s.engine.loads() == [] and s.engine.bodies == []
    assert count(s, "dropped_cold") == 1 and s.sink.drops == 1


async def test_a_busy_engine_or_a_full_limit_drops_the_mirror(setup: Setup) -> None:
    s = setup
    await s.registry.prewarm("e0", s.candidate)
    s.queue.inflight = 7  # one of eight slots free: under a quarter to spare
    mirror = s.shadow.plan("completions", request(), Tenant(), target(s.stable))
    assert mirror is not None
    mirror.send("x", 0.01)
    await drain(s)
    assert count(s, "dropped_busy") == 1 and s.engine.bodies == []

    s.queue.inflight = 0
    s.engine.delay_s = 0.05
    for _ in range(3):
        mirror.send("x", 0.01)  # two run (max_inflight), the third is dropped at once
    await drain(s)
    assert count(s, "dropped_limit") == 1 and count(s, "answered") == 2


async def test_no_shadow_or_a_shadow_of_the_stable_itself_plans_nothing(
    store: AdapterStore, setup: Setup
) -> None:
    both = ShadowChannel(version="v2", share=1.0)
    for channels in (Channels(stable="v1"), Channels(stable="v2", shadow=both)):
        store.update_channels("s", set_channels(channels), actor="t", action="shadow")
        version = setup.stable if channels.stable == "v1" else setup.candidate
        assert setup.shadow.plan("completions", request(), Tenant(), target(version)) is None
