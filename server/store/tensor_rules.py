"""Rules on a version's adapter config and weights: PEFT LoRA only, rank, the base model,
target modules, and the safetensors header and tensors against the base's dimensions (the
header only: tensor data is never read). Each raises `AdapterInvalid(file, rule, detail)`."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from server.errors import AdapterInvalid
from server.store.base_model import BaseModelSpec
from server.store.layout import (
    CONFIG_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ValidationLimits,
    ValidationReport,
)
from server.store.manifest import Manifest

# safetensors dtype -> bytes per element. Only the float types are servable as LoRA weights.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

LORA_DTYPES = frozenset({"F32", "F16", "BF16"})

# PEFT's saved tensor names: base_model.model.model.layers.<i>.<block>.<module>.lora_<A|B>.weight
_TENSOR_RE = re.compile(
    r"base_model\.model\.(?:model\.)?layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])\.weight"
)


def check_config(
    version_dir: Path, limits: ValidationLimits, report: ValidationReport
) -> dict[str, Any]:
    try:
        config = json.loads((version_dir / CONFIG_FILE).read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterInvalid(CONFIG_FILE, "config-schema", f"not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterInvalid(CONFIG_FILE, "config-schema", "must be a JSON object")
    if config.get("peft_type") != "LORA":
        raise AdapterInvalid(
            CONFIG_FILE, "peft-type", f"peft_type is {config.get('peft_type')!r}, must be 'LORA'"
        )
    for key, bad in (("use_dora", True), ("use_rslora", True)):
        if config.get(key) == bad:
            raise AdapterInvalid(CONFIG_FILE, "unsupported-feature", f"{key} is not servable")
    for key in ("modules_to_save", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise AdapterInvalid(CONFIG_FILE, "unsupported-feature", f"{key} must be empty")
    if config.get("bias", "none") != "none":
        raise AdapterInvalid(CONFIG_FILE, "unsupported-feature", "bias must be 'none'")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterInvalid(CONFIG_FILE, "rank", f"r must be a positive integer, got {rank!r}")
    if rank > limits.max_lora_rank:
        raise AdapterInvalid(
            CONFIG_FILE, "rank", f"r={rank} exceeds max_lora_rank={limits.max_lora_rank}"
        )
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterInvalid(
            CONFIG_FILE, "target-modules", "target_modules must be a non-empty list of names"
        )
    report.rank = rank
    report.target_modules = tuple(sorted(targets))
    report.checks.append(f"config: peft_type LORA, r={rank} <= {limits.max_lora_rank}")
    return config


def check_base(
    manifest: Manifest, config: dict[str, Any], base: BaseModelSpec | None, report: ValidationReport
) -> None:
    if base is None:
        report.skipped.append("base-model, target-modules, tensor-shape: no base config given")
        return
    declared = config.get("base_model_name_or_path")
    if not isinstance(declared, str) or not base.accepts(declared):
        raise AdapterInvalid(
            CONFIG_FILE, "base-model", f"base_model_name_or_path {declared!r} is not {base.id!r}"
        )
    if not base.accepts(manifest.base_model.id):
        declared = manifest.base_model.id
        raise AdapterInvalid(
            MANIFEST_FILE, "base-model", f"base_model.id {declared!r} is not {base.id!r}"
        )
    want, got = base.config_sha256, manifest.base_model.config_sha256
    if want and got and want != got:
        raise AdapterInvalid(
            MANIFEST_FILE, "base-model", f"base config sha256 {got[:12]}… != served {want[:12]}…"
        )
    for module in config["target_modules"]:
        if base.module_shape(module) is None:
            raise AdapterInvalid(
                CONFIG_FILE, "target-modules", f"{module!r} is not a linear layer of the base"
            )
    report.checks.append(f"base-model: {base.id}; target modules exist in the base")


def read_safetensors_header(path: Path, limits: ValidationLimits) -> dict[str, Any]:
    """Parse and check a safetensors header without reading any tensor data.

    The file must be exactly 8 + header length + end of the last tensor bytes long: bytes
    past that (e.g. an appended pickle) are refused. Raises `AdapterInvalid`.
    """
    rel = path.name
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise AdapterInvalid(rel, "safetensors-header", "file shorter than 8 bytes")
        (n,) = struct.unpack("<Q", prefix)
        if n > limits.max_header_bytes or n > size - 8:
            raise AdapterInvalid(rel, "safetensors-header", f"header length {n} is out of bounds")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AdapterInvalid(rel, "safetensors-header", "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise AdapterInvalid(rel, "safetensors-header", "header is not a JSON object")
    header.pop("__metadata__", None)
    end = check_offsets(rel, header)
    if size != 8 + n + end:
        raise AdapterInvalid(
            rel,
            "safetensors-length",
            f"file is {size} bytes, header declares {8 + n + end}: trailing or missing bytes",
        )
    return header


def check_offsets(rel: str, header: dict[str, Any]) -> int:
    """Each tensor's byte range matches dtype x shape; ranges tile the buffer. Returns its end."""
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in (*shape, begin, end))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or dtype not in DTYPE_BYTES:
            raise AdapterInvalid(rel, "safetensors-header", f"tensor {name!r}: malformed entry")
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise AdapterInvalid(rel, "safetensors-header", f"tensor {name!r}: size != dtype*shape")
        spans.append((begin, end, name))
    cursor = 0
    for begin, end, name in sorted(spans):
        if begin != cursor:
            raise AdapterInvalid(rel, "safetensors-header", f"tensor {name!r}: overlap or gap")
        cursor = end
    return cursor


