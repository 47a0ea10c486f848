"""Micro-benchmark: the LoRA work of one model step of the demo model on vLLM's CPU path, old
plugin vs new, in one process, side by side (issue 17).

    python -m loadtest.bench_lora_ops --reps 7

One "step" is what vLLM's LoRA layers do per forward pass of the demo base (SmolLM2-135M):
30 layers x `PunicaWrapperCPU.add_lora_linear` on q/k/v (576 -> 576+192+192), o (576 -> 576),
gate/up (576 -> 1536+1536) and down (1536 -> 576), with 3 slots of rank 8 that hold q/v
adapters (the demo store's; the other slices stay zero, as in the engine). Rows are B requests
round robin over the 3 adapters: decode = 1 token each, prefill = 32 tokens each; vLLM's CPU
runner maps both as prefill (sgmv ops). Variants, alternating in every repetition:

- before: vLLM's wrapper with the plugin's ops as of BEFORE_REF (git), what engines ran;
- ops:    vLLM's wrapper with today's ops (the engine with LORAGATE_CPU_LORA_FUSED=0);
- after:  today's plugin (fused add_lora_linear);
- base:   the base model's own linear layers for the same rows (F.linear), as a yardstick.

One thread (the engine runs one OpenMP thread). Needs the engine venv (torch, vllm) and git.
Writes loadtest/results/lora_ops.json and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

# The last commit whose server/vllm_plugin.py is the gather-per-token fix (before issue 17).
BEFORE_REF = "ae97dae"
LAYERS, SLOTS, RANK, HIDDEN, INTERMEDIATE = 30, 3, 8, 576, 1536
# (input width, output slices, adapter-trained slices) per wrapped module of a layer.
MODULES = (
    (HIDDEN, (HIDDEN, 192, 192), (0, 2)),  # qkv_proj: q and v trained
    (HIDDEN, (HIDDEN,), ()),  # o_proj
    (HIDDEN, (INTERMEDIATE, INTERMEDIATE), ()),  # gate_up_proj
    (INTERMEDIATE, (HIDDEN,), ()),  # down_proj
)
PROMPT_TOKENS = 32
VARIANTS = ("before", "ops", "after", "base")


def plugin_source(ref: str, repo: Path) -> str:
    """server/vllm_plugin.py as it was at `ref`."""
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:server/vllm_plugin.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


@contextlib.contextmanager
def plugin_tree(ref: str, repo: Path) -> Iterator[Path]:
    """A directory holding `server/vllm_plugin.py` at `ref`: run an engine there (cwd) and vLLM
    loads that plugin through the entry point `server.vllm_plugin:register`."""
    with tempfile.TemporaryDirectory(prefix="loragate-plugin-") as tmp:
        package = Path(tmp) / "server"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "vllm_plugin.py").write_text(plugin_source(ref, repo))
        yield Path(tmp)


def load_plugin(ref: str, repo: Path) -> ModuleType:
    """The plugin module at `ref`, imported under its own name beside today's."""
    with plugin_tree(ref, repo) as tree:
        path = tree / "server" / "vllm_plugin.py"
        spec = importlib.util.spec_from_file_location(f"loragate_plugin_{ref}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return module


class Step:
    """The weights, inputs and a PunicaWrapperCPU for B requests; `run()` is one model step."""

    def __init__(self, requests: int, tokens_each: int, dtype: str, seed: int = 0) -> None:
        import torch

        with warnings.catch_warnings():  # vLLM's import chain warns about torch.jit
            warnings.simplefilter("ignore", DeprecationWarning)
            from vllm.lora.layers.utils import LoRAMapping
            from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

        generator = torch.Generator().manual_seed(seed)
        rows = requests * tokens_each
        ids = tuple(1 + (r // tokens_each) % SLOTS for r in range(rows))  # lora id = slot + 1
        self.wrapper = PunicaWrapperCPU(max(rows, 2048), max(requests, 256), "cpu")
        self.wrapper.update_metadata(
            LoRAMapping(ids, ids[::tokens_each], is_prefill=True),
            list(range(1, SLOTS + 1)), SLOTS + 1, 49152,
        )  # fmt: skip
        self.layers: list[list[tuple[Any, ...]]] = []
        kind = getattr(torch, dtype)
        for _ in range(LAYERS):
            modules = []
            for width_in, widths, trained in MODULES:
                a = tuple(torch.zeros(SLOTS, 1, RANK, width_in) for _ in widths)
                b = tuple(torch.zeros(SLOTS, 1, out, RANK) for out in widths)
                for i in trained:
                    a[i].normal_(generator=generator).div_(width_in**0.5)
                    b[i].normal_(generator=generator).mul_(0.01)
                x = torch.randn(rows, width_in, generator=generator)
                y = torch.zeros(rows, sum(widths))
                base = torch.randn(sum(widths), width_in, generator=generator)
                a, b = tuple(t.to(kind) for t in a), tuple(t.to(kind) for t in b)
                modules.append((x.to(kind), y.to(kind), a, b, widths, base.to(kind)))
            self.layers.append(modules)

    def run(self) -> None:
        for modules in self.layers:
            for x, y, a, b, widths, _ in modules:
                self.wrapper.add_lora_linear(y, x, a, b, 1.0, widths)

    def run_base(self) -> None:
        import torch

        for modules in self.layers:
            for x, _, _, _, _, base in modules:
                torch.nn.functional.linear(x, base)


class Installer:
    """Switches vLLM's CPU LoRA path between the variants in this process."""

    def __init__(self, before: ModuleType) -> None:
        from server.vllm_plugin import ops, plugin, wrapper

        self.ops, self.plugin, self.wrapper = ops, plugin, wrapper
        self.punica = importlib.import_module(plugin.WRAPPER_MODULE)
        wrapper_class = getattr(self.punica, plugin.WRAPPER_CLASS)
        self.stock_methods = {n: getattr(wrapper_class, n) for n in wrapper.FIXED_WRAPPER_METHODS}
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        plugin.register()  # today's plugin, fused methods included
        self.before_ops: dict[str, Callable[..., None]] = before.FIXED_OPS

    def install(self, variant: str) -> None:
        wrapper_class = getattr(self.punica, self.plugin.WRAPPER_CLASS)
        ops = self.before_ops if variant == "before" else self.ops.FIXED_OPS
        for name, op in ops.items():
            setattr(self.punica, name, op)
        fused = variant == "after"
        for name, stock in self.stock_methods.items():
            setattr(
                wrapper_class, name, self.wrapper.FIXED_WRAPPER_METHODS[name] if fused else stock
            )


def time_variants(step: Step, installer: Installer, reps: int) -> dict[str, list[float]]:
    """ms per step for each variant, `reps` times, the variants' order rotating."""
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(reps + 1):  # the first round warms up (caches, allocator) and is dropped
        order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
        for variant in order:
            if variant != "base":
                installer.install(variant)
            start = time.perf_counter()
            if variant == "base":
                step.run_base()
            else:
                step.run()
            if rep:
                times[variant].append((time.perf_counter() - start) * 1000)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
            "max_ms": round(max(times), 3)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    installer = Installer(load_plugin(args.before_ref, Path(args.repo)))
    rows: list[dict[str, Any]] = []
    phases = (("decode", 1, args.decode_batches), ("prefill", PROMPT_TOKENS, args.prefill_batches))
    for phase, tokens_each, batches in phases:
        for requests in batches:
            step = Step(requests, tokens_each, args.dtype)
            times = time_variants(step, installer, args.reps)
            row = {"phase": phase, "requests": requests, "tokens": requests * tokens_each}
            row.update({v: summarize(t) for v, t in times.items()})
            rows.append(row)
            print(table_line(row), flush=True)
    installer.install("after")
    return {"config": {k: str(v) for k, v in vars(args).items()}, "unit": "ms per model step",
            "rows": rows}  # fmt: skip


def table_line(row: dict[str, Any]) -> str:
    cells = "".join(f"{row[v]['median_ms']:>10.2f}" for v in VARIANTS)
    speedup = row["before"]["median_ms"] / row["after"]["median_ms"]
    share = row["after"]["median_ms"] / row["base"]["median_ms"]
    return (f"{row['phase']:>8}{row['requests']:>5}{row['tokens']:>7}{cells}"
            f"{speedup:>9.1f}x{share:>10.2f}")  # fmt: skip


TABLE_HEADER = (f"{'phase':>8}{'reqs':>5}{'tokens':>7}" + "".join(f"{v:>10}" for v in VARIANTS)
                + f"{'speedup':>10}{'after/base':>10}")  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, phase in zip(axes, ("decode", "prefill"), strict=True):
        rows = [r for r in result["rows"] if r["phase"] == phase]
        xs = [r["requests"] for r in rows]
        for variant in VARIANTS:
            ys = [r[variant]["median_ms"] for r in rows]
            low = [r[variant]["min_ms"] for r in rows]
            high = [r[variant]["max_ms"] for r in rows]
            label = "base linear layers" if variant == "base" else f"LoRA, {variant}"
            ax.plot(xs, ys, marker="o", label=label)
            ax.fill_between(xs, low, high, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        tokens = "1 token" if phase == "decode" else f"{PROMPT_TOKENS} tokens"
        ax.set_title(f"{phase}: requests x {tokens}, 3 q/v adapters, {result['config']['dtype']}")
        ax.set_xlabel("requests in the batch")
        ax.set_ylabel("ms per model step (30 layers), 1 thread")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--decode-batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--prefill-batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--before-ref", default=BEFORE_REF, help="git ref of the old plugin")
    parser.add_argument("--repo", default=".", help="git checkout to read --before-ref from")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--ops-out", type=Path, default=Path("loadtest/results/lora_ops.json"))


def main(args: argparse.Namespace | None = None) -> dict[str, Any]:
    if args is None:
        parser = argparse.ArgumentParser(
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(parser)
        args = parser.parse_args()
    print(TABLE_HEADER)
    result = run(args)
    args.ops_out.parent.mkdir(parents=True, exist_ok=True)
    args.ops_out.write_text(json.dumps(result, indent=2) + "\n")
    with contextlib.suppress(ImportError):  # matplotlib comes with the dev extra
        plot(result, args.ops_out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
