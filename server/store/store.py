"""The versioned adapter store: a directory tree that is the source of truth.

```
<root>/<name>/channels.json           release pointers, rewritten atomically under a lock
<root>/<name>/<version>/              immutable once registered (except evals/ additions)
<root>/<name>/.retired-<v>-<utc>/     a retired version: kept on disk, invisible to scans
<root>/audit.jsonl                    append-only log of every change
```

Scanning reads manifests only (fast: thousands of versions per second); the deep rules of
`server.store.validation` run on demand and are cached by file identity. All methods block on disk
I/O; async code calls them through `asyncio.to_thread`.
The values a scan publishes (`Snapshot`, `AdapterVersion`, …) live in `server.store.snapshot`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from server.errors import (
    AdapterInvalid,
    Conflict,
    LoragateError,
    NotFound,
    StoreError,
    VersionExists,
)
from server.store.base_model import BaseModelSpec
from server.store.fsutil import (
    FileLock,
    append_line,
    atomic_write,
    remove_stale_temps,
    tree_fingerprint,
    visible_dirs,
)
from server.store.layout import (
    CONFIG_FILE,
    EVALS_DIR,
    MANIFEST_FILE,
    README_FILE,
    WEIGHTS_FILE,
    ValidationLimits,
    ValidationReport,
    sha256_file,
)
from server.store.manifest import AuditEntry, Channels, EvalReport, utcnow
from server.store.refs import check_name, check_version, version_key
from server.store.snapshot import Adapter, AdapterVersion, BrokenEntry, Snapshot
from server.store.tree_rules import load_manifest, parse_manifest
from server.store.validation import validate_version

log = logging.getLogger(__name__)

CHANNELS_FILE = "channels.json"
# (channels before, after) -> the (from, to) versions an audit entry records.
AuditVersions = Callable[[Channels, Channels], tuple[str | None, str | None]]
AUDIT_FILE = "audit.jsonl"


class AdapterStore:
    """The adapter store rooted at `root`, validated against the served base model."""

    def __init__(
        self,
        root: Path,
        base: BaseModelSpec | None,
        limits: ValidationLimits | None = None,
    ) -> None:
        self.root = root.resolve()
        self.base = base
        self.limits = limits or ValidationLimits()
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        # Scans read and publish under one lock: a scan that read the disk earlier can never
        # publish its snapshot after a later one (gateway poll vs. an admin change).
        self._scan_lock = threading.Lock()
        # (path, size, mtime_ns, inode) -> sha256, so revalidation does not rehash weights.
        self._hashes: dict[tuple[str, int, int, int], str] = {}
        # manifest.json identity (path, size, mtime, inode) -> its version, for rescans.
        self._versions: dict[tuple[str, int, int, int], AdapterVersion] = {}
        self._seen_versions: dict[tuple[str, int, int, int], AdapterVersion] = {}
        # (name, version) -> (file fingerprint, outcome): failures are cached too.
        self._reports: dict[tuple[str, str], tuple[object, ValidationReport | AdapterInvalid]] = {}

    # --- reading -------------------------------------------------------------------------

    def scan(self) -> Snapshot:
        """Read every manifest and channels file; broken entries are logged and listed."""
        self.root.mkdir(parents=True, exist_ok=True)
        adapters: dict[str, Adapter] = {}
        broken: list[BrokenEntry] = []
        with self._scan_lock:
            self._seen_versions = {}
            for entry in visible_dirs(self.root):
                try:
                    adapters[entry.name] = self._scan_adapter(Path(entry.path), broken)
                except LoragateError as exc:
                    broken.append(BrokenEntry(entry.name, exc.message))
            self.snapshot = Snapshot(adapters, tuple(broken))
            self._versions = self._seen_versions  # forget versions that are gone
        for item in broken:
            log.warning("store entry skipped: %s: %s", item.path, item.error)
        return self.snapshot

    def _version(self, name: str, entry: os.DirEntry[str]) -> AdapterVersion:
        """The version in `entry`, reused while its manifest.json is unchanged (versions are
        immutable: a rescan after a change elsewhere costs one stat per version).
        Raises `AdapterInvalid` (and `InvalidName` for a bad version spelling)."""
        check_version(entry.name)
        path = os.path.join(entry.path, MANIFEST_FILE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise AdapterInvalid(MANIFEST_FILE, "layout", "required file is missing") from None
        key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        version = self._versions.get(key)
        if version is None:
            with open(path, "rb") as f:  # a str path: pathlib costs more than the read here
                manifest = parse_manifest(f.read())
            if (manifest.name, manifest.version) != (name, entry.name):
                raise AdapterInvalid(MANIFEST_FILE, "manifest-identity", "name/version differ")
            version = AdapterVersion(name, entry.name, Path(entry.path), manifest)
        self._seen_versions[key] = version
        return version

    def _scan_adapter(self, path: Path, broken: list[BrokenEntry]) -> Adapter:
        name = check_name(path.name)
        versions: dict[str, AdapterVersion] = {}
        for entry in visible_dirs(path):
            try:
                versions[entry.name] = self._version(name, entry)
            except LoragateError as exc:
                broken.append(BrokenEntry(f"{name}/{entry.name}", exc.message))
        ordered = dict(sorted(versions.items(), key=lambda kv: version_key(kv[0])))
        return Adapter(name, ordered, self._read_channels(path, set(ordered)))

    def _read_channels(self, adapter_dir: Path, versions: set[str]) -> Channels:
        path = adapter_dir / CHANNELS_FILE
        try:
            channels = Channels.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return Channels()
        except PydanticValidationError as exc:
            raise StoreError(f"{CHANNELS_FILE}: {exc.errors()[0]['msg']}") from None
        missing = channels.referenced() - versions
        if missing:
            raise StoreError(f"{CHANNELS_FILE}: points at unknown versions {sorted(missing)}")
        return channels

    def fingerprint(self) -> object:
        """Cheap change detector: mtimes of the root, each adapter dir and its channels file.
        A new version directory or a replaced channels.json changes its adapter dir's mtime.
        A version skipped as broken (e.g. half-copied, manifest.json not there yet) is watched
        too: files landing inside it change only its own mtime, or its manifest's."""
        marks: list[tuple[str, int]] = [("", self.root.stat().st_mtime_ns)]
        for entry in visible_dirs(self.root):
            marks.append((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns))
            with contextlib.suppress(FileNotFoundError):
                marks.append(
                    (entry.name + "/c", os.stat(Path(entry.path, CHANNELS_FILE)).st_mtime_ns)
                )
        for item in self.snapshot.broken:
            for path in (self.root / item.path, self.root / item.path / MANIFEST_FILE):
                with contextlib.suppress(OSError):
                    marks.append((str(path), path.stat().st_mtime_ns))
        return tuple(marks)

    def adapter(self, name: str) -> Adapter:
        """Raise `NotFound` if the adapter is not in the current snapshot."""
        try:
            return self.snapshot.adapters[name]
        except KeyError:
            raise NotFound(f"adapter {name!r} does not exist", param="model") from None

    def version(self, name: str, version: str) -> AdapterVersion:
        """Raise `NotFound` if the version is not in the current snapshot."""
        try:
            return self.adapter(name).versions[version]
        except KeyError:
            raise NotFound(f"version {name}@{version} does not exist", param="model") from None

    def validate(self, name: str, version: str) -> ValidationReport:
        """Deep-validate a registered version (cached while its files are unchanged).

        Raises `NotFound` for a version not in the snapshot, `AdapterInvalid` for a broken rule.
        """
        found = self.version(name, version)
        fingerprint = tree_fingerprint(found.path)
        cached = self._reports.get((name, version))
        if cached is None or cached[0] != fingerprint:
            try:
                outcome: ValidationReport | AdapterInvalid = validate_version(
                    found.path,
                    root=self.root,
                    base=self.base,
                    limits=self.limits,
                    hasher=self._hash,
                    expect=(name, version),
                )
            except AdapterInvalid as exc:
                outcome = exc
            cached = (fingerprint, outcome)
            self._reports[(name, version)] = cached
        if isinstance(cached[1], AdapterInvalid):
            raise AdapterInvalid(cached[1].file, cached[1].rule, cached[1].detail)
        return cached[1]

    def validation_state(self, name: str, version: str) -> ValidationReport | AdapterInvalid | None:
        """The last validation outcome of a version, if it was validated (not re-checked)."""
        cached = self._reports.get((name, version))
        return None if cached is None else cached[1]

    def _hash(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            digest = self._hashes.get(key)
        if digest is None:
            digest = sha256_file(path)
            with self._lock:
                self._hashes[key] = digest
        return digest

    # --- writing -------------------------------------------------------------------------

    def package(
        self, src: Path, manifest_fields: dict[str, object], *, name: str, version: str
    ) -> AdapterVersion:
        """Turn a PEFT output directory into a registered version, atomically.

        Copies the weights and config into a staging directory inside the store, writes
        manifest.json with checksums, validates, and renames into place. On any failure
        nothing is left behind. Raises `AdapterInvalid`, `VersionExists`, `InvalidName`.
        """
        check_name(name)
        check_version(version)
        if (src / "adapter_model.bin").exists() and not (src / WEIGHTS_FILE).exists():
            raise AdapterInvalid("adapter_model.bin", "no-pickle", "convert to safetensors first")
        with self._staging(name, version) as staging:
            files = {}
            for rel in (CONFIG_FILE, WEIGHTS_FILE, README_FILE):
                if (src / rel).is_file():
                    shutil.copyfile(src / rel, staging / rel)
                    files[rel] = sha256_file(staging / rel)
            manifest = parse_manifest(
                {**manifest_fields, "name": name, "version": version, "files": files}
            )
            (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
            return self._commit(staging, name, version)

    def register_staged(
        self, staging: Path, name: str, version: str, *, actor: str | None = None
    ) -> AdapterVersion:
        """Validate a complete version directory staged inside the store and move it in.
        Raises `AdapterInvalid` (nothing moved) or `VersionExists`."""
        return self._commit(staging, name, version, actor)

    def register_in_place(self, name: str, version: str, *, actor: str) -> AdapterVersion:
        """Validate a version directory copied into the store by hand; nothing moves.
        Raises `NotFound` if there is no such directory, `AdapterInvalid` for a broken rule."""
        path = self.root / check_name(name) / check_version(version)
        if path.is_symlink() or not path.is_dir():
            raise NotFound(f"no directory {name}/{version} in the store", param="version")
        validate_version(
            path,
            root=self.root,
            base=self.base,
            limits=self.limits,
            hasher=self._hash,
            expect=(name, version),
        )
        self._audit(
            AuditEntry(
                actor=actor, action="register", adapter=name, to_version=version, detail="in place"
            )
        )
        self.scan()
        return self.version(name, version)

    def _commit(
        self, staging: Path, name: str, version: str, actor: str | None = None
    ) -> AdapterVersion:
        validate_version(
            staging,
            root=self.root,
            base=self.base,
            limits=self.limits,
            expect=(name, version),
        )
        target = self.root / name / version
        try:
            # rename(2) onto an existing non-empty directory fails: two registrations of the
            # same version race safely, exactly one wins.
            os.rename(staging, target)
        except OSError:
            raise VersionExists(f"{name}@{version} is already registered") from None
        manifest = load_manifest(target / MANIFEST_FILE)
        self._audit(
            AuditEntry(
                actor=actor or manifest.created_by,
                action="register",
                adapter=name,
                to_version=version,
            )
        )
        self.scan()
        return self.version(name, version)

    @contextlib.contextmanager
    def _staging(self, name: str, version: str) -> Iterator[Path]:
        """A fresh directory inside the store (same filesystem: the final rename is atomic)."""
        adapter_dir = self.root / name
        created = not adapter_dir.exists()
        if (adapter_dir / version).exists():
            raise VersionExists(f"{name}@{version} is already registered")
        adapter_dir.mkdir(parents=True, exist_ok=True)
        staging = adapter_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not any(adapter_dir.iterdir()):
                adapter_dir.rmdir()

    def staging_dir(self, name: str, version: str) -> contextlib.AbstractContextManager[Path]:
        """Public staging area for uploads: removed on exit unless registered."""
        check_name(name)
        check_version(version)
        return self._staging(name, version)

    def update_channels(
        self,
        name: str,
        change: Callable[[Channels], Channels],
        *,
        actor: str,
        action: str,
        forced: bool = False,
        detail: str = "",
        audit_versions: AuditVersions | None = None,
    ) -> Channels:
        """Read-modify-write `channels.json` under the adapter's lock, and audit it.

        `change` gets the current channels and returns the new ones (or raises, and nothing
        is written). The audit entry records stable before and after, or the (from, to)
        versions `audit_versions(current, new)` names.
        """
        adapter_dir = self.root / check_name(name)
        if not adapter_dir.is_dir():
            raise NotFound(f"adapter {name!r} does not exist", param="name")
        with FileLock(adapter_dir / ".channels.lock"):
            remove_stale_temps(adapter_dir / CHANNELS_FILE)  # from writers killed mid-write
            versions = {e.name for e in visible_dirs(adapter_dir)}
            current = self._read_channels(adapter_dir, versions)
            new = change(current)
            missing = new.referenced() - versions
            if missing:
                raise NotFound(f"{name}: unknown versions {sorted(missing)}", param="version")
            new = new.model_copy(update={"revision": current.revision + 1, "updated_at": utcnow()})
            Channels.model_validate(new.model_dump())  # re-run validators on the copy
            atomic_write(
                adapter_dir / CHANNELS_FILE, (new.model_dump_json(indent=2) + "\n").encode()
            )
            before, after = (audit_versions or _stables)(current, new)
            self._audit(
                AuditEntry(
                    actor=actor,
                    action=action,
                    adapter=name,
                    from_version=before,
                    to_version=after,
                    forced=forced,
                    detail=detail,
                    revision=new.revision,
                )
            )
        self.scan()
        return new

    def retire(self, name: str, version: str, *, actor: str) -> Path:
        """Move a version out of the serving set, kept on disk as `.retired-<v>-<utc time>`.

        Under the adapter's channels lock, so no promotion can point at it meanwhile. Raises
        `Conflict` if a channel points at it or an operator pinned it, `NotFound` if absent.
        """
        check_version(version)
        moved: list[Path] = []

        def change(current: Channels) -> Channels:
            if version in current.referenced() or version in current.pinned:
                role = (
                    "pinned" if version in current.pinned else "stable, previous, canary or shadow"
                )
                raise Conflict(f"{name}@{version} is {role}; it cannot be retired")
            source = self.root / name / version
            if source.is_symlink() or not source.is_dir():
                raise NotFound(f"version {name}@{version} does not exist", param="version")
            target = source.with_name(f".retired-{version}-{utcnow():%Y%m%dT%H%M%S%fZ}")
            os.rename(source, target)
            moved.append(target)
            if current.canary is not None and current.canary.version == version:
                return current.model_copy(update={"canary": None})  # a weight-0 leftover
            return current

        self.update_channels(
            name,
            change,
            actor=actor,
            action="retire",
            detail=f"retired {version}",
            audit_versions=lambda c, n: (version, None),
        )
        return moved[0]

    def add_eval(self, name: str, version: str, report: EvalReport, *, actor: str) -> Path:
        """Write `evals/<dataset>.json` beside a version (the one change a version allows)."""
        return self.update_eval(name, version, report.dataset, lambda _old: report, actor=actor)

    def update_eval(
        self,
        name: str,
        version: str,
        dataset: str,
        change: Callable[[EvalReport | None], EvalReport],
        *,
        actor: str,
    ) -> Path:
        """Read-modify-write `evals/<dataset>.json` under a lock (gateways sharing a store
        merge their shadow reports this way), and audit it. `change` gets the report there
        (None if none, or unreadable) and returns the new one. Raises `NotFound`."""
        found = self.version(name, version)
        stem = check_name(dataset.lower().replace(".", "-"))
        evals_dir = found.path / EVALS_DIR
        evals_dir.mkdir(exist_ok=True)
        path = evals_dir / f"{stem}.json"
        # The lock beside channels.json's: a version directory holds only the files it may.
        with FileLock(found.path.parent / f".eval-{version}-{stem}.lock"):
            try:
                old: EvalReport | None = EvalReport.model_validate_json(path.read_bytes())
            except (OSError, PydanticValidationError):
                old = None
            report = change(old)
            atomic_write(path, (report.model_dump_json(indent=2) + "\n").encode())
        self._audit(
            AuditEntry(
                actor=actor,
                action="eval",
                adapter=name,
                to_version=version,
                detail=f"{report.dataset}: {report.metric}={report.score:.4f} (n={report.n})",
            )
        )
        return path

    def _audit(self, entry: AuditEntry) -> None:
        with FileLock(self.root / ".audit.lock"):
            append_line(self.root / AUDIT_FILE, entry.model_dump_json())

    def audit(self, limit: int | None = None) -> list[AuditEntry]:
        """The audit log, oldest first (the last `limit` entries if given)."""
        path = self.root / AUDIT_FILE
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        lines = lines[-limit:] if limit else lines
        return [AuditEntry.model_validate_json(line) for line in lines if line.strip()]


def _stables(current: Channels, new: Channels) -> tuple[str | None, str | None]:
    return current.stable, new.stable