def check_tensors(
    header: dict[str, Any],
    config: dict[str, Any],
    base: BaseModelSpec | None,
    report: ValidationReport,
) -> None:
    rank, targets = config["r"], set(config["target_modules"])
    seen: dict[tuple[int, str], set[str]] = {}
    for name, info in header.items():
        if info["dtype"] not in LORA_DTYPES:
            raise AdapterInvalid(
                WEIGHTS_FILE, "tensor-dtype", f"{name}: dtype {info['dtype']} not in F32/F16/BF16"
            )
        m = _TENSOR_RE.fullmatch(name)
        if m is None or m.group(3) not in targets:
            raise AdapterInvalid(
                WEIGHTS_FILE, "tensor-name", f"{name}: not a LoRA weight of a target module"
            )
        layer, module, ab = int(m.group(1)), m.group(3), m.group(4)
        seen.setdefault((layer, module), set()).add(ab)
        if base is not None:
            check_shape(name, layer, module, ab, info["shape"], rank, base)
        elif len(info["shape"]) != 2 or rank not in info["shape"]:
            raise AdapterInvalid(WEIGHTS_FILE, "tensor-shape", f"{name}: rank {rank} not in shape")
    if not seen:
        raise AdapterInvalid(WEIGHTS_FILE, "tensor-missing", "the file holds no LoRA weights")
    for (layer, module), parts in sorted(seen.items()):
        if parts != {"A", "B"}:
            raise AdapterInvalid(
                WEIGHTS_FILE, "tensor-missing", f"layer {layer} {module}: lora_A and lora_B needed"
            )
    report.checks.append(
        f"tensors: {len(header)} LoRA weights, names map to target modules, shapes and dtypes ok"
    )


def check_shape(
    name: str, layer: int, module: str, ab: str, shape: list[int], rank: int, base: BaseModelSpec
) -> None:
    if layer >= base.num_layers:
        raise AdapterInvalid(
            WEIGHTS_FILE, "tensor-name", f"{name}: layer {layer} >= base's {base.num_layers} layers"
        )
    dims = base.module_shape(module)
    assert dims is not None  # target modules were checked against the base already
    in_features, out_features = dims
    want = [rank, in_features] if ab == "A" else [out_features, rank]
    if list(shape) != want:
        raise AdapterInvalid(WEIGHTS_FILE, "tensor-shape", f"{name}: shape {shape} != {want}")
