"""JSON on the hot path: what engines send (NaN, Infinity, unicode) in; standard JSON out."""

from __future__ import annotations

import json
import math

import pytest

from server import jsonio


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1, "b": [true, null], "c": "\\u00e9"}', {"a": 1, "b": [True, None], "c": "é"}),
        (b'{"logprob": -Infinity}', {"logprob": -math.inf}),  # Python's json.dumps writes these
        ('{"t": "\u2603"}', {"t": "\u2603"}),
    ],
)
def test_loads_reads_what_engines_send(raw: bytes | str, expected: object) -> None:
    assert jsonio.loads(raw) == expected


def test_loads_still_refuses_what_is_not_json() -> None:
    for raw in (b"{", b"not json", b""):
        with pytest.raises(ValueError):
            jsonio.loads(raw)


def test_dumps_always_writes_standard_json() -> None:
    out = jsonio.dumps({"nan": math.nan, "inf": -math.inf, "t": "é"})
    assert json.loads(out) == {"nan": None, "inf": None, "t": "é"}  # strict parsers accept it
