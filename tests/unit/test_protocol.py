"""Parsing OpenAI requests from raw JSON bytes: every client mistake is a 400 naming the
parameter (table-driven, plus a property test: no input makes it raise anything else)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import InvalidRequest
from server.protocol.openai import ChatCompletionRequest, CompletionRequest, Kind, parse_request

OK_COMPLETION: dict[str, Any] = {"model": "a", "prompt": "hi"}
OK_CHAT: dict[str, Any] = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}


def raw(base: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**base, **changes}).encode()


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        # Strict types, as OpenAI checks them.
        ("completions", raw(OK_COMPLETION, max_tokens="10"), "max_tokens"),
        ("completions", raw(OK_COMPLETION, max_tokens=1.5), "max_tokens"),
        ("completions", raw(OK_COMPLETION, max_tokens=True), "max_tokens"),
        ("completions", raw(OK_COMPLETION, max_tokens=0), "max_tokens"),
        ("completions", raw(OK_COMPLETION, max_tokens=2**64), "max_tokens"),
        ("completions", raw(OK_COMPLETION, stream="yes"), "stream"),
        ("completions", raw(OK_COMPLETION, n="2"), "n"),
        ("completions", raw(OK_COMPLETION, n=0), "n"),
        ("completions", raw(OK_COMPLETION, temperature="hot"), "temperature"),
        ("completions", raw(OK_COMPLETION, temperature=-1), "temperature"),
        ("completions", raw(OK_COMPLETION, top_p=0), "top_p"),
        ("completions", raw(OK_COMPLETION, logit_bias={"1": "x"}), "logit_bias.1"),
        ("completions", raw(OK_COMPLETION, stop=["x"] * 17), "stop"),
        ("completions", raw(OK_COMPLETION, model=5), "model"),
        ("completions", raw(OK_COMPLETION, user="u" * 257), "user"),
        # Non-finite numbers, in typed and in forwarded fields.
        ("completions", b'{"prompt": "hi", "temperature": 1e400}', "temperature"),
        ("completions", b'{"prompt": "hi", "temperature": NaN}', "temperature"),
        ("completions", b'{"prompt": "hi", "top_p": -Infinity}', "top_p"),
        ("completions", b'{"prompt": "hi", "min_p": NaN}', "min_p"),
        ("completions", b'{"prompt": "hi", "vllm_xargs": {"a": [1, 1e999]}}', "vllm_xargs.a.1"),
        ("chat", b'{"messages": [{"role": "user", "content": "x", "w": NaN}]}', "messages.0.w"),
        # stream_options: only the known shape, and only when streaming.
        ("completions", raw(OK_COMPLETION, stream=True, stream_options="x"), "stream_options"),
        (
            "completions",
            raw(OK_COMPLETION, stream=True, stream_options={"include_usage": "yes"}),
            "stream_options.include_usage",
        ),
        (
            "completions",
            raw(OK_COMPLETION, stream=True, stream_options={"bogus": 1}),
            "stream_options.bogus",
        ),
        ("completions", raw(OK_COMPLETION, stream_options={"include_usage": True}), None),
        # Prompts of every wrong shape.
        ("completions", raw(OK_COMPLETION, prompt=[]), "prompt"),
        ("completions", raw(OK_COMPLETION, prompt=[[]]), "prompt"),
        ("completions", raw(OK_COMPLETION, prompt=[-1]), "prompt"),
        ("completions", raw(OK_COMPLETION, prompt=[1, "a"]), "prompt"),
        ("completions", raw(OK_COMPLETION, prompt={"text": "hi"}), "prompt"),
        ("completions", raw(OK_COMPLETION, prompt=None), "prompt"),
        ("completions", json.dumps({"model": "a"}).encode(), "prompt"),
        # Chat messages.
        ("chat", raw(OK_CHAT, messages=[]), "messages"),
        ("chat", raw(OK_CHAT, messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        ("chat", raw(OK_CHAT, messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        ("chat", raw(OK_CHAT, messages=[{"content": "x"}]), "messages.0.role"),
        ("chat", raw(OK_CHAT, messages=["hi"]), "messages.0"),
        (
            "chat",
            raw(OK_CHAT, messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages.0.content.0",
        ),
        ("chat", raw(OK_CHAT, logprobs=1), "logprobs"),
        ("chat", raw(OK_CHAT, max_completion_tokens="5"), "max_completion_tokens"),
        # Not JSON, or not an object.
        ("completions", b'{"prompt": "\\ud800"}', None),  # a lone surrogate
        ("chat", b'{"messages": [{"role": "user", "content": "\\udfff x"}]}', None),
        ("completions", b"{", None),
        ("completions", b"", None),
        ("completions", b"[]", None),
        ("completions", b"null", None),
        ("completions", b'"prompt"', None),
        ("completions", b"\xff\xfe", None),
        ("completions", b"[" * 100_000 + b"]" * 100_000, None),  # nesting bomb
    ],
)
def test_client_mistakes_are_400s_naming_the_parameter(
    kind: Kind, body: bytes, param: str | None
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request(kind, body)
    assert raised.value.status == 400 and raised.value.param == param
    assert raised.value.message


def test_valid_requests_keep_unknown_fields_for_the_engine() -> None:
    req = parse_request("completions", raw(OK_COMPLETION, top_k=5, temperature=1, seed=-1))
    assert isinstance(req, CompletionRequest)
    assert req.engine_body() == {"model": "a", "prompt": "hi", "top_k": 5, "temperature": 1.0,
                                 "seed": -1}  # fmt: skip
    chat = parse_request("chat", raw(OK_CHAT, stream=True, stream_options={"include_usage": True}))
    assert isinstance(chat, ChatCompletionRequest)
    assert chat.engine_body()["stream_options"] == {"include_usage": True}
    for prompt in ("", ["a", "b"], [1, 2], [[1], [2, 3]]):
        assert parse_request("completions", raw(OK_COMPLETION, prompt=prompt))


def test_choices_count_n_and_best_of() -> None:
    req = parse_request("completions", raw(OK_COMPLETION, n=2, best_of=5))
    assert req.choices == 5


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["model", "prompt", "messages", "max_tokens", "n", "stream", "stream_options", "temperature",
     "logprobs", "best_of", "stop", "logit_bias", "top_k", "user", "seed"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["completions", "chat"]), body=st.dictionaries(FIELDS, JSON))
def test_any_json_is_parsed_or_refused_with_a_400(kind: Kind, body: dict[str, Any]) -> None:
    data = json.dumps(body, allow_nan=True).encode()
    with contextlib.suppress(InvalidRequest):
        parse_request(kind, data)
