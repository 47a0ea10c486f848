"""Swap locks: one holder per engine across processes (flock in a shared directory)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.engines.swaplock import FileSwapLocks, LocalSwapLocks
from server.errors import Unavailable

ENGINE = "http://10.0.0.5:8000"


async def test_two_holders_of_one_engine_take_turns(tmp_path: Path) -> None:
    first, second = FileSwapLocks(tmp_path), FileSwapLocks(tmp_path)  # two "replicas"
    order: list[str] = []

    async def hold(locks: FileSwapLocks, name: str) -> None:
        async with locks.hold(ENGINE, time.monotonic() + 5):
            order.append(f"{name}+")
            await asyncio.sleep(0.05)
            order.append(f"{name}-")

    await asyncio.gather(hold(first, "a"), hold(second, "b"))
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    async with (  # another engine: no wait
        first.hold("http://10.0.0.6:8000", time.monotonic() + 1),
        second.hold(ENGINE, time.monotonic() + 1),
    ):
        pass
    assert names(tmp_path) == ["10.0.0.5_8000.lock", "10.0.0.6_8000.lock"]
    first.close()
    second.close()


@pytest.mark.parametrize("kind", ["file", "local"])
async def test_a_lock_not_free_by_the_deadline_is_unavailable(kind: str, tmp_path: Path) -> None:
    locks = FileSwapLocks(tmp_path) if kind == "file" else LocalSwapLocks()
    other = FileSwapLocks(tmp_path) if kind == "file" else locks
    async with locks.hold(ENGINE, time.monotonic() + 1):
        with pytest.raises(Unavailable, match="busy changing its adapters"):
            async with other.hold(ENGINE, time.monotonic() + 0.1):
                pass


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the lock of ENGINE in `tmp_path`."""
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / '10.0.0.5_8000.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline() == b"held\n"
        yield process
        process.kill()


async def test_a_holder_that_died_mid_change_costs_a_grace_period(tmp_path: Path) -> None:
    (tmp_path / "10.0.0.5_8000.lock").write_text("4242\n")  # left by a holder killed with -9
    locks = FileSwapLocks(tmp_path, abandoned_grace_s=0.3)
    start = time.monotonic()
    async with locks.hold(ENGINE, time.monotonic() + 2):
        assert time.monotonic() - start >= 0.3  # its load may still land: wait, then look
    start = time.monotonic()
    async with locks.hold(ENGINE, time.monotonic() + 2):  # released cleanly: no wait
        assert time.monotonic() - start < 0.3
    locks.close()
    assert names(tmp_path) == ["10.0.0.5_8000.lock"]


async def test_a_killed_holder_releases_the_lock(
    tmp_path: Path, holder: subprocess.Popen[bytes]
) -> None:
    locks = FileSwapLocks(tmp_path)
    with pytest.raises(Unavailable):
        async with locks.hold(ENGINE, time.monotonic() + 0.1):
            pass
    holder.kill()  # kill -9: the kernel drops its flock
    await asyncio.to_thread(holder.wait)
    async with locks.hold(ENGINE, time.monotonic() + 2):
        pass
    locks.close()
