"""Rules on a version's files: layout, symlinks, containment, pickles, sizes, the manifest
and its checksums. Each raises `AdapterInvalid(file, rule, detail)`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from server.errors import AdapterInvalid
from server.store.layout import (
    CHECKSUMMED,
    CONFIG_FILE,
    EVALS_DIR,
    MANIFEST_FILE,
    PICKLE_SUFFIXES,
    README_FILE,
    WEIGHTS_FILE,
    Hasher,
    ValidationLimits,
    ValidationReport,
)
from server.store.manifest import Manifest


def check_tree(
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
            check_file_kind(rel)
            limit = limits.max_weights_bytes if rel == WEIGHTS_FILE else limits.max_json_bytes
            if st.st_size > limit:
                raise AdapterInvalid(rel, "file-size", f"{st.st_size} bytes > limit {limit}")
            sizes[rel] = st.st_size
    for required in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
        if required not in sizes:
            raise AdapterInvalid(required, "layout", "required file is missing")
    report.checks.append("layout: required files present, nothing else; no symlinks; sizes ok")
    return sizes


def check_file_kind(rel: str) -> None:
    if rel.lower().endswith(PICKLE_SUFFIXES):
        raise AdapterInvalid(rel, "no-pickle", "pickle-format weights are refused; use safetensors")
    top_level = {CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, README_FILE}
    is_eval = rel.startswith(f"{EVALS_DIR}/") and rel.endswith(".json") and rel.count("/") == 1
    if rel in top_level or is_eval:
        return
    raise AdapterInvalid(rel, "unexpected-file", f"allowed: {sorted(top_level)} and evals/*.json")


def check_manifest(
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
