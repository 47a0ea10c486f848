"""Settings refuse at start-up what would fail later: each error names the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.settings import EngineConfig, Settings


@pytest.mark.parametrize(
    ("engine", "fragment"),
    [
        ({}, "exactly one of"),
        ({"url": "http://e:8000", "dns": "e:8000"}, "exactly one of"),
        ({"managed": {"max_loras": 5}, "max_cpu_loras": 4}, "must not exceed max_cpu_loras"),
        ({"url": "http://e:8000", "bogus": 1}, "bogus"),
    ],
)
def test_bad_engine_entries_are_refused(engine: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        EngineConfig(**engine)


def test_a_managed_engine_fits_its_slots_by_default() -> None:
    engine = EngineConfig(managed={})
    assert engine.managed is not None and engine.managed.max_loras <= engine.max_cpu_loras
    assert Settings().with_demo_engine().engines[0].managed is not None


@pytest.mark.parametrize(
    "field", [{"max_queue_wait_s": -1}, {"drain_grace_s": -1}, {"metrics_port": 70000}]
)
def test_bad_values_are_refused(field: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(field))):
        Settings(**field)
