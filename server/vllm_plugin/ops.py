"""The six CPU LoRA ops vLLM's `PunicaWrapperCPU` calls (`bgmv_*`, `sgmv_*`), with vLLM's
signatures: one matmul per adapter present in the batch, and nothing for rows with LoRA index
-1 ("no adapter"; vLLM's own ops gather the last slot for them). torch is imported only when
an op runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# torch is not a gateway dependency; tensors are typed loosely so mypy runs without it.
Tensor = Any

# Set on every function this plugin installs, so register() never patches twice.
FIXED_MARK = "__loragate_cpu_lora_fix__"
OP_NAMES = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)


# --- The ops: one matmul per adapter present, nothing for rows with index -1 ----------------


def _per_adapter_matmul(inputs: Tensor, weights: Tensor, indices: Tensor, dtype: Any) -> Tensor:
    """Row i: `inputs[i] @ weights[indices[i]]^T` computed in `dtype`, or 0 where the index < 0.

    `weights` is (slots, out, in) or (slots, 1, out, in), as vLLM stacks them. Rows are grouped
    by adapter (a batch holds a few), so no weight matrix is copied per row, and a row never
    touches another adapter's weights (a non-finite slot stays in its own rows).
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype=dtype)
    slots = [s for s in torch.unique(indices).tolist() if s >= 0]
    if len(slots) == 1 and bool((indices == slots[0]).all()):
        return inputs @ weights[slots[0]].to(dtype=dtype).t()
    outputs = inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    for slot in slots:
        rows = torch.nonzero(indices == slot).squeeze(1)
        product = inputs.index_select(0, rows) @ weights[slot].to(dtype=dtype).t()
        outputs.index_copy_(0, rows, product)
    return outputs


def bgmv_shrink(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    lora_indices_tensor: Tensor,
    scaling: float = 1.0,
) -> None:
    """`output[i] = scaling * inputs[i] @ A[idx[i]]^T`, and 0 where `idx[i] < 0`."""
    outputs = _per_adapter_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: Tensor,
    lora_b_weights: Tensor,
    output_tensor: Tensor,
    lora_indices_tensor: Tensor,
    add_inputs: bool = True,
) -> None:
    """`output[i] (+)= inputs[i] @ B[idx[i]]^T`, adding 0 where `idx[i] < 0`."""
    outputs = _per_adapter_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
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
    outputs = _per_adapter_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


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
for _fn in FIXED_OPS.values():
    setattr(_fn, FIXED_MARK, True)
