"""Real adapters for tests: PEFT-layout LoRA weights for a tiny base, written with safetensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from loadtest.tool.tinystore import tiny_spec
from server.store.base_model import BaseModelSpec
from server.store.manifest import Channels
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

# The tiny base is the load tool's (its simulated deployments build stores for it too).
TINY_SPEC = tiny_spec()


def lora_tensors(
    spec: BaseModelSpec, r: int, targets: tuple[str, ...], dtype: Any = np.float32, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(spec.num_layers):
        for module in targets:
            dims = spec.module_shape(module)
            assert dims is not None
            block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((r, dims[0])).astype(dtype)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((dims[1], r)).astype(dtype)
    return tensors


def make_peft_dir(
    path: Path,
    *,
    spec: BaseModelSpec = TINY_SPEC,
    r: int = 4,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write adapter_config.json + adapter_model.safetensors as PEFT saves them."""
    path.mkdir(parents=True, exist_ok=True)
    base_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "base_model_name_or_path": spec.id,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
        "use_rslora": False,
    }
    (path / "adapter_config.json").write_text(json.dumps({**base_config, **(config or {})}))
    save_file(lora_tensors(spec, r, targets, seed=seed), str(path / "adapter_model.safetensors"))
    return path


def manifest_fields(spec: BaseModelSpec = TINY_SPEC, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "base_model": {"id": spec.id, "config_sha256": spec.config_sha256},
        "prompt_template": {"completion": "Q: {input}\nA:"},
        "lineage": {"dataset_id": "unit-test", "origin": "tests/factory.py"},
        "created_by": "tests",
    }
    return {**fields, **extra}


def add_version(
    store: AdapterStore, tmp: Path, name: str, version: str, seed: int = 0, **fields: Any
) -> AdapterVersion:
    src = make_peft_dir(tmp / f"peft-{name}-{version}", spec=store.base or TINY_SPEC, seed=seed)
    return store.package(
        src, manifest_fields(store.base or TINY_SPEC, **fields), name=name, version=version
    )


def set_channels(channels: Channels) -> Callable[[Channels], Channels]:
    """An `update_channels` change that replaces the channels with `channels`."""
    return lambda _current: channels
