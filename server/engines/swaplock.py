"""One engine's residency changes (evict, load), serialized across every gateway replica.

Without it two replicas that both see one free slot both load into it, and the engine holds
one adapter more than its capacity. There is no gateway-to-gateway protocol and no database:
the replicas already share the adapter store's filesystem (channels.json is written under a
`flock` there), so each engine gets a lock file `<store>/.engine-locks/<engine>.lock`, taken
with a non-blocking `flock` retried with a short backoff. A gateway killed with -9 releases it
(the kernel closes its descriptors), but a load it had sent may still land on the engine: the
holder writes its pid into the file and empties it on release, so the next holder that finds
it non-empty first waits `abandoned_grace_s` for such a call to land, then looks. vLLM runs
adapter loads one at a time in its engine loop anyway, so serializing them costs no
throughput; hits never take the lock.

`LocalSwapLocks` is the in-process equivalent, for a single gateway without a shared store
and for unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from server.errors import Unavailable

log = logging.getLogger(__name__)

LOCK_DIR = ".engine-locks"
ABANDONED_GRACE_S = 2.0  # a dead holder's engine call (a load: tens of ms to ~1 s) lands by then
_BACKOFF_S = (0.001, 0.002, 0.005)  # then 5 ms between attempts: flock has no queue, poll soon
# flock is not fair: a process that releases and re-takes at once would starve the others'
# polls. With a waiter of its own, it pauses this long (> one poll period) before handing over.
_HANDOFF_S = 0.007


class SwapLocks(Protocol):
    def hold(self, engine_id: str, deadline: float) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the swap lock of `engine_id` (its URL) for the body. Raises `Unavailable`
        when it is not free by `deadline` (a `time.monotonic()` value)."""
        ...


class LocalSwapLocks:
    """Swap locks within one process."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._waiting: defaultdict[str, int] = defaultdict(int)

    @contextlib.asynccontextmanager
    async def hold(self, engine_id: str, deadline: float) -> AsyncIterator[None]:
        lock = self._locks[engine_id]
        self._waiting[engine_id] += 1
        try:
            await _acquire_local(lock, engine_id, deadline)
        finally:
            self._waiting[engine_id] -= 1
        try:
            yield
        finally:
            lock.release()

    def contended(self, engine_id: str) -> bool:
        """Another task of this process waits for `engine_id`'s lock."""
        return self._waiting[engine_id] > 0


class FileSwapLocks:
    """Swap locks shared by every process that uses the same directory (the store)."""

    def __init__(self, directory: Path, abandoned_grace_s: float = ABANDONED_GRACE_S) -> None:
        self.directory = directory
        self.abandoned_grace_s = abandoned_grace_s
        self._local = LocalSwapLocks()
        self._fds: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, engine_id: str, deadline: float) -> AsyncIterator[None]:
        async with self._local.hold(engine_id, deadline):  # one attempt per process at a time
            fd = await self._fd(engine_id)
            await _flock(fd, engine_id, deadline)
            try:
                if await asyncio.to_thread(_mark_held, fd):
                    log.warning("swap lock of a dead holder", extra={"engine": engine_id})
                    await asyncio.sleep(self.abandoned_grace_s)
                yield
            finally:
                await asyncio.to_thread(os.ftruncate, fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                if self._local.contended(engine_id):
                    await asyncio.sleep(_HANDOFF_S)  # other processes' polls get their turn

    async def _fd(self, engine_id: str) -> int:
        fd = self._fds.get(engine_id)
        if fd is None:
            path = self.directory / f"{_file_name(engine_id)}.lock"
            fd = await asyncio.to_thread(_open_lock_file, path)
            self._fds[engine_id] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


async def _acquire_local(lock: asyncio.Lock, engine_id: str, deadline: float) -> None:
    try:
        await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise _busy(engine_id) from None


async def _flock(fd: int, engine_id: str, deadline: float) -> None:
    attempt = 0
    while True:
        try:
            # LOCK_NB never waits (a shared store on NFS makes it one round trip).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            raise _busy(engine_id)
        await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
        attempt += 1


def _mark_held(fd: int) -> bool:
    """Write our pid into the lock file; True if the previous holder left its own there (it
    died holding the lock)."""
    abandoned = os.pread(fd, 32, 0) != b""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return abandoned


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _file_name(engine_id: str) -> str:
    """`http://10.0.0.5:8000` → `10.0.0.5_8000`: one file per engine address."""
    bare = engine_id.split("://", 1)[-1].rstrip("/")
    return re.sub(r"[^A-Za-z0-9.-]", "_", bare) or "engine"


def _busy(engine_id: str) -> Unavailable:
    return Unavailable(
        f"engine {engine_id} is busy changing its adapters (another load holds it)",
        retry_after_s=1.0,
    )
