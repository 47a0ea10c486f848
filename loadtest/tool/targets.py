"""The endpoints a run sends to: `Target`s built from scenario entries, `--target` flags or a
simulated deployment, and what they are (`probe`: loragate exports `loragate_*` metrics)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import aiohttp

from loadtest.tool.scenario import TargetSpec

Kind = Literal["loragate", "openai"]


@dataclass(frozen=True)
class Target:
    """One OpenAI-compatible endpoint (several `urls`: a client-side round robin)."""

    name: str
    urls: tuple[str, ...]
    model: str = "{adapter}"  # how this target names an adapter
    models: Mapping[str, str] = field(default_factory=dict)  # explicit names, before `model`
    base_model: str | None = None
    api_key: str | None = None
    admin_token: str | None = None
    store: Path | None = None
    kind: Kind | None = None  # None until probed
    # Simulated engines behind it (local deployments only): their /sim/stats are read
    # before and after each round (loads, hidden CPU-cache reloads).
    sim_urls: tuple[str, ...] = ()
    incoming: Path | None = None  # `{incoming}` in register steps (local deployments)

    def model_for(self, adapter: str | None) -> str:
        if adapter is None:
            return self.base_model or ""
        return self.models.get(adapter) or self.model.format(adapter=adapter)

    def url(self, seq: int) -> str:
        return self.urls[seq % len(self.urls)]


def from_spec(spec: TargetSpec, env: Mapping[str, str] | None = None) -> Target:
    environ = os.environ if env is None else env
    return Target(
        name=spec.name,
        urls=tuple(u.rstrip("/") for u in spec.urls),
        model=spec.model,
        base_model=spec.base_model,
        api_key=environ.get(spec.api_key_env) if spec.api_key_env else None,
        admin_token=environ.get(spec.admin_token_env),
        store=spec.store,
    )


def parse_flag(text: str, index: int) -> TargetSpec:
    """`--target [NAME=]URL[,URL…]` → a spec (named `target-<index>` when unnamed)."""
    name, sep, urls = text.partition("=")
    if not sep or "://" in name:
        name, urls = f"target-{index}", text
    found = [u.strip() for u in urls.split(",") if u.strip()]
    if not found or not all(u.startswith(("http://", "https://")) for u in found):
        raise ValueError(f"--target {text!r}: expected [NAME=]http(s)://host:port[,URL…]")
    return TargetSpec(name=name, urls=found)


async def probe(session: aiohttp.ClientSession, target: Target, need_base: bool) -> Target:
    """`target` with its `kind` set, and its base model id when `need_base` and not given
    (the `/v1/models` entry without a parent). Unreachable targets fail later, per request."""
    kind: Kind = "openai"
    url = target.urls[0]
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    # loragate serves /metrics on its API port to the admin token only (its metrics listener
    # is for Prometheus); tenant keys and no key get 401/403 there, and the report then has
    # no loragate counters.
    token = target.admin_token or target.api_key
    scrape = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(f"{url}/metrics", headers=scrape) as response:
            if response.status == 200 and "loragate_" in await response.text():
                kind = "loragate"
        if kind == "openai" and await _names_itself_loragate(session, url):
            kind = "loragate"  # no token for its /metrics
        base = target.base_model
        if need_base and base is None:
            async with session.get(f"{url}/v1/models", headers=headers) as response:
                models = (await response.json()).get("data", []) if response.status == 200 else []
            base = next((m["id"] for m in models if not m.get("parent")), None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return replace(target, kind=kind)
    return replace(target, kind=kind, base_model=base)


async def _names_itself_loragate(session: aiohttp.ClientSession, url: str) -> bool:
    """loragate's public OpenAPI document carries its name; anything else (no document, HTML,
    another title) is not loragate, and does not stop the rest of the probe."""
    try:
        async with session.get(f"{url}/openapi.json") as response:
            document = await response.json(content_type=None) if response.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    info = document.get("info") if isinstance(document, dict) else None
    return isinstance(info, dict) and info.get("title") == "loragate"
