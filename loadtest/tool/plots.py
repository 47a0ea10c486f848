"""The report's figures (matplotlib, PNG): latency CDF, TTFT by popularity rank, throughput
and loragate's loads / evictions / thrash over time, errors over time, and the versions served
around an admin action. matplotlib is imported here only (the `loadtest` extra)."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.tool.records import RequestRecord
from loadtest.tool.runner import RoundResult, RunResult
from loadtest.tool.stats import buckets, measured, percentile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BUCKET_S = 1.0


def _figure(rows: int = 1, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(8, height * rows), squeeze=False, sharex=rows > 1)
    return fig, [row[0] for row in axes]


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(run: RunResult) -> list[tuple[str, RoundResult, list[RequestRecord]]]:
    """(label, round, its records) for every round."""
    several = run.scenario.rounds > 1
    found = []
    for rnd in run.rounds:
        records = [r for r in run.records if r.target == rnd.target and r.round == rnd.index]
        found.append((f"{rnd.target} r{rnd.index}" if several else rnd.target, rnd, records))
    return found


def latency_cdf(run: RunResult, path: Path) -> Path:
    fig, (ax,) = _figure()
    for target in run.targets:
        values = sorted(
            r.total_s * 1000 for r in measured(run.records) if r.target == target.name and r.ok
        )
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=target.name)
    ax.set_xscale("log")
    ax.set_xlabel("request latency, OK answers (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{run.scenario.name}: latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def ttft_by_rank(run: RunResult, path: Path) -> Path:
    fig, (ax,) = _figure()
    streamed = any(r.ttft_s is not None for r in run.records)
    for target in run.targets:
        by_rank: dict[int, list[float]] = defaultdict(list)
        for r in measured(run.records):
            if r.target == target.name and r.ok:
                value = r.ttft_s if streamed else r.total_s
                if value is not None:
                    by_rank[r.rank].append(value * 1000)
        ranks = sorted(by_rank)
        ax.plot(
            ranks, [statistics.median(by_rank[k]) for k in ranks], "o-", label=f"{target.name} p50"
        )
        ax.plot(
            ranks, [percentile(by_rank[k], 0.9) for k in ranks], "x--", label=f"{target.name} p90"
        )
    ax.set_xlabel("adapter popularity rank (1 = most requested; 0 = base model)")
    ax.set_ylabel(("time to first token" if streamed else "latency (no streams)") + " (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{run.scenario.name}: by popularity rank")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _rates(points: list[Any], key: str) -> tuple[list[float], list[float]]:
    """Per-second rate of a scraped counter (summed over URLs) between successive polls."""
    by_url: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        by_url[p.url].append((p.t_s, p.values.get(key, 0.0)))
    xs, ys = [], []
    per_bucket: dict[int, float] = defaultdict(float)
    for series in by_url.values():
        for (t0, v0), (t1, v1) in itertools.pairwise(series):
            if t1 > t0:
                per_bucket[int(t1 // BUCKET_S)] += (v1 - v0) / (t1 - t0)
    for k in sorted(per_bucket):
        xs.append(k * BUCKET_S)
        ys.append(per_bucket[k])
    return xs, ys


def throughput(run: RunResult, path: Path) -> Path:
    scraped = any(rnd.scrapes for rnd in run.rounds)
    fig, axes = _figure(2 if scraped else 1, 3.5)
    for label, rnd, records in _series(run):
        grouped = buckets((r for r in records if r.ok), BUCKET_S)
        xs = sorted(grouped)
        axes[0].plot(
            [x * BUCKET_S for x in xs], [len(grouped[x]) / BUCKET_S for x in xs], label=label
        )
        for action in rnd.actions:
            for ax in axes:
                ax.axvline(action.started_s, color="grey", linestyle=":", linewidth=1)
        if scraped and rnd.scrapes:
            for key, style in (("loads", "-"), ("evictions", "--"), ("thrash", ":")):
                axes[1].plot(*_rates(rnd.scrapes, key), style, label=f"{label} {key}")
    axes[0].set_ylabel("OK answers / s")
    axes[0].set_title(f"{run.scenario.name}: throughput over time")
    if scraped:
        axes[1].set_ylabel("per second (loragate /metrics)")
    axes[-1].set_xlabel("seconds into the round")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def errors(run: RunResult, path: Path) -> Path:
    fig, (ax,) = _figure()
    for label, _rnd, records in _series(run):
        by_outcome: dict[str, list[RequestRecord]] = defaultdict(list)
        for r in records:
            if not r.ok:
                by_outcome[r.outcome].append(r)
        for outcome, failed in sorted(by_outcome.items()):
            grouped = buckets(failed, BUCKET_S)
            xs = sorted(grouped)
            ax.plot(
                [x * BUCKET_S for x in xs],
                [len(grouped[x]) for x in xs],
                "o-",
                label=f"{label} {outcome}",
            )
    ax.set_xlabel("seconds into the round")
    ax.set_ylabel(f"failed requests per {BUCKET_S:g} s")
    ax.set_title(f"{run.scenario.name}: errors over time" + ("" if ax.lines else " (none)"))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return _save(fig, path)


def versions(run: RunResult, path: Path) -> Path:
    """Around each action: which version served each request, by start time."""
    fig, (ax,) = _figure()
    for _label, rnd, records in _series(run):
        for action in rnd.actions:
            mine = [r for r in records if r.adapter == action.adapter]
            names = sorted({r.version or r.outcome for r in mine})
            ys = [names.index(r.version or r.outcome) for r in mine]
            ax.scatter([r.start_s for r in mine], ys, s=4)
            ax.set_yticks(range(len(names)), names)
            ax.axvline(action.started_s, color="grey", linestyle=":")
            ax.axvline(action.ended_s, color="grey", linestyle="--")
    ax.set_xlabel("request start, seconds into the round (dotted: action start, dashed: end)")
    ax.set_title(f"{run.scenario.name}: version served (X-Adapter-Version) or outcome")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def render_all(run: RunResult, outdir: Path) -> list[Path]:
    """Every figure that applies to `run`, written under `outdir`. Raises ImportError when
    matplotlib is not installed."""
    outdir.mkdir(parents=True, exist_ok=True)
    made = [
        latency_cdf(run, outdir / "latency_cdf.png"),
        ttft_by_rank(run, outdir / "ttft_by_rank.png"),
        throughput(run, outdir / "throughput.png"),
        errors(run, outdir / "errors.png"),
    ]
    if any(rnd.actions for rnd in run.rounds):
        made.append(versions(run, outdir / "versions.png"))
    return made
