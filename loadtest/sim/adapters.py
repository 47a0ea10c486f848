"""Adapter bookkeeping: registered adapters, the CPU-side LRU cache, and the on-disk checks.

vLLM keeps two separate things (vllm/entrypoints/openai/models/serving.py and
vllm/lora/worker_manager.py LRUCacheWorkerLoRAManager):
- the *registered* adapters (`lora_requests`, what /v1/models lists), unbounded;
- the adapters *loaded in CPU memory*, an LRU of `--max-cpu-loras` keyed by lora_int_id.
A registered adapter that fell out of the LRU is silently reloaded from disk when a request
needs it. Unloading only unregisters the name: vLLM never calls remove_lora, so the weights
stay in the LRU until evicted, and a later load of the same name gets a new lora_int_id.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.sim.errors import AdapterNotFound, add_lora_failed

_REQUIRED_FIELDS = ("r", "lora_alpha", "target_modules")  # PEFTHelper fields w/o defaults
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")


@dataclass(frozen=True)
class Adapter:
    """A registered adapter: its name, the path as the client gave it, and vLLM's int id."""

    name: str
    path: str
    int_id: int


class CpuLoraCache:
    """LRU of adapter ids held in CPU memory (capacity = --max-cpu-loras)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[int, str] = OrderedDict()  # int_id -> name, oldest first

    def __contains__(self, int_id: object) -> bool:
        return int_id in self._entries

    def touch(self, int_id: int) -> None:
        if int_id in self._entries:
            self._entries.move_to_end(int_id)

    def add(self, adapter: Adapter, *, busy: Callable[[str], bool]) -> str | None:
        """Insert (or refresh) `adapter`; returns the name evicted to make room, if any.

        vLLM evicts the oldest entry; adapters of the running batch are touched every step,
        so the oldest entry that is not `busy` (running) is the one that goes.
        """
        evicted: str | None = None
        if adapter.int_id not in self._entries and len(self._entries) >= self._capacity:
            evicted = self._evict_oldest(busy)
        self._entries[adapter.int_id] = adapter.name
        self._entries.move_to_end(adapter.int_id)
        return evicted

    def names(self) -> list[str]:
        """Names in LRU order, oldest first (may include unloaded adapters, as in vLLM)."""
        return list(self._entries.values())

    def _evict_oldest(self, busy: Callable[[str], bool]) -> str:
        victim = next((i for i, name in self._entries.items() if not busy(name)), None)
        if victim is None:
            victim = next(iter(self._entries))
        return self._entries.pop(victim)


def check_adapter_dir(lora_name: str, lora_path: str, max_lora_rank: int) -> None:
    """Do what vLLM's worker does before it loads weights (blocking file I/O; run it in a
    thread). Raises AdapterNotFound (404) when the directory or adapter_config.json is
    missing, and the engine-core failure (500) for anything else vLLM rejects."""
    directory = _absolute_adapter_path(lora_path)
    config = _read_adapter_config(lora_name, lora_path, directory)
    _validate_peft_config(config, max_lora_rank)
    if not any(os.path.isfile(os.path.join(directory, name)) for name in _WEIGHT_FILES):
        # vllm/lora/lora_model.py LoRAModel.from_local_checkpoint
        raise add_lora_failed(f"{directory} doesn't contain tensors")


def _absolute_adapter_path(lora_path: str) -> str:
    """vllm/lora/utils.py get_adapter_absolute_path, minus the Hugging Face download."""
    if os.path.isabs(lora_path):
        return lora_path
    if lora_path.startswith("~"):
        return os.path.expanduser(lora_path)
    return os.path.abspath(lora_path) if os.path.exists(lora_path) else lora_path


def _read_adapter_config(lora_name: str, lora_path: str, directory: str) -> dict[str, Any]:
    """vllm/lora/peft_helper.py PEFTHelper.from_local_dir; FileNotFoundError becomes
    LoRAAdapterNotFoundError in vllm/lora/worker_manager.py."""
    try:
        with open(os.path.join(directory, "adapter_config.json"), encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError as exc:
        raise AdapterNotFound(lora_name, lora_path) from exc
    except (OSError, ValueError) as exc:  # NotADirectoryError, bad JSON, bad UTF-8
        raise add_lora_failed(str(exc)) from exc
    if not isinstance(config, dict):
        raise add_lora_failed("list indices must be integers or slices, not str")
    return config


def _validate_peft_config(config: dict[str, Any], max_lora_rank: int) -> None:
    """PEFTHelper.from_dict, __post_init__ and validate_legal, in that order."""
    missing = {name for name in _REQUIRED_FIELDS if name not in config}
    if missing:
        raise add_lora_failed(f"Missing required configuration fields: {missing}")
    ranks = [config["r"], *dict(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(rank, int) and rank > 0 for rank in ranks):
        raise add_lora_failed(f"LoRA rank `r` must be a positive integer, got {config['r']}.")
    problems: list[str] = []
    if config.get("use_dora"):
        problems.append("vLLM does not yet support DoRA.")
    if max(ranks) > max_lora_rank:
        problems.append(f"LoRA rank {max(ranks)} is greater than max_lora_rank {max_lora_rank}.")
    if config.get("bias", "none") != "none":
        problems.append("Adapter bias is not supported.")
    if problems:
        raise add_lora_failed(" ".join(problems))
