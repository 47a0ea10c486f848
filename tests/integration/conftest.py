"""Shared fixtures for integration tests: adapter directories and simulated engines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.simengine import SimConfig, SimEngineServer
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, set_channels
from tests.servers import GatewayServer, tiny_settings

# Fast timings so a whole suite of engine round trips stays within seconds.
FAST_SIM: dict[str, Any] = {"model": "base", "load_ms": 20.0, "ttft_ms": 2.0, "token_ms": 1.0}


@pytest.fixture
def make_adapter(tmp_path: Path) -> Callable[..., Path]:
    """Factory for a PEFT-LoRA-looking directory: adapter_config.json (+ an empty
    adapter_model.safetensors unless weights=False); `config` overrides config keys."""

    def make(name: str = "adapter", *, weights: bool = True, **config: Any) -> Path:
        directory = tmp_path / name
        directory.mkdir(parents=True)
        body = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
        (directory / "adapter_config.json").write_text(json.dumps({**body, **config}))
        if weights:
            (directory / "adapter_model.safetensors").write_bytes(b"")
        return directory

    return make


@pytest.fixture
def sim_server() -> Iterator[Callable[..., SimEngineServer]]:
    """Factory: start a simulated engine (FAST_SIM plus SimConfig overrides); every engine
    started is stopped at teardown."""
    servers: list[SimEngineServer] = []

    def start(**overrides: Any) -> SimEngineServer:
        server = SimEngineServer(SimConfig(**{**FAST_SIM, **overrides}))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.close()


# --- gateway fixtures ------------------------------------------------------------------------


@pytest.fixture
def tiny_store(tmp_path: Path) -> AdapterStore:
    """A store with adapters `alpha` (v1, v2; stable v2, previous v1) and `beta`, `gamma` (v1)."""
    store = AdapterStore(tmp_path / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for name, versions in (("alpha", ("v1", "v2")), ("beta", ("v1",)), ("gamma", ("v1",))):
        for i, v in enumerate(versions):
            add_version(
                store,
                tmp_path,
                name,
                v,
                seed=i,
                prompt_template={"completion": f"<{name}-{v}> {{input}}"},
            )
        stable = versions[-1]
        previous = versions[-2] if len(versions) > 1 else None
        chosen = Channels(stable=stable, previous=previous)
        store.update_channels(name, set_channels(chosen), actor="setup", action="promote")
    # Old enough that nothing is pinned by the rollback window.
    return store


@pytest.fixture
def gateway(
    tiny_store: AdapterStore, tmp_path: Path, sim_server: Callable[..., SimEngineServer]
) -> Iterator[Callable[..., tuple[GatewayServer, list[SimEngineServer]]]]:
    """Factory: n simulated engines with `slots` adapter slots each (SimConfig overrides in
    `sim`, EngineConfig overrides in `engine`) + a gateway in front of them over `tiny_store`."""
    started: list[GatewayServer] = []

    def start(
        engines: int = 1,
        settings: dict[str, Any] | None = None,
        slots: int = 2,
        engine: dict[str, Any] | None = None,
        **sim: Any,
    ) -> tuple[GatewayServer, list[SimEngineServer]]:
        sims = [
            sim_server(**{"model": "tiny-base", "max_loras": 2, "max_cpu_loras": slots, **sim})
            for _ in range(engines)
        ]
        cfg = tiny_settings(
            tiny_store.root,
            [],
            tmp_path,
            **{
                "engines": [{"url": s.url, "max_cpu_loras": slots, **(engine or {})} for s in sims],
                "rollback_window_s": 0,
                **(settings or {}),
            },
        )
        gw = GatewayServer(cfg).__enter__()
        started.append(gw)
        return gw, sims

    yield start
    for gw in started:
        gw.__exit__(None, None, None)


ADMIN_TOKEN = "admin-token-for-integration-tests"


@pytest.fixture
def admin_gateway(
    gateway: Callable[..., tuple[GatewayServer, list[SimEngineServer]]],
) -> Callable[..., tuple[GatewayServer, list[SimEngineServer]]]:
    """`gateway` with the admin API on (ADMIN_TOKEN), 4 slots and a one-hour rollback window."""

    def start(
        engines: int = 1, slots: int = 4, settings: dict[str, Any] | None = None, **sim: Any
    ) -> tuple[GatewayServer, list[SimEngineServer]]:
        admin = {"admin_token": ADMIN_TOKEN, "rollback_window_s": 3600, **(settings or {})}
        return gateway(engines, admin, slots, **sim)

    return start
