"""A store of tiny adapters for simulated deployments: PEFT-layout LoRA files over a 2-layer
"tiny-base" (what the simulated engine serves), packaged and validated by the real store.

The weights are zeros: validation reads safetensors headers only, and the simulated engine
never reads tensors. The file is written here (8-byte header length, JSON header, data), so
it needs neither numpy nor a particular safetensors release.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.tool.scenario import ReleaseSpec, SimSpec
from server.store.base_model import BaseModelSpec, architecture_sha256
from server.store.layout import ValidationLimits
from server.store.manifest import Channels
from server.store.store import AdapterStore

TINY_BASE_ID = "tiny-base"
TINY_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,
}
RANK = 4
TARGET_MODULES = ("q_proj", "v_proj")


@dataclass
class TinyStore:
    """Where things are, and which adapters exist (popularity order) at which stable version."""

    root: Path  # the store
    base_config: Path  # the tiny base's config.json (the gateway's base_config)
    incoming: Path  # packaged versions not yet in the store: incoming/<name>/<version>
    stable: dict[str, str] = field(default_factory=dict)

    @property
    def adapters(self) -> list[str]:
        return list(self.stable)


def tiny_spec() -> BaseModelSpec:
    return BaseModelSpec.from_config(
        TINY_CONFIG, TINY_BASE_ID, (), architecture_sha256(TINY_CONFIG)
    )


def write_peft_dir(path: Path, spec: BaseModelSpec) -> Path:
    """adapter_config.json + adapter_model.safetensors, as PEFT saves a rank-4 LoRA."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 2 * RANK,
        "lora_dropout": 0.0,
        "target_modules": list(TARGET_MODULES),
        "bias": "none",
        "base_model_name_or_path": spec.id,
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    shapes = {}
    for layer in range(spec.num_layers):
        for module in TARGET_MODULES:
            dims = spec.module_shape(module)
            assert dims is not None
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, dims[0])
            shapes[f"{prefix}.lora_B.weight"] = (dims[1], RANK)
    write_zero_safetensors(path / "adapter_model.safetensors", shapes)
    return path


def write_zero_safetensors(path: Path, shapes: dict[str, tuple[int, int]]) -> None:
    """float32 tensors of zeros in the safetensors format."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (rows, cols) in shapes.items():
        size = 4 * rows * cols
        header[name] = {
            "dtype": "F32",
            "shape": [rows, cols],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def _manifest(spec: BaseModelSpec) -> dict[str, object]:
    return {
        "base_model": {"id": spec.id, "config_sha256": spec.config_sha256},
        "prompt_template": {"completion": "{input}"},
        "lineage": {"dataset_id": "none", "origin": "loadtest/tool/tinystore.py"},
        "created_by": "loragate loadtest",
    }


def _replace(channels: Channels) -> Callable[[Channels], Channels]:
    return lambda _current: channels


def build(root: Path, sim: SimSpec) -> TinyStore:
    """`adapter-00` … (v1, stable) and the `releases`, under `root`."""
    spec = tiny_spec()
    store = AdapterStore(root / "store", spec, ValidationLimits(max_lora_rank=8))
    base_config = root / "tiny-base-config.json"
    base_config.write_text(json.dumps(TINY_CONFIG))
    result = TinyStore(store.root, base_config, root / "incoming")
    source = write_peft_dir(root / "peft", spec)
    width = max(2, len(str(sim.adapters - 1)))
    plain = [
        ReleaseSpec(name=f"adapter-{i:0{width}d}", versions=["v1"], stable="v1")
        for i in range(sim.adapters)
    ]
    for release in [*plain, *sim.releases]:
        for version in release.versions:
            store.package(source, _manifest(spec), name=release.name, version=version)
        channels = Channels(stable=release.stable, previous=release.previous)
        store.update_channels(release.name, _replace(channels), actor="loadtest", action="setup")
        result.stable[release.name] = release.stable
        incoming = AdapterStore(result.incoming, spec, ValidationLimits(max_lora_rank=8))
        for version in release.incoming:
            incoming.package(source, _manifest(spec), name=release.name, version=version)
    return result
