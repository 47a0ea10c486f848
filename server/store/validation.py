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

from pathlib import Path

from server.store.base_model import BaseModelSpec
from server.store.layout import (
    WEIGHTS_FILE,
    Hasher,
    ValidationLimits,
    ValidationReport,
    sha256_file,
)
from server.store.tensor_rules import (
    check_base,
    check_config,
    check_tensors,
    read_safetensors_header,
)
from server.store.tree_rules import check_manifest, check_tree


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
    files = check_tree(version_dir, root, limits, report)
    manifest = check_manifest(version_dir, files, expect, hasher, report)
    config = check_config(version_dir, limits, report)
    check_base(manifest, config, base, report)
    header = read_safetensors_header(version_dir / WEIGHTS_FILE, limits)
    report.checks.append("safetensors-header: header parsed, offsets contiguous, no trailing bytes")
    check_tensors(header, config, base, report)
    report.weights_bytes = files[WEIGHTS_FILE]
    return report
