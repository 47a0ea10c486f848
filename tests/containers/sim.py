"""The simulated engine in place of vLLM: the same flags for what the gateway relies on.

A deployment file starts vLLM with `--model PATH --served-model-name NAME --enable-lora
--max-loras N --max-cpu-loras M --max-lora-rank R ...`; the simulated engine (loadtest/sim, the
`sim` target of the Dockerfile) takes the served name as `--model` and the same capacity flags,
so the gateway meets an engine of the capacity the file declares. Weights, dtype and
accelerator flags mean nothing to it and are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

# vLLM flags the simulated engine takes under the same name.
KEPT = frozenset({"--host", "--port", "--max-loras", "--max-cpu-loras", "--max-lora-rank",
                  "--max-model-len", "--max-num-seqs"})  # fmt: skip
RENAMED = {"--served-model-name": "--model"}


def sim_args(vllm_args: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The simulated engine's arguments for a vLLM command line (`extra` appended)."""
    args: list[str] = []
    model: str | None = None
    tokens = list(vllm_args)
    i = 0
    while i < len(tokens):
        flag, value = tokens[i], None
        if "=" in flag:
            flag, value = flag.split("=", 1)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 1
        i += 1
        if flag == "--model":
            model = value
        name = RENAMED.get(flag, flag if flag in KEPT else None)
        if name is not None:
            if value is None:
                raise ValueError(f"{flag} needs a value")
            args += [name, value]
    if "--model" not in args:  # vLLM serves the model under its --model argument then
        if model is None:
            raise ValueError("the vLLM command names no --model")
        args += ["--model", model]
    return [*args, *extra]
