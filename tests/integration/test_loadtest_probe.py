"""The load tool tells loragate from any other OpenAI-compatible server, with or without the
admin token that opens loragate's `/metrics` on its API port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from loadtest.simengine import SimEngineServer
from loadtest.tool.targets import Target, probe
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
