"""Fixtures for e2e tests: the demo base model, random PEFT adapters, a real vLLM server.

Everything heavy is imported inside fixtures, so collecting this package costs nothing where
the engine is not installed; the fixtures skip (with the reason) when it is not.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine import VllmServer

ENGINE_MODULES = ("vllm", "torch", "transformers", "peft", "gguf")
# Adapter name → seed. Two adapters so that the last LoRA slot (max_loras - 1 = 1), which the
# unpatched ops apply to base-model rows, holds a real adapter.
RANDOM_ADAPTERS = {"lora-a": 1, "lora-b": 2}


def require_engine() -> None:
    """Skip unless the engine stack is installed (scripts/install_engine.sh VENV)."""
    for module in ENGINE_MODULES:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run scripts/install_engine.sh VENV")


@pytest.fixture(scope="session")
def demo_base() -> Path:
    """The demo base checkpoint (built on first use, ~30 s)."""
    require_engine()
    from server.engines.demo_model import DemoModelUnavailableError, build_demo_base

    try:
        return build_demo_base()
    except DemoModelUnavailableError as exc:
        pytest.skip(f"demo base model unavailable: {exc}")


def make_random_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-8 PEFT LoRA on q_proj/v_proj with random A and B (B is 0 in a fresh LoRA, which
    would change nothing). The scale (B std 0.1) changes the text but keeps it fluent."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[1] ** 0.5)
            elif "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def random_adapters(demo_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: make_random_adapter(demo_base, root / name, seed)
        for name, seed in RANDOM_ADAPTERS.items()
    }


@pytest.fixture(scope="session")
def vllm_engine(
    demo_base: Path, random_adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """One vLLM server for the session, with the random adapters loaded at runtime."""
    log_path = tmp_path_factory.mktemp("vllm") / "engine.log"
    with VllmServer(demo_base, log_path, max_loras=2) as engine:
        for name, path in random_adapters.items():
            engine.load_adapter(name, path)
        yield engine
