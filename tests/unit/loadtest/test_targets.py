"""Targets from specs and flags: names, URLs, model naming, secrets from the environment."""

from __future__ import annotations

import pytest

from loadtest.tool.scenario import TargetSpec
from loadtest.tool.targets import Target, from_spec, parse_flag


@pytest.mark.parametrize(
    ("flag", "name", "urls"),
    [
        ("http://127.0.0.1:8000", "target-3", ["http://127.0.0.1:8000"]),
        ("gw=http://a:1,http://b:2", "gw", ["http://a:1", "http://b:2"]),
        ("https://host/v?x=1", "target-3", ["https://host/v?x=1"]),
    ],
)
def test_target_flags(flag: str, name: str, urls: list[str]) -> None:
    spec = parse_flag(flag, 3)
    assert (spec.name, spec.urls) == (name, urls)


@pytest.mark.parametrize("flag", ["gw=", "localhost:8000", "gw=ftp://x"])
def test_bad_target_flags(flag: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_flag(flag, 0)


def test_secrets_come_from_the_environment_and_urls_lose_their_slash() -> None:
    spec = TargetSpec(name="gw", urls=["http://a:1/"], api_key_env="MY_KEY")
    target = from_spec(spec, {"MY_KEY": "sk-1", "LORAGATE_ADMIN_TOKEN": "adm"})
    assert (target.urls, target.api_key, target.admin_token) == (("http://a:1",), "sk-1", "adm")
    assert from_spec(spec, {}).api_key is None


def test_model_names_per_target_and_round_robin_urls() -> None:
    engine = Target(
        "vllm", ("u0", "u1"), model="{adapter}@v1", models={"x": "x@v7"}, base_model="b"
    )
    assert engine.model_for("a") == "a@v1" and engine.model_for("x") == "x@v7"
    assert engine.model_for(None) == "b"
    assert [engine.url(i) for i in range(3)] == ["u0", "u1", "u0"]
