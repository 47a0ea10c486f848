"""A small in-memory engine with real behaviour (latency, listing, failures) for unit tests."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from server.engines.client import EngineModel
from server.engines.supervisor import EngineSupervisor
from server.errors import AdapterLoadFailed, NotFound


@dataclass
class FakeEngine:
    name: str = "fake"
    url: str = "fake://engine"
    base: str = "tiny-base"
    load_s: float = 0.0
    fail_load: set[str] = field(default_factory=set)
    lie_on_load: bool = False  # answer success without registering (old vLLM bug)
    loaded: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    healthy: bool = True
    busy: set[str] = field(default_factory=set)  # LoRAs with a request running (any gateway)
    max_loaded: int = 0  # high-water mark of `loaded` (capacity checks)

    async def health(self) -> bool:
        return self.healthy

    async def models(self) -> list[EngineModel]:
        base = [EngineModel(self.base, None, "/models/base")]
        return base + [EngineModel(k, self.base, p) for k, p in self.loaded.items()]

    async def load_lora(self, lora_name: str, lora_path: str) -> None:
        self.calls.append(("load", lora_name))
        await asyncio.sleep(self.load_s)
        if lora_name in self.fail_load:
            raise AdapterLoadFailed(f"engine {self.name} answered 500: cannot load {lora_name}")
        if lora_name in self.loaded:
            raise AdapterLoadFailed(f"The lora adapter '{lora_name}' has already been loaded.")
        if not self.lie_on_load:
            self.loaded[lora_name] = lora_path
            self.max_loaded = max(self.max_loaded, len(self.loaded))

    async def unload_lora(self, lora_name: str) -> None:
        self.calls.append(("unload", lora_name))
        if self.loaded.pop(lora_name, None) is None:
            raise NotFound(f"The lora adapter '{lora_name}' cannot be found.")

    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"model": body["model"], "choices": [{"text": f"[{body['model']}]"}]}

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        yield b"data: [DONE]\n\n"

    async def metrics_text(self) -> str:
        # vLLM's format: the current lora_requests_info label set has the newest timestamp.
        names = ",".join(sorted(self.busy))
        return (
            'vllm:lora_requests_info{max_lora="2",running_lora_adapters="",'
            'waiting_lora_adapters=""} 1.0\n'
            f'vllm:lora_requests_info{{max_lora="2",running_lora_adapters="{names}",'
            f'waiting_lora_adapters=""}} 2.0\n'
            f'vllm:num_requests_running{{engine="0",model_name="{self.base}"}} {len(self.busy)}\n'
        )

    async def aclose(self) -> None:
        return None

    def loads(self) -> list[str]:
        return [name for op, name in self.calls if op == "load"]


def crash(supervisor: EngineSupervisor) -> None:
    """SIGKILL a managed engine's process group, as a crash would."""
    assert supervisor.pid is not None, "the engine is not running"
    os.killpg(supervisor.pid, signal.SIGKILL)
