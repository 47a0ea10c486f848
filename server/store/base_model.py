"""The served base model as validation sees it: its names, layer dimensions and the
fingerprint of its architecture (Llama-family decoder layout)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BaseModelSpec:
    """What the served base model looks like: its accepted names and layer dimensions.

    Built from the base's Hugging Face `config.json` (Llama-family decoder layout: SmolLM2,
    Llama, Mistral, Qwen2).
    """

    id: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    aliases: frozenset[str] = frozenset()
    config_sha256: str | None = None

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        id: str,
        aliases: tuple[str, ...] = (),
        config_sha256: str | None = None,
    ) -> BaseModelSpec:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            id=id,
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            aliases=frozenset(aliases),
            config_sha256=config_sha256,
        )

    @classmethod
    def from_config_file(cls, path: Path, id: str, aliases: tuple[str, ...] = ()) -> BaseModelSpec:
        config = json.loads(path.read_bytes())
        return cls.from_config(config, id, aliases, architecture_sha256(config))

    def accepts(self, name: str) -> bool:
        """True if `name` designates this base (its id, an alias, or a path ending in one)."""
        names = {self.id, *self.aliases}
        return name in names or Path(name.rstrip("/")).name in names

    def module_shape(self, module: str) -> tuple[int, int] | None:
        """(in_features, out_features) of a linear layer in one decoder block, or None."""
        h, i, q, kv = (
            self.hidden_size,
            self.intermediate_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }.get(module)


def demo_base_config() -> Path:
    """config.json of the demo base model (SmolLM2-135M-Instruct), shipped in the package."""
    return Path(str(resources.files("server.demo").joinpath("base_config.json")))


# The config.json keys that decide whether an adapter fits a base. Hashing only these keeps
# the fingerprint stable when a tool rewrites unrelated keys (transformers_version, dtype).
ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)


def architecture_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a base config's architecture keys."""
    arch = {k: config.get(k) for k in ARCHITECTURE_KEYS}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()
