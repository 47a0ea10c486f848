"""Gateway settings for tests over the tiny base; the server itself is in loadtest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.gateway_server import GatewayServer
from loadtest.tool.tinystore import TINY_CONFIG
from server.settings import Settings

__all__ = ["GatewayServer", "tiny_settings"]


def tiny_settings(store: Path, engine_urls: list[str], tmp: Path, **overrides: Any) -> Settings:
    base_config = tmp / "tiny-base-config.json"
    base_config.write_text(json.dumps(TINY_CONFIG))
    data: dict[str, Any] = {
        "store": store,
        "base_model": "tiny-base",
        "base_config": base_config,
        "engines": [{"url": u, "max_cpu_loras": 2} for u in engine_urls],
        "load_wait_timeout_s": 2.0,
        "metrics_port": 0,  # the metrics listener on a free port (GatewayServer.metrics_url)
        "reconcile_interval_s": 60.0,
        "log_json": False,
        **overrides,
    }
    return Settings(**data)
