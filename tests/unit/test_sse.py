"""The SSE rewriter, table-driven: how engine bytes, however they are split, come out."""

from __future__ import annotations

import json

import pytest

from server.errors import UpstreamError
from server.serving.sse import DONE, SSERewriter, error_event

CHUNK = b'data: {"model":"a@v1","choices":[{"text":"hi"}]}\n\n'
OUT = b'data: {"model":"alpha","choices":[{"text":"hi"}]}\n\n'
USAGE = b'data: {"model":"a@v1","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5}}\n\n'


def run(pieces: list[bytes], drop_usage: bool = False) -> tuple[bytes, SSERewriter]:
    rewriter = SSERewriter("alpha", drop_usage_chunk=drop_usage)
    out = b"".join(b"".join(rewriter.feed(p)) for p in pieces) + b"".join(rewriter.flush())
    return out, rewriter


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([CHUNK + DONE], OUT + DONE),
        ([CHUNK[:7], CHUNK[7:30], CHUNK[30:] + DONE], OUT + DONE),  # split anywhere
        ([bytes([b]) for b in CHUNK + DONE], OUT + DONE),  # one byte at a time
        ([CHUNK.replace(b"\n", b"\r\n") + DONE.replace(b"\n", b"\r\n")], OUT + DONE),  # CRLF
        ([CHUNK[:-1], b"\n" + DONE], OUT + DONE),  # the blank line arrives alone
        ([b": keep-alive\n\n" + CHUNK], b": keep-alive\n\n" + OUT),  # comments pass
        ([b"data: not json\n\n"], b"data: not json\n\n"),  # passed on as it came
        ([b'data: ["a@v1"]\n\n'], b'data: ["a@v1"]\n\n'),  # JSON, but not an object
        ([CHUNK[:-2]], OUT),  # no final blank line: flushed at the end
        ([b"\n\n\n\n" + CHUNK], OUT),  # empty events are dropped
        ([b"event: x\n" + CHUNK], b"event: x\n" + OUT),  # other fields are kept
    ],
)
def test_events_come_out_rewritten_however_they_were_split(
    pieces: list[bytes], expected: bytes
) -> None:
    assert run(pieces)[0] == expected


def test_usage_is_captured_and_its_chunk_dropped_unless_asked_for() -> None:
    kept, rewriter = run([CHUNK + USAGE + DONE])
    assert rewriter.usage == {"prompt_tokens": 3, "total_tokens": 5}
    assert b'"usage"' in kept and kept.endswith(DONE)
    dropped, rewriter = run([CHUNK + USAGE + DONE], drop_usage=True)
    assert dropped == OUT + DONE and rewriter.usage == {"prompt_tokens": 3, "total_tokens": 5}


def test_usage_on_a_chunk_with_choices_is_nulled_not_dropped() -> None:
    both = b'data: {"model":"a@v1","choices":[{"text":"x"}],"usage":{"total_tokens":1}}\n\n'
    out, rewriter = run([both], drop_usage=True)
    assert json.loads(out[6:]) == {"model": "alpha", "choices": [{"text": "x"}], "usage": None}
    assert rewriter.usage == {"total_tokens": 1}


def test_an_error_event_is_openais_envelope() -> None:
    event = error_event(UpstreamError("engine broke"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["error"]["code"] == "engine_error"


def test_the_first_choices_text_is_kept_when_asked_and_errors_noticed() -> None:
    chat = b'data: {"model":"a@v1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    more = (
        b'data: {"model":"a@v1","choices":[{"index":1,"delta":{"content":"other"}},'
        b'{"index":0,"delta":{"content":"lo"}}]}\n\n'
    )
    rewriter = SSERewriter("alpha", keep_text=True)
    for piece in (chat, more, CHUNK, DONE):
        rewriter.feed(piece)
    assert rewriter.text is not None and "".join(rewriter.text) == "Hellohi"
    assert not rewriter.error and SSERewriter("alpha").text is None

    rewriter.feed(error_event(UpstreamError("boom")))
    assert rewriter.error
