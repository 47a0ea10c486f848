"""Admin actions during a round (rollback, register + promote, canary, pin, prewarm), on the
same event loop as the traffic, timed step by step for the switch analysis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.tool.scenario import Action, Step
from loadtest.tool.targets import Target


class ActionError(RuntimeError):
    """Raised when a step cannot even be attempted (a register source that does not exist)."""


@dataclass
class StepRecord:
    kind: str
    version: str | None
    status: int  # HTTP status of the admin call (0: no answer)
    took_ms: float
    detail: str = ""


@dataclass
class ActionRecord:
    """An action as it ran; times in seconds since the start of the round."""

    adapter: str
    expect: str | None
    at_s: float
    started_s: float = 0.0
    ended_s: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(200 <= s.status < 300 for s in self.steps)


def step_path(adapter: str, step: Step) -> str:
    if step.kind in ("rollback", "promote", "canary"):
        return f"/admin/adapters/{adapter}/{step.kind}"
    if step.kind == "register":
        return f"/admin/adapters/{adapter}/versions"
    return f"/admin/adapters/{adapter}/versions/{step.version}/{step.kind}"


def step_body(step: Step) -> dict[str, Any] | None:
    if step.kind == "promote":
        return {"version": step.version, "force": step.force}
    if step.kind == "canary":
        return {"version": step.version, "weight": step.weight}
    if step.kind == "register":
        return {"version": step.version}
    return None


class ActionRunner:
    """Runs a round's actions at their times against the target's first URL."""

    def __init__(self, session: aiohttp.ClientSession, target: Target, round_start: float):
        self.session = session
        self.target = target
        self.round_start = round_start
        self.records: list[ActionRecord] = []
        token = target.admin_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def run(self, actions: list[Action]) -> None:
        for action in sorted(actions, key=lambda a: a.at_s):
            delay = action.at_s - (time.perf_counter() - self.round_start)
            await asyncio.sleep(max(0.0, delay))
            record = ActionRecord(action.adapter, action.expect, action.at_s)
            record.started_s = time.perf_counter() - self.round_start
            self.records.append(record)
            for step in action.steps:
                done = await self._step(action.adapter, step)
                record.steps.append(done)
                if not 200 <= done.status < 300:
                    break  # later steps depend on this one
            record.ended_s = time.perf_counter() - self.round_start

    async def _step(self, adapter: str, step: Step) -> StepRecord:
        t0 = time.perf_counter()
        try:
            status, detail = await self._call(adapter, step)
        except (aiohttp.ClientError, TimeoutError, ActionError, OSError) as exc:
            status, detail = 0, f"{type(exc).__name__}: {exc}"
        took = (time.perf_counter() - t0) * 1000
        return StepRecord(step.kind, step.version, status, round(took, 2), detail[:300])

    async def _call(self, adapter: str, step: Step) -> tuple[int, str]:
        url = self.target.urls[0] + step_path(adapter, step)
        kwargs: dict[str, Any] = {"headers": self.headers}
        with contextlib.ExitStack() as files:
            if step.kind == "register":
                kwargs.update(await self._register_payload(adapter, step, files))
            elif (body := step_body(step)) is not None:
                kwargs["json"] = body
            async with self.session.post(url, **kwargs) as response:
                answer = await response.text()
                return response.status, _summary(response.status, answer)

    async def _register_payload(
        self, adapter: str, step: Step, files: contextlib.ExitStack
    ) -> dict[str, Any]:
        """Copy into a local store and register in place, or upload the files."""
        assert step.from_dir is not None and step.version is not None
        incoming = str(self.target.incoming) if self.target.incoming else "{incoming}"
        source = Path(step.from_dir.replace("{incoming}", incoming))
        if self.target.store is not None:
            destination = self.target.store / adapter / step.version
            await asyncio.to_thread(shutil.copytree, source, destination)
            return {"json": step_body(step)}
        form = aiohttp.FormData()
        form.add_field("version", step.version)
        for path in await asyncio.to_thread(_version_files, source):
            form.add_field("file", files.enter_context(path.open("rb")), filename=path.name)
        return {"data": form}


def _version_files(source: Path) -> list[Path]:
    """The regular files at the top of a packaged version (what an upload sends).
    Raises ActionError when `source` is not a directory."""
    if not source.is_dir():
        raise ActionError(f"register: {source} is not a directory")
    return sorted(p for p in source.iterdir() if p.is_file() and not p.is_symlink())


def _summary(status: int, answer: str) -> str:
    """The switch time loragate reports, or the error message."""
    try:
        body = json.loads(answer)
    except ValueError:
        return answer[:200]
    if 200 <= status < 300 and isinstance(body, dict) and "switch_ms" in body:
        return f"switch_ms={body['switch_ms']}, prewarm_ms={body.get('prewarm_ms', 0)}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:200]
    return ""
