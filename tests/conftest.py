from __future__ import annotations

from pathlib import Path

import pytest

from server.store.layout import ValidationLimits
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    s = AdapterStore(tmp_path / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    s.scan()
    return s
