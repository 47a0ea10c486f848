from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.errors import InvalidName
from server.store.refs import NAME_RE, AdapterRef, check_name, version_key

names = st.from_regex(NAME_RE, fullmatch=True)
versions = st.one_of(
    st.integers(0, 10**6).map(lambda n: f"v{n}"),
    st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)).map(
        lambda t: ".".join(map(str, t))
    ),
)


@given(names, versions)
def test_ref_roundtrip(name: str, version: str) -> None:
    ref = AdapterRef.parse(f"{name}@{version}")
    assert (ref.name, ref.version) == (name, version)
    assert AdapterRef.parse(str(ref)) == ref


@given(st.text(max_size=80))
def test_parse_accepts_exactly_the_grammar(text: str) -> None:
    name, _, version = text.partition("@")
    try:
        ref = AdapterRef.parse(text)
    except InvalidName:
        return
    # Whatever parses is path-safe: no separators, no dots-only, no uppercase.
    assert NAME_RE.fullmatch(ref.name)
    assert "/" not in text and "\\" not in text and ".." not in name
    assert ref.version is None or ref.version == version


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Sentiment",
        "-x",
        "_x",
        "a/b",
        "../etc",
        "a" * 64,
        "sent iment",
        "x@",
        "x@v",
        "x@V2",
        "x@v01",
        "x@1.2",
        "x@1.2.3+build",
        "x@1.2.3-",
        "x@v1@v2",
        "x@../v1",
        "x@v1/..",
        "é",
    ],
)
def test_bad_spellings_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        AdapterRef.parse(bad)


def test_name_limit_is_63() -> None:
    assert check_name("a" * 63)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("v1", "v2"),
        ("v2", "v10"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-beta"),
        ("1.0.0-rc.2", "1.0.0-rc.10"),
        ("0.9.9", "1.0.0"),
        ("v1", "1.0.1"),
        ("1.2.3", "1.10.0"),
    ],
)
def test_version_order(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
