"""JSON on the hot path: orjson (several times faster than the standard library), with the
standard library as the fallback for what orjson refuses but engines may send: `NaN` and
`Infinity` (Python's `json.dumps` writes them by default). Encoding always produces standard
JSON (orjson writes a non-finite float as null)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises `ValueError` if it is not JSON even by Python's lenient rules."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
