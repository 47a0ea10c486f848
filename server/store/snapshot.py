"""The store as read at one scan: immutable values, safe to share across threads and tasks.

`AdapterStore.scan()` (server/store/store.py) builds a `Snapshot`; routing, the registry and the
admin API read it. Only `AdapterVersion.evals()` touches the disk (eval reports are added to
a version over time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from server.store.layout import EVALS_DIR
from server.store.manifest import Channels, EvalReport, Manifest
from server.store.refs import AdapterRef, version_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterVersion:
    """One registered version: its directory and parsed manifest."""

    name: str
    version: str
    path: Path
    manifest: Manifest

    @property
    def ref(self) -> AdapterRef:
        return AdapterRef(self.name, self.version)

    @property
    def engine_name(self) -> str:
        """The LoRA name engines know it by; versions of one adapter coexist."""
        return f"{self.name}@{self.version}"

    def evals(self) -> dict[str, EvalReport]:
        """Eval reports by dataset: the packaging-time one, then evals/*.json (newer wins)."""
        reports: dict[str, EvalReport] = {}
        if self.manifest.eval is not None:
            reports[self.manifest.eval.dataset] = self.manifest.eval
        evals_dir = self.path / EVALS_DIR
        if evals_dir.is_dir():
            for path in sorted(evals_dir.glob("*.json")):
                try:
                    report = EvalReport.model_validate_json(path.read_bytes())
                except (OSError, PydanticValidationError) as exc:
                    log.warning("skipping unreadable eval %s: %s", path, exc)
                    continue
                reports[report.dataset] = report
        return reports


@dataclass(frozen=True)
class Adapter:
    """An adapter name with its versions (oldest first) and channels."""

    name: str
    versions: dict[str, AdapterVersion]
    channels: Channels

    def latest(self) -> AdapterVersion | None:
        return self.versions[max(self.versions, key=version_key)] if self.versions else None


@dataclass(frozen=True)
class BrokenEntry:
    """Something under the store root that could not be read; reported, skipped."""

    path: str
    error: str


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the store at one scan."""

    adapters: dict[str, Adapter] = field(default_factory=dict)
    broken: tuple[BrokenEntry, ...] = ()

    def version_count(self) -> int:
        return sum(len(a.versions) for a in self.adapters.values())
