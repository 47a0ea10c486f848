"""A load test end to end: where the targets come from (given, or a simulated deployment
started for the run), the run, and its outputs: `results.json`, `report.md`, the figures."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.tool import plots, report, results
from loadtest.tool.analysis import summarize
from loadtest.tool.deployment import simulated
from loadtest.tool.progress import Progress
from loadtest.tool.runner import RunResult, run
from loadtest.tool.scenario import Scenario, TargetSpec
from loadtest.tool.scenario_files import ScenarioError
from loadtest.tool.targets import from_spec

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


@dataclass
class Outcome:
    out: Path
    run: RunResult
    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)
    figures_skipped: str = ""  # why there are none (matplotlib missing)

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS_FILE

    @property
    def report_path(self) -> Path:
        return self.out / REPORT_FILE


def _with_keys(scenario: Scenario, keys: list[str]) -> Scenario:
    if scenario.workload.api_keys or not keys:
        return scenario
    workload = scenario.workload.model_copy(update={"api_keys": keys})
    return scenario.model_copy(update={"workload": workload})


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    targets: list[TargetSpec] | None = None,
    progress: Progress | None = None,
    note: str = "",
    figures: bool = True,
) -> Outcome:
    """Run `scenario` against `targets` (default: the scenario's own, else its simulated
    deployment) and write the outputs under `out`. Raises `ScenarioError` when there is
    nothing to send to, RuntimeError when the simulated deployment does not start."""
    specs = targets or scenario.targets
    with contextlib.ExitStack() as stack:
        if specs:
            resolved = [from_spec(spec) for spec in specs]
            adapters = scenario.workload.adapters
        elif scenario.sim is not None:
            deployment = stack.enter_context(simulated(scenario.sim))
            resolved = deployment.targets
            adapters = scenario.workload.adapters or deployment.adapters
            scenario = _with_keys(scenario, deployment.api_keys)
        else:
            raise ScenarioError(
                "no target: pass --target URL, or give the scenario `targets` or `sim`"
            )
        finished = asyncio.run(run(scenario, resolved, adapters, progress))
    return write_outputs(finished, out, results.environment(note), figures=figures)


def write_outputs(
    finished: RunResult, out: Path, env: dict[str, Any], *, figures: bool = True
) -> Outcome:
    summary = summarize(finished)
    outcome = Outcome(out, finished, summary)
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        try:
            outcome.figures = plots.render_all(finished, out)
        except ImportError:
            outcome.figures_skipped = (
                "matplotlib is not installed: pip install 'loragate[loadtest]'"
            )
    names = [p.name for p in outcome.figures]
    outcome.report_path.write_text(report.render(finished, summary, env, names))
    results.save(outcome.results_path, results.to_json(finished, summary, env))
    return outcome


def rerender(results_path: Path, out: Path | None = None) -> Outcome:
    """The report and figures of a saved run, again (e.g. after changing a plot)."""
    finished, env = results.load(results_path)
    return write_outputs(finished, out or results_path.parent, env)
