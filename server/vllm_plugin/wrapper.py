"""`PunicaWrapperCPU`'s methods, fused: every LoRA linear layer in two GEMMs over all slots,
masked per row; lm_head and embedding LoRA skipped when no adapter of the batch has weights
there. Caches live on the wrapper instance and follow vLLM's in-place slot writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.vllm_plugin.ops import FIXED_MARK, Tensor

# Rows from which a bf16/fp16 engine's LoRA GEMMs run in its own dtype rather than float32.
# Measured on one core of an AMX Xeon (demo q+v layer): float32 is 2.7x faster at 4 rows, bf16
# 1.2x at 32 rows, 2.8x at 128 and 9x at 2048 (h is rounded to bf16 before the expand in
# vLLM's own ops too; oneDNN accumulates in float32).
LOW_PRECISION_GEMM_MIN_ROWS = 32
# Attributes this plugin keeps on a PunicaWrapperCPU instance.
_BATCH_ATTR = "_loragate_batch"
_SLOTS_ATTR = "_loragate_slots"
_OPERANDS_ATTR = "_loragate_operands"


def original_attr(method: str) -> str:
    """Where register() keeps vLLM's own method on the wrapper class (ours call it)."""
    return f"_loragate_vllm_{method}"


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
for _fn in FIXED_WRAPPER_METHODS.values():
    setattr(_fn, FIXED_MARK, True)
