"""Scenario files: the shipped ones (`loadtest/scenarios/*.yaml`), reading one, and `--set`
overrides (`bounds.duration_s=5`, values parsed as YAML) applied before validation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from loadtest.tool.scenario import Scenario


class ScenarioError(ValueError):
    """Raised for a scenario that cannot be found, read or validated (the message says why)."""


def shipped_dir() -> Path:
    return Path(str(resources.files("loadtest"))) / "scenarios"


def shipped() -> dict[str, Path]:
    """Name → file of every scenario shipped with loragate."""
    return {path.stem: path for path in sorted(shipped_dir().glob("*.yaml"))}


def resolve(name_or_path: str) -> Path:
    """A path to an existing file, or the name of a shipped scenario."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    found = shipped().get(name_or_path.removesuffix(".yaml"))
    if found is None:
        names = ", ".join(shipped()) or "none"
        raise ScenarioError(f"no scenario file {name_or_path!r} (shipped scenarios: {names})")
    return found


def read(path: Path) -> dict[str, Any]:
    """The raw mapping of a scenario file; relative trace paths resolve against its folder."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping")
    popularity = data.get("workload", {}).get("popularity", {})
    trace = popularity.get("trace") if isinstance(popularity, dict) else None
    if isinstance(trace, str) and not Path(trace).is_absolute():
        popularity["trace"] = str((path.parent / trace).resolve())
    data.setdefault("name", path.stem)
    return data


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`data[a][b] = value` for `a.b` (`actions.0.at_s`: an index into a list), creating
    mappings on the way. Raises ScenarioError when the path does not fit the data."""
    *parents, leaf = dotted.strip().split(".")
    node: Any = data
    for part in parents:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ScenarioError(f"{dotted}: no {part!r} there")
        node = node.setdefault(part, {})
    if isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ScenarioError(f"{dotted}: no {leaf!r} there")


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """A copy of `data` with each `dotted.key=value` set (the value parsed as YAML)."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ScenarioError(f"--set {item!r}: expected dotted.key=value")
        set_path(result, key, yaml.safe_load(raw))
    return result


def build(data: dict[str, Any], sets: list[str] | None = None) -> Scenario:
    """Validate `data` with `sets` applied; raises `ScenarioError` naming the bad field."""
    from pydantic import ValidationError

    merged = apply_sets(data, sets or [])
    try:
        return Scenario.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'scenario'}: {e['msg']}" for e in exc.errors()
        )
        raise ScenarioError(f"invalid scenario: {problems}") from None


def load(name_or_path: str, sets: list[str] | None = None) -> Scenario:
    return build(read(resolve(name_or_path)), sets)
