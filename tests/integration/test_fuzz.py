"""OpenAPI-driven fuzzing (schemathesis) of the gateway in front of a simulated engine:
no 5xx, every response conforms to the documented status codes, content types, headers and
schemas, and invalid input is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from loadtest.simengine import SimConfig, SimEngineServer
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version
from tests.servers import GatewayServer, tiny_settings


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = AdapterStore(tmp / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    add_version(store, tmp, "alpha", "v1")
    store.update_channels("alpha", lambda c: Channels(stable="v1"), actor="t", action="promote")
    config = SimConfig(
        model="tiny-base",
        max_loras=2,
        max_cpu_loras=2,
        load_ms=1,
        ttft_ms=0,
        token_ms=0,
        max_model_len=4096,
    )
    with (
        SimEngineServer(config) as sim,
        GatewayServer(tiny_settings(store.root, [sim.url], tmp, rollback_window_s=0)) as gw,
    ):
        yield gw


def test_no_server_errors_and_responses_match_the_schema(fuzz_gateway: GatewayServer) -> None:
    # schemathesis' pytest plugin does not support pytest 9 yet: drive hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")
    operations = [
        r.ok()  # type: ignore[union-attr]
        for r in schema.include(path_regex="^/(v1/|healthz|readyz)").get_all_operations()
    ]
    assert len(operations) == 5
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: schemathesis.Case[Any]) -> None:
            # Not positive_data_acceptance: a schema-valid body can still be refused on purpose
            # (no model and no default, max_tokens over the context), with a documented 400.
            case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

        fuzz()


def test_schema_documents_openai_errors(fuzz_gateway: GatewayServer) -> None:
    spec = httpx.get(f"{fuzz_gateway.url}/openapi.json").json()
    responses = spec["paths"]["/v1/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429", "503", "504"} <= set(responses)
    assert "text/event-stream" in responses["200"]["content"]


JSON_HEADERS = {"Content-Type": "application/json"}


# --- hostile raw JSON: what a schema-driven fuzzer does not send ---------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["10", "yes", "\ud800", "a\udfffb", "", "auto", "alpha", "alpha@v1"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "n", "best_of",
     "stream", "stream_options", "temperature", "top_p", "logprobs", "top_logprobs",
     "prompt_logprobs", "stop", "logit_bias", "seed", "user", "top_k", "min_p", "echo"]
)  # fmt: skip


def encode(body: dict[str, Any]) -> bytes:
    """JSON with NaN/Infinity literals and lone surrogates as \\u escapes, as a client may send."""
    return json.dumps(body, allow_nan=True, ensure_ascii=True).encode()


def test_hostile_json_never_gets_a_5xx_and_never_breaks_the_connection(
    fuzz_gateway: GatewayServer,
) -> None:
    seen: dict[int, int] = {}
    with httpx.Client(base_url=fuzz_gateway.url, timeout=60) as client:

        @given(
            path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
            body=st.fixed_dictionaries(
                {"model": st.sampled_from(["alpha", "tiny-base"])},
                optional={"prompt": VALUES, "messages": VALUES},
            ).flatmap(lambda base: st.dictionaries(FIELDS, VALUES, max_size=5).map(
                lambda extra: {**base, **extra})),
        )  # fmt: skip
        @settings(max_examples=300, deadline=None, database=None)
        def send(path: str, body: dict[str, Any]) -> None:
            response = client.post(path, content=encode(body), headers=JSON_HEADERS)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        send()
        valid = {"model": "alpha", "prompt": "hi", "max_tokens": 2}
        assert client.post("/v1/completions", json=valid).status_code == 200  # same connection
    assert seen.get(400, 0) > 100, seen
