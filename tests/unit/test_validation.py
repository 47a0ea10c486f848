"""Every validation rule, each shown by a real broken adapter, refused with its own message."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from server.errors import AdapterInvalid
from server.store.layout import ValidationLimits, sha256_file
from server.store.store import AdapterStore
from server.store.tensor_rules import read_safetensors_header
from server.store.validation import validate_version
from tests.factory import TINY_SPEC, lora_tensors, make_peft_dir, manifest_fields

Mutation = Callable[[Path], object]  # the return value is ignored


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _edit_json(path: Path, **changes: object) -> None:
    data = _json(path)
    data.update(changes)
    path.write_text(json.dumps(data))


def _rehash(d: Path) -> None:
    """Re-sign the manifest after a mutation, so the rule under test is the one that fails."""
    manifest = _json(d / "manifest.json")
    manifest["files"] = {
        p.name: sha256_file(p)
        for p in d.iterdir()
        if p.name in ("adapter_config.json", "adapter_model.safetensors", "README.md")
    }
    (d / "manifest.json").write_text(json.dumps(manifest))


def config(**changes: object) -> Mutation:
    def mutate(d: Path) -> None:
        _edit_json(d / "adapter_config.json", **changes)
        _rehash(d)

    return mutate


def manifest(**changes: object) -> Mutation:
    return lambda d: _edit_json(d / "manifest.json", **changes)


def tensors(edit: Callable[[dict[str, np.ndarray]], object]) -> Mutation:
    def mutate(d: Path) -> None:
        ts = lora_tensors(TINY_SPEC, 4, ("q_proj", "v_proj"))
        edit(ts)
        save_file(ts, str(d / "adapter_model.safetensors"))
        _rehash(d)

    return mutate


def raw_weights(transform: Callable[[bytes], bytes]) -> Mutation:
    def mutate(d: Path) -> None:
        p = d / "adapter_model.safetensors"
        p.write_bytes(transform(p.read_bytes()))
        _rehash(d)

    return mutate


def _header_bytes(data: bytes, header: dict[str, Any]) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    new = json.dumps(header).encode()
    return struct.pack("<Q", len(new)) + new + data[8 + n :]


def _edit_header(edit: Callable[[dict[str, Any]], object]) -> Callable[[bytes], bytes]:
    def transform(data: bytes) -> bytes:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        edit(header)
        return _header_bytes(data, header)

    return transform


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _first_tensor(h: dict[str, Any]) -> dict[str, Any]:
    tensor: dict[str, Any] = h[next(k for k in h if k != "__metadata__")]
    return tensor


Q0 = "base_model.model.model.layers.0.self_attn.q_proj"
PICKLE_TAIL = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93."

# (id, mutation, file, rule, fragment of the message)
CORPUS: list[tuple[str, Mutation, str, str, str]] = [
    (
        "pickle-bin",
        lambda d: (d / "adapter_model.bin").write_bytes(PICKLE_TAIL),
        "adapter_model.bin",
        "no-pickle",
        "pickle",
    ),
    (
        "pickle-pt",
        lambda d: (d / "weights.pt").write_bytes(PICKLE_TAIL),
        "weights.pt",
        "no-pickle",
        "safetensors",
    ),
    (
        "stray-script",
        lambda d: (d / "train.py").write_text("import os"),
        "train.py",
        "unexpected-file",
        "allowed",
    ),
    ("nested-dir", lambda d: (d / "extra").mkdir(), "extra", "unexpected-file", "evals/"),
    (
        "symlink-readme",
        lambda d: (d / "README.md").symlink_to("/etc/passwd"),
        "README.md",
        "no-symlink",
        "symlink",
    ),
    (
        "missing-config",
        lambda d: (d / "adapter_config.json").unlink(),
        "adapter_config.json",
        "layout",
        "missing",
    ),
    (
        "missing-weights",
        lambda d: (d / "adapter_model.safetensors").unlink(),
        "adapter_model.safetensors",
        "layout",
        "missing",
    ),
    (
        "missing-manifest",
        lambda d: (d / "manifest.json").unlink(),
        "manifest.json",
        "layout",
        "missing",
    ),
    (
        "manifest-no-lineage",
        lambda d: _edit_json(d / "manifest.json", lineage=None),
        "manifest.json",
        "manifest-schema",
        "lineage",
    ),
    ("manifest-unknown-key", manifest(evals={"x": 1}), "manifest.json", "manifest-schema", "evals"),
    (
        "manifest-bad-template",
        manifest(prompt_template={"completion": "no placeholder"}),
        "manifest.json",
        "manifest-schema",
        "{input}",
    ),
    (
        "manifest-other-version",
        manifest(version="v9"),
        "manifest.json",
        "manifest-identity",
        "sentiment@v9",
    ),
    (
        "tampered-weights",
        lambda d: _flip_last_byte(d / "adapter_model.safetensors"),
        "adapter_model.safetensors",
        "checksum",
        "sha256",
    ),
    (
        "unlisted-readme",
        lambda d: (d / "README.md").write_text("hi"),
        "README.md",
        "checksum",
        "not listed",
    ),
    (
        "listed-but-missing",
        manifest(
            files={
                "adapter_config.json": "0" * 64,
                "adapter_model.safetensors": "0" * 64,
                "README.md": "0" * 64,
            }
        ),
        "README.md",
        "checksum",
        "missing",
    ),
    (
        "config-not-json",
        lambda d: _rehash(d) if (d / "adapter_config.json").write_text("{nope") else None,
        "adapter_config.json",
        "config-schema",
        "JSON",
    ),
    ("peft-ia3", config(peft_type="IA3"), "adapter_config.json", "peft-type", "'IA3'"),
    ("rank-too-high", config(r=16), "adapter_config.json", "rank", "max_lora_rank=8"),
    ("rank-not-int", config(r="4"), "adapter_config.json", "rank", "positive integer"),
    ("dora", config(use_dora=True), "adapter_config.json", "unsupported-feature", "use_dora"),
    (
        "modules-to-save",
        config(modules_to_save=["lm_head"]),
        "adapter_config.json",
        "unsupported-feature",
        "modules_to_save",
    ),
    ("bias", config(bias="all"), "adapter_config.json", "unsupported-feature", "bias"),
    (
        "other-base",
        config(base_model_name_or_path="meta-llama/Llama-3-8B"),
        "adapter_config.json",
        "base-model",
        "Llama-3-8B",
    ),
    (
        "manifest-other-base",
        manifest(base_model={"id": "gpt2"}),
        "manifest.json",
        "base-model",
        "'gpt2'",
    ),
    (
        "base-config-mismatch",
        manifest(base_model={"id": "tiny-base", "config_sha256": "f" * 64}),
        "manifest.json",
        "base-model",
        "sha256",
    ),
    (
        "unknown-target",
        config(target_modules=["q_proj", "qkv_proj"]),
        "adapter_config.json",
        "target-modules",
        "qkv_proj",
    ),
    (
        "target-regex-string",
        config(target_modules="all-linear"),
        "adapter_config.json",
        "target-modules",
        "list",
    ),
    (
        "huge-header-length",
        raw_weights(lambda b: struct.pack("<Q", 2**60) + b[8:]),
        "adapter_model.safetensors",
        "safetensors-header",
        "out of bounds",
    ),
    (
        "header-not-json",
        raw_weights(lambda b: b[:8] + b"\xff" * 16 + b[24:]),
        "adapter_model.safetensors",
        "safetensors-header",
        "not valid JSON",
    ),
    (
        "appended-pickle",
        raw_weights(lambda b: b + PICKLE_TAIL),
        "adapter_model.safetensors",
        "safetensors-length",
        "trailing",
    ),
    (
        "truncated",
        raw_weights(lambda b: b[:-4]),
        "adapter_model.safetensors",
        "safetensors-length",
        "bytes",
    ),
    (
        "offsets-lie",
        raw_weights(_edit_header(lambda h: _first_tensor(h).__setitem__("shape", [3, 3]))),
        "adapter_model.safetensors",
        "safetensors-header",
        "size != dtype*shape",
    ),
    (
        "int8-weights",
        tensors(lambda t: t.update({f"{Q0}.lora_A.weight": np.zeros((4, 64), np.int8)})),
        "adapter_model.safetensors",
        "tensor-dtype",
        "I8",
    ),
    (
        "stray-tensor",
        tensors(lambda t: t.update({"lm_head.weight": np.zeros((2, 2), np.float32)})),
        "adapter_model.safetensors",
        "tensor-name",
        "lm_head.weight",
    ),
    (
        "layer-beyond-base",
        tensors(
            lambda t: t.update(
                {
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": np.zeros(
                        (4, 64), np.float32
                    ),
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight": np.zeros(
                        (64, 4), np.float32
                    ),
                }
            )
        ),
        "adapter_model.safetensors",
        "tensor-name",
        "layer 7",
    ),
    (
        "other-hidden-size",
        tensors(lambda t: t.update({f"{Q0}.lora_A.weight": np.zeros((4, 96), np.float32)})),
        "adapter_model.safetensors",
        "tensor-shape",
        "[4, 96] != [4, 64]",
    ),
    (
        "rank-mismatch",
        tensors(lambda t: t.update({f"{Q0}.lora_B.weight": np.zeros((64, 2), np.float32)})),
        "adapter_model.safetensors",
        "tensor-shape",
        "[64, 2]",
    ),
    (
        "missing-lora-b",
        tensors(lambda t: t.pop(f"{Q0}.lora_B.weight")),
        "adapter_model.safetensors",
        "tensor-missing",
        "layer 0 q_proj",
    ),
    (
        "empty-weights",
        tensors(lambda t: t.clear()),
        "adapter_model.safetensors",
        "tensor-missing",
        "no LoRA weights",
    ),
]


def _stage_valid(store: AdapterStore, tmp_path: Path) -> Path:
    """A complete, valid version directory staged inside the store (not yet registered)."""
    src = make_peft_dir(tmp_path / "peft")
    staging = store.root / "sentiment" / ".staging-v1"
    staging.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (staging / name).write_bytes((src / name).read_bytes())
    fields = manifest_fields(name="sentiment", version="v1", files={})
    (staging / "manifest.json").write_text(json.dumps(fields))
    _rehash(staging)
    return staging


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_corpus_is_large_and_every_rule_is_covered() -> None:
    assert len(CORPUS) >= 20
    assert len({case[0] for case in CORPUS}) == len(CORPUS)
    rules = {case[3] for case in CORPUS}
    documented = "layout unexpected-file no-pickle no-symlink file-size manifest-schema"
    documented += " manifest-identity checksum config-schema peft-type unsupported-feature rank"
    documented += " base-model target-modules safetensors-header safetensors-length tensor-dtype"
    documented += " tensor-name tensor-shape tensor-missing"
    assert set(documented.split()) - {"file-size"} <= rules


def test_the_unbroken_adapter_passes(store: AdapterStore, tmp_path: Path) -> None:
    staging = _stage_valid(store, tmp_path)
    version = store.register_staged(staging, "sentiment", "v1")
    report = store.validate("sentiment", "v1")
    assert version.path == store.root / "sentiment" / "v1"
    assert report.rank == 4 and report.target_modules == ("q_proj", "v_proj")
    assert any(c.startswith("checksum") for c in report.checks)


@pytest.mark.parametrize(
    ("case", "mutate", "file", "rule", "fragment"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_broken_adapter_is_refused_and_nothing_changes(
    store: AdapterStore,
    tmp_path: Path,
    case: str,
    mutate: Mutation,
    file: str,
    rule: str,
    fragment: str,
) -> None:
    staging = _stage_valid(store, tmp_path)
    mutate(staging)
    (store.root / "sentiment" / ".staging-v1").rename(store.root / "sentiment" / ".incoming")
    staging = store.root / "sentiment" / ".incoming"
    before = _tree(store.root)

    with pytest.raises(AdapterInvalid) as info:
        store.register_staged(staging, "sentiment", "v1")

    err = info.value
    assert (err.file, err.rule) == (file, rule), err.message
    assert fragment in err.message
    assert err.message.startswith(f"{file}: [{rule}]")
    assert _tree(store.root) == before  # nothing registered, nothing audited
    assert not (store.root / "sentiment" / "v1").exists()


def test_weights_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "s", TINY_SPEC, ValidationLimits(max_weights_bytes=1000))
    staging = _stage_valid(store, tmp_path)
    with pytest.raises(AdapterInvalid, match=r"\[file-size\] .* > limit 1000"):
        store.register_staged(staging, "sentiment", "v1")


def test_a_directory_outside_the_root_is_refused(store: AdapterStore, tmp_path: Path) -> None:
    outside = make_peft_dir(tmp_path / "elsewhere")
    with pytest.raises(AdapterInvalid) as info:
        validate_version(outside, root=store.root, base=TINY_SPEC)
    assert info.value.rule == "inside-root"


def test_a_symlinked_version_directory_is_refused(store: AdapterStore, tmp_path: Path) -> None:
    staging = _stage_valid(store, tmp_path)
    link = store.root / "sentiment" / "v2"
    os.symlink(staging, link)
    with pytest.raises(AdapterInvalid) as info:
        validate_version(link, root=store.root, base=TINY_SPEC)
    assert info.value.rule == "no-symlink"


def test_header_is_read_without_loading_tensors(tmp_path: Path) -> None:
    path = make_peft_dir(tmp_path / "a") / "adapter_model.safetensors"
    header = read_safetensors_header(path, ValidationLimits())
    assert header[f"{Q0}.lora_A.weight"]["shape"] == [4, 64]


def test_without_a_base_config_shape_rules_are_skipped_and_said(
    store: AdapterStore, tmp_path: Path
) -> None:
    staging = _stage_valid(store, tmp_path)
    report = validate_version(staging, root=store.root, base=None)
    assert report.skipped and "no base config" in report.skipped[0]
