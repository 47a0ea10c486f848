"""Durable file writes shared by gateways that share one store on one filesystem.

- `atomic_write`: temp file in the same directory, fsync, `os.replace`, fsync the directory:
  a reader sees the old or the new content, never a half-written file, even after a crash.
- `FileLock`: an exclusive `flock` on a lock file; serialises writers across processes and
  threads (each `FileLock` opens its own file description).
- `append_line`: one `write` of a whole line to an `O_APPEND` file, then fsync.
- `visible_dirs`, `tree_fingerprint`: what the store's scans and caches look at.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from types import TracebackType


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(path: Path) -> int:
    """Delete the temp files `atomic_write(path, …)` left behind when its process was killed
    between writing and renaming. Call only under the lock that every writer of `path` holds,
    so no temp file can be in use. Returns how many were removed."""
    stale = list(path.parent.glob(f".{path.name}.tmp-*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def append_line(path: Path, line: str) -> None:
    """Append one newline-terminated line in a single write, then fsync."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock:
    """Exclusive advisory lock on `path` (created if missing). Blocking; use from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def visible_dirs(path: Path) -> list[os.DirEntry[str]]:
    """Subdirectories, skipping dot-entries (staging dirs, locks) and symlinks."""
    with os.scandir(path) as it:
        return sorted(
            (e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)),
            key=lambda e: e.name,
        )


def tree_fingerprint(path: Path) -> object:
    """Identity of every file under `path` (name, size, mtime): changes when any does."""
    return tuple(
        sorted(
            (str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
            for p in path.rglob("*")
            for st in (p.lstat(),)
        )
    )
