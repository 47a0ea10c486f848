"""The results file: the scenario, the targets, every round (scrapes, admin actions, engine
counters), every request (columns + rows), the summary, and where it ran. `load` reads it
back, so a report can be rendered again (`loragate loadtest report results.json`)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from loadtest.tool.actions import ActionRecord, StepRecord
from loadtest.tool.records import COLUMNS, from_rows, to_rows
from loadtest.tool.runner import RoundResult, RunResult
from loadtest.tool.scenario import Scenario
from loadtest.tool.scrape import ScrapePoint
from loadtest.tool.targets import Target

FORMAT = 1


def environment(note: str = "") -> dict[str, Any]:
    """Where the numbers come from (a shared 2-core box reads differently from a server)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(load[0], 2) if load else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "note": note,
    }


def _target(target: Target) -> dict[str, Any]:
    return {"name": target.name, "urls": list(target.urls), "kind": target.kind}


def _round(rnd: RoundResult) -> dict[str, Any]:
    return {
        "target": rnd.target,
        "index": rnd.index,
        "started_at": rnd.started_at,
        "send_s": round(rnd.send_s, 4),
        "wall_s": round(rnd.wall_s, 4),
        "abandoned": rnd.abandoned,
        "sim_engine": rnd.sim_engine,
        "actions": [
            {
                **{k: v for k, v in vars(a).items() if k != "steps"},
                "steps": [vars(s) for s in a.steps],
            }
            for a in rnd.actions
        ],
        "scrapes": [
            {"t_s": round(p.t_s, 3), "url": p.url, "values": p.values} for p in rnd.scrapes
        ],
    }


def to_json(run: RunResult, summary: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool": "loragate loadtest",
        "format": FORMAT,
        "started_at": run.started_at,
        "scenario": run.scenario.model_dump(mode="json"),
        "targets": [_target(t) for t in run.targets],
        "environment": env,
        "summary": summary,
        "rounds": [_round(r) for r in run.rounds],
        "records": {"columns": list(COLUMNS), "rows": to_rows(run.records)},
    }


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def _round_from(data: dict[str, Any]) -> RoundResult:
    actions = []
    for a in data.get("actions", []):
        steps = [StepRecord(**s) for s in a["steps"]]
        actions.append(ActionRecord(**{k: v for k, v in a.items() if k != "steps"}, steps=steps))
    return RoundResult(
        target=data["target"],
        index=data["index"],
        started_at=data["started_at"],
        send_s=data["send_s"],
        wall_s=data["wall_s"],
        abandoned=data["abandoned"],
        scrapes=[ScrapePoint(p["t_s"], p["url"], p["values"]) for p in data["scrapes"]],
        actions=actions,
        sim_engine=data.get("sim_engine", {}),
    )


def load(path: Path) -> tuple[RunResult, dict[str, Any]]:
    """A saved run and its environment block. Raises ValueError for another file format."""
    data = json.loads(path.read_text())
    if data.get("tool") != "loragate loadtest" or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a loragate loadtest results file (format {FORMAT})")
    targets = [Target(t["name"], tuple(t["urls"]), kind=t["kind"]) for t in data["targets"]]
    run = RunResult(
        scenario=Scenario.model_validate(data["scenario"]),
        targets=targets,
        rounds=[_round_from(r) for r in data["rounds"]],
        records=from_rows(data["records"]["columns"], data["records"]["rows"]),
        started_at=data["started_at"],
    )
    return run, data.get("environment", {})
