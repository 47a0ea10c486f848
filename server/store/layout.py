"""What a version directory holds (its file names), the limits on it, and what a
validation reports. Shared by the tree rules, the tensor rules and the store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = "adapter_config.json"

WEIGHTS_FILE = "adapter_model.safetensors"

MANIFEST_FILE = "manifest.json"

README_FILE = "README.md"

EVALS_DIR = "evals"

# Files the manifest must checksum (README optional). manifest.json and evals/ are not in it:
# the manifest cannot hash itself, and eval reports are added after registration.
CHECKSUMMED = (CONFIG_FILE, WEIGHTS_FILE, README_FILE)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds on an adapter version; sizes in bytes."""

    max_lora_rank: int = 64
    max_weights_bytes: int = 512 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # safetensors' own reader refuses headers over 100 MB; ours are a few KB.
    max_header_bytes: int = 16 * 1024 * 1024


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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
