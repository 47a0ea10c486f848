"""The first request's extra time after an adapter load (server/serving/swap_cost.py), over a
real registry of fake engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engines.registry import Registry
from server.metrics import Metrics
from server.serving.swap_cost import SwapCost
from server.store.store import AdapterStore
from tests.factory import add_version
from tests.fakes import FakeEngine


def observations(metrics: Metrics, measure: str) -> tuple[float, float]:
    """(count, sum) of the extra-time histogram on e0."""
    labels = {"engine": "e0", "measure": measure}
    name = "loragate_adapter_first_request_extra_seconds"
    count = metrics.registry.get_sample_value(f"{name}_count", labels) or 0.0
    total = metrics.registry.get_sample_value(f"{name}_sum", labels) or 0.0
    return count, total


async def test_first_requests_after_a_load_or_a_prewarm_are_measured(
    store: AdapterStore, tmp_path: Path
) -> None:
    a, b = add_version(store, tmp_path, "a", "v1"), add_version(store, tmp_path, "b", "v1", seed=1)
    metrics = Metrics()
    registry = Registry({"e0": (FakeEngine(name="e0"), 4)}, metrics)
    cost = SwapCost(registry, metrics)

    before = cost.resident_on(a)
    assert before == frozenset()
    await registry.acquire("e0", a)  # loads it
    cost.observe("e0", a, before, 0.50, streamed=True)  # first, but no resident mean yet
    for seconds in (0.10, 0.10, 0.10):
        cost.observe("e0", a, cost.resident_on(a), seconds, streamed=True)  # resident requests
    assert observations(metrics, "first_byte") == (0, 0)

    await registry.prewarm("e0", b)  # resident, never served by this gateway
    cost.observe("e0", b, cost.resident_on(b), 0.40, streamed=True)
    count, total = observations(metrics, "first_byte")
    assert count == 1 and total == pytest.approx(0.40 - 0.10)

    cost.observe("e0", b, cost.resident_on(b), 0.05, streamed=True)  # now resident: no sample
    cost.observe("e0", None, frozenset(), 9.0, streamed=True)  # the base model: never
    assert observations(metrics, "first_byte")[0] == 1
    assert observations(metrics, "total") == (0, 0)  # whole answers have their own mean
