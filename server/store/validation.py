"""Every rule an adapter version must pass before it can be registered or served.

`validate_version` raises `AdapterInvalid(file, rule, detail)` at the first broken rule and
otherwise returns a `ValidationReport` listing what it checked. It reads only JSON files and
the safetensors *header*: tensors are never loaded into memory. It is blocking (hashing);
async callers run it in a worker thread.

Rules (ids as they appear in errors):
  layout, unexpected-file, no-pickle, no-symlink, inside-root, file-size, manifest-schema,
  manifest-identity, checksum, config-schema, peft-type, unsupported-feature, rank,
  base-model, target-modules, safetensors-header, safetensors-length, tensor-dtype,
  tensor-name, tensor-shape, tensor-missing
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from server.errors import AdapterInvalid
from server.store.manifest import Manifest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "manifest.json"
README_FILE = "README.md"
EVALS_DIR = "evals"
# Files the manifest must checksum (README optional). manifest.json and evals/ are not in it:
# the manifest cannot hash itself, and eval reports are added after registration.
CHECKSUMMED = (CONFIG_FILE, WEIGHTS_FILE, README_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")

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


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds on an adapter version; sizes in bytes."""

    max_lora_rank: int = 64
    max_weights_bytes: int = 512 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # safetensors' own reader refuses headers over 100 MB; ours are a few KB.
    max_header_bytes: int = 16 * 1024 * 1024


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


@dataclass
class ValidationReport:
    """What was checked on a version that passed."""

    path: Path
    checks: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rank: int = 0
    target_modules: tuple[str, ...] = ()
    weights_bytes: int = 0


Hasher = Callable[[Path], str]


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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def validate_version(
    version_dir: Path,
    *,
    root: Path,
    base: BaseModelSpec | None,
    limits: ValidationLimits = ValidationLimits(),
    hasher: Hasher = sha256_file,
    expect: tuple[str, str] | None = None,
) -> ValidationReport:
    """Check every rule on `version_dir`, a directory inside the store `root`.

    `expect` is the (name, version) the directory is registered as; the manifest must agree.
    With `base=None` the rules that need the base's dimensions are skipped (and listed).
    Raises `AdapterInvalid` naming the file and the rule that failed.
    """
    report = ValidationReport(path=version_dir)
    files = _check_tree(version_dir, root, limits, report)
    manifest = _check_manifest(version_dir, files, expect, hasher, report)
    config = _check_config(version_dir, limits, report)
    _check_base(manifest, config, base, report)
    header = read_safetensors_header(version_dir / WEIGHTS_FILE, limits)
    report.checks.append("safetensors-header: header parsed, offsets contiguous, no trailing bytes")
    _check_tensors(header, config, base, report)
    report.weights_bytes = files[WEIGHTS_FILE]
    return report


def _check_tree(
    version_dir: Path, root: Path, limits: ValidationLimits, report: ValidationReport
) -> dict[str, int]:
    """Layout, symlinks, containment, pickles, sizes. Returns relative path -> size."""
    if version_dir.is_symlink() or version_dir.parent.is_symlink():
        raise AdapterInvalid(".", "no-symlink", "the version directory is a symlink")
    if not version_dir.resolve().is_relative_to(root.resolve()):
        raise AdapterInvalid(".", "inside-root", f"{version_dir} is outside the store {root}")
    sizes: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(version_dir, followlinks=False):
        here = Path(dirpath)
        for entry in (*dirnames, *filenames):
            path = here / entry
            rel = path.relative_to(version_dir).as_posix()
            st = path.lstat()
            if path.is_symlink():
                raise AdapterInvalid(rel, "no-symlink", "symlinks are not allowed in a version")
            if entry in dirnames:
                if rel != EVALS_DIR:
                    raise AdapterInvalid(rel, "unexpected-file", "only evals/ may be a directory")
                continue
            _check_file_kind(rel)
            limit = limits.max_weights_bytes if rel == WEIGHTS_FILE else limits.max_json_bytes
            if st.st_size > limit:
                raise AdapterInvalid(rel, "file-size", f"{st.st_size} bytes > limit {limit}")
            sizes[rel] = st.st_size
    for required in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
        if required not in sizes:
            raise AdapterInvalid(required, "layout", "required file is missing")
    report.checks.append("layout: required files present, nothing else; no symlinks; sizes ok")
    return sizes


def _check_file_kind(rel: str) -> None:
    if rel.lower().endswith(PICKLE_SUFFIXES):
        raise AdapterInvalid(rel, "no-pickle", "pickle-format weights are refused; use safetensors")
    top_level = {CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, README_FILE}
    is_eval = rel.startswith(f"{EVALS_DIR}/") and rel.endswith(".json") and rel.count("/") == 1
    if rel in top_level or is_eval:
        return
    raise AdapterInvalid(rel, "unexpected-file", f"allowed: {sorted(top_level)} and evals/*.json")


def _check_manifest(
    version_dir: Path,
    sizes: dict[str, int],
    expect: tuple[str, str] | None,
    hasher: Hasher,
    report: ValidationReport,
) -> Manifest:
    manifest = load_manifest(version_dir / MANIFEST_FILE)
    if expect is not None and (manifest.name, manifest.version) != expect:
        raise AdapterInvalid(
            MANIFEST_FILE,
            "manifest-identity",
            f"manifest says {manifest.name}@{manifest.version}, directory is {'@'.join(expect)}",
        )
    present = {rel for rel in sizes if rel in CHECKSUMMED}
    listed = set(manifest.files)
    for rel in sorted(present - listed):
        raise AdapterInvalid(rel, "checksum", "file is not listed in manifest.json files")
    for rel in sorted(listed - present):
        raise AdapterInvalid(rel, "checksum", "listed in manifest.json but missing")
    for rel in sorted(present):
        actual = hasher(version_dir / rel)
        if actual != manifest.files[rel]:
            raise AdapterInvalid(
                rel, "checksum", f"sha256 {actual[:12]}… != manifest {manifest.files[rel][:12]}…"
            )
    report.checks.append(f"checksum: sha256 of {len(present)} files match manifest.json")
    return manifest


def load_manifest(path: Path) -> Manifest:
    """Parse a manifest.json; raise `AdapterInvalid` (rule manifest-schema) if it is not one."""
    try:
        return parse_manifest(path.read_bytes())
    except FileNotFoundError:
        raise AdapterInvalid(MANIFEST_FILE, "layout", "required file is missing") from None


def parse_manifest(data: bytes | Mapping[str, object]) -> Manifest:
    """Build a `Manifest` from JSON bytes or fields; raise `AdapterInvalid` naming the field."""
    try:
        if isinstance(data, bytes):
            return Manifest.model_validate_json(data)
        return Manifest.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise AdapterInvalid(MANIFEST_FILE, "manifest-schema", f"{where}: {first['msg']}") from None


def _check_config(
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


def _check_base(
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
    end = _check_offsets(rel, header)
    if size != 8 + n + end:
        raise AdapterInvalid(
            rel,
            "safetensors-length",
            f"file is {size} bytes, header declares {8 + n + end}: trailing or missing bytes",
        )
    return header


def _check_offsets(rel: str, header: dict[str, Any]) -> int:
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


def _check_tensors(
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
            _check_shape(name, layer, module, ab, info["shape"], rank, base)
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


def _check_shape(
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
