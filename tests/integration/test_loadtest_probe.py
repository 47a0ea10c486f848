"""The load tool tells loragate from any other OpenAI-compatible server, with or without the
admin token that opens loragate's `/metrics` on its API port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from loadtest.simengine import SimEngineServer
from loadtest.tool.targets import Target, probe
from tests.httpfake import Reply, Request, serve
from tests.integration.conftest import ADMIN_TOKEN
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]


def probed(url: str, admin_token: str | None = None) -> Target:
    async def run() -> Target:
        async with aiohttp.ClientSession() as session:
            return await probe(session, Target("t", (url,), admin_token=admin_token), True)

    return asyncio.run(run())


def test_loragate_is_recognised_with_and_without_the_admin_token(admin_gateway: Start) -> None:
    gw, (sim,) = admin_gateway()
    with_token = probed(gw.url, ADMIN_TOKEN)
    without = probed(gw.url)
    assert (with_token.kind, without.kind) == ("loragate", "loragate")
    assert with_token.base_model == without.base_model == "tiny-base"
    engine = probed(sim.url)
    assert (engine.kind, engine.base_model) == ("openai", "tiny-base")


@pytest.mark.parametrize(
    "openapi",
    [
        Reply(200, b"<html>not json</html>", "text/html"),
        Reply.json(["a", "list"]),
        Reply.json({"info": "not an object"}),
        Reply.json({"info": {"title": "loragate-lookalike"}}),
        Reply(404),
        Reply(hang=True),
    ],
)
async def test_a_strange_openapi_document_is_not_loragate_and_the_probe_goes_on(
    openapi: Reply,
) -> None:
    def handler(request: Request) -> Reply:
        if request.path == "/openapi.json":
            return openapi
        if request.path == "/v1/models":
            return Reply.json({"data": [{"id": "base-x", "parent": None}]})
        return Reply(404)

    async with serve(handler) as url:
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            target = await probe(session, Target("t", (url,)), True)
    assert (target.kind, target.base_model) == ("openai", "base-x")
