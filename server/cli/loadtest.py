"""`loragate loadtest`: load any OpenAI-compatible deployment and report what happened.

    loragate loadtest run swap-storm                      # a shipped scenario, simulated
    loragate loadtest run --target http://gw:8000 --adapters a,b,c --rate 20 --duration 60
    loragate loadtest run my.yaml -t gw=http://gw:8000 -t vllm=http://engine:8001 \\
        --model-format 'vllm={adapter}@v1'                # two targets, alternating rounds
    loragate loadtest report results.json                 # the report and figures again

The tool itself is `loadtest.tool` (installed with the `loadtest` extra: aiohttp and
matplotlib), imported only when a command runs so that `loragate --help` needs neither.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from loadtest.tool.scenario import Scenario, TargetSpec
    from loadtest.tool.session import Outcome

app = typer.Typer(help="Load a deployment (loragate, vLLM, any OpenAI API) and report.")
console = Console()
err_console = Console(stderr=True)
INSTALL_HINT = "the load test tool needs the loadtest extra: pip install 'loragate[loadtest]'"


class Arrival(enum.StrEnum):
    poisson = "poisson"
    constant = "constant"
    concurrency = "concurrency"
    trace = "trace"


class PopularityKind(enum.StrEnum):
    uniform = "uniform"
    zipf = "zipf"
    cycle = "cycle"
    trace = "trace"


def _tool_available() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        err_console.print(f"[red]error:[/red] {INSTALL_HINT}")
        raise typer.Exit(2) from None


def _flag_overrides(flags: dict[str, Any]) -> list[tuple[str, Any]]:
    """Scenario paths set by the flags that were given (None: not given)."""
    paths = {
        "arrival": "arrivals.kind",
        "rate": "arrivals.rate",
        "ramp_to": "arrivals.ramp_to",
        "clients": "arrivals.clients",
        "popularity": "workload.popularity.kind",
        "zipf_alpha": "workload.popularity.alpha",
        "hot_set": "workload.popularity.hot_set",
        "trace": "workload.popularity.trace",
        "base_share": "workload.base_share",
        "stream": "workload.stream",
        "prompt_tokens": "workload.prompt_tokens",
        "output_tokens": "workload.output_tokens",
        "endpoint": "workload.endpoint",
        "duration": "bounds.duration_s",
        "requests": "bounds.requests",
        "warmup": "bounds.warmup_s",
        "rounds": "rounds",
        "seed": "workload.seed",
    }
    found: list[tuple[str, Any]] = []
    for flag, path in paths.items():
        value = flags.get(flag)
        if value is not None:
            found.append((path, str(value) if isinstance(value, Path | enum.Enum) else value))
    if flags.get("clients") is not None and flags.get("arrival") is None:
        found.append(("arrivals.kind", "concurrency"))
    if flags.get("adapters"):
        found.append(("workload.adapters", [a.strip() for a in flags["adapters"].split(",")]))
    if flags.get("api_key"):
        found.append(("workload.api_keys", list(flags["api_key"])))
    return found


def _scenario(source: str | None, flags: dict[str, Any], sets: list[str]) -> Scenario:
    from loadtest.tool import scenario_files

    data = scenario_files.read(scenario_files.resolve(source)) if source else {}
    for path, value in _flag_overrides(flags):
        scenario_files.set_path(data, path, value)
    return scenario_files.build(data, sets)


def _targets(flags: list[str], formats: list[str]) -> list[TargetSpec]:
    from loadtest.tool.targets import parse_flag

    specs = [parse_flag(text, i) for i, text in enumerate(flags)]
    for fmt in formats:
        name, sep, template = fmt.partition("=")
        if not sep or "{" in name:
            name, template = "", fmt
        specs = [
            s.model_copy(update={"model": template}) if name in ("", s.name) else s for s in specs
        ]
    return specs


def _summary_table(outcome: Outcome) -> Table:
    table = Table(title=f"{outcome.run.scenario.name}: results")
    table.add_column("target", no_wrap=True)
    for column in ("requests", "OK", "goodput/s", "p50/p99 ms"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("answers", overflow="fold", min_width=8)
    table.add_column("loads/ev/thr", justify="right", no_wrap=True)
    for name, s in outcome.summary["targets"].items():
        scraped = s["loragate"]
        swaps = "/".join(
            f"{scraped[k]:.0f}" for k in ("loads", "evictions", "thrash") if k in scraped
        )
        latency = s["latency"]
        table.add_row(
            name,
            str(s["requests"]),
            str(s["ok"]),
            f"{s['goodput_rps']:.1f}",
            f"{latency['p50_ms'] or 0:.0f}/{latency['p99_ms'] or 0:.0f}",
            ", ".join(f"{k}: {v}" for k, v in s["outcomes"].items()),
            swaps or "-",
        )
    return table


def _print_outcome(outcome: Outcome) -> None:
    console.print(_summary_table(outcome))
    for name, s in outcome.summary["targets"].items():
        for sw in s["switches"]:
            console.print(
                f"{escape(name)}: switch to {sw['expect']}: {sw['failed_during_switch']} failed of"
                f" {sw['requests_during_switch']} during it; 100 % new version after"
                f" {sw['time_to_100pct_ms']} ms"
            )
        swap = s["swap_overhead"]
        if swap:
            halves = swap["overhead_first_half_ms"], swap["overhead_second_half_ms"]
            console.print(
                f"{escape(name)}: swap overhead {swap['overhead_mean_ms']} ms mean"
                f" (first half {halves[0]}, second half {halves[1]})"
            )
    if outcome.figures_skipped:
        err_console.print(f"[yellow]no figures:[/yellow] {outcome.figures_skipped}")
    console.print(f"report: {outcome.report_path}\nresults: {outcome.results_path}")


@app.command("run")
def run(
    scenario: Annotated[str | None, typer.Argument(help="scenario file, or a shipped name")] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="[NAME=]URL[,URL…] (repeat)")
    ] = None,
    model_format: Annotated[
        list[str] | None,
        typer.Option("--model-format", help="[NAME=]FORMAT, e.g. '{adapter}@v1' for vLLM"),
    ] = None,
    adapters: Annotated[str | None, typer.Option(help="a,b,c in popularity order")] = None,
    arrival: Annotated[Arrival | None, typer.Option(help="open loop or closed loop")] = None,
    rate: Annotated[float | None, typer.Option(help="requests/s (open loop)")] = None,
    ramp_to: Annotated[float | None, typer.Option(help="rate at the end of a round")] = None,
    clients: Annotated[int | None, typer.Option(help="closed loop: concurrent clients")] = None,
    popularity: Annotated[PopularityKind | None, typer.Option()] = None,
    zipf_alpha: Annotated[float | None, typer.Option()] = None,
    hot_set: Annotated[int | None, typer.Option(help="only the first N adapters")] = None,
    trace: Annotated[Path | None, typer.Option(help="CSV timestamp_s,model or JSON lines")] = None,
    base_share: Annotated[float | None, typer.Option(help="share of base-model requests")] = None,
    stream: Annotated[float | None, typer.Option(help="share of streamed requests, 0..1")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help="prompt words (fixed)")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="max_tokens (fixed)")] = None,
    endpoint: Annotated[str | None, typer.Option(help="completions or chat")] = None,
    api_key: Annotated[
        list[str] | None, typer.Option("--api-key", envvar="LORAGATE_API_KEY", help="tenant key")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="seconds per round")] = None,
    requests: Annotated[int | None, typer.Option(help="requests per round")] = None,
    warmup: Annotated[float | None, typer.Option(help="seconds left out of summaries")] = None,
    rounds: Annotated[int | None, typer.Option(help="rounds per target")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted.key=value (YAML value)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output directory")] = None,
    note: Annotated[str, typer.Option(help="recorded with the results")] = "",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    figures: Annotated[bool, typer.Option("--figures/--no-figures")] = True,
) -> None:
    """Run a scenario (a file, a shipped name, or flags only) and write the report."""
    _tool_available()
    from loadtest.tool.progress import RichProgress
    from loadtest.tool.scenario_files import ScenarioError
    from loadtest.tool.session import run_scenario

    flags = {k: v for k, v in locals().items() if k not in ("scenario", "set_", "target")}
    try:
        chosen = _scenario(scenario, flags, list(set_ or []))
        targets = _targets(list(target or []), list(model_format or []))
    except (ScenarioError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    where = out or Path("loadtest-results") / f"{chosen.name}-{stamp}"
    shown = RichProgress(console) if progress and console.is_terminal else None
    try:
        outcome = run_scenario(
            chosen, where, targets=targets, progress=shown, note=note, figures=figures
        )
    except (ScenarioError, RuntimeError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _print_outcome(outcome)
    if any(s["ok"] == 0 for s in outcome.summary["targets"].values()):
        raise typer.Exit(1)


@app.command("report")
def report(
    results: Annotated[Path, typer.Argument(help="a results.json of loragate loadtest")],
    out: Annotated[Path | None, typer.Option(help="default: next to the results")] = None,
) -> None:
    """Render report.md and the figures of a saved run again."""
    _tool_available()
    from loadtest.tool.session import rerender

    try:
        outcome = rerender(results, out)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _print_outcome(outcome)


@app.command("scenarios")
def scenarios() -> None:
    """The shipped scenarios (run one with `loragate loadtest run NAME`)."""
    from loadtest.tool import scenario_files

    table = Table(show_header=True)
    table.add_column("name")
    table.add_column("what it measures", overflow="fold")
    for name, path in scenario_files.shipped().items():
        description = str(scenario_files.read(path).get("description", "")).strip()
        table.add_row(name, description.split(". ")[0])
    console.print(table)
