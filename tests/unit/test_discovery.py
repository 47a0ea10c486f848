"""Engine discovery with a resolver we control (a plain function, no DNS server), and the
fleet applying it: engines that appear are added, those that vanish drained then removed."""

from __future__ import annotations

import pytest

from server.engines.admission import Admission
from server.engines.client import EngineClient
from server.engines.discovery import Discovery, EngineTarget, resolve_dns
from server.engines.fleet import Fleet
from server.engines.placement import Placement
from server.engines.registry import Registry
from server.metrics import Metrics
from server.settings import EngineConfig
from tests.fakes import FakeEngine


class Dns:
    """A resolver: name -> addresses, or an OSError to raise."""

    def __init__(self) -> None:
        self.records: dict[str, list[str] | OSError] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.records[host]
        if isinstance(answer, OSError):
            raise answer
        return answer


def entries() -> list[EngineConfig]:
    return [
        EngineConfig(name="fixed", url="http://fixed:8000", max_cpu_loras=2),
        EngineConfig(dns="vllm-headless:8000", max_cpu_loras=8),
    ]


async def test_dns_entries_become_one_engine_per_address() -> None:
    dns = Dns()
    dns.records["vllm-headless"] = ["10.0.0.6", "10.0.0.5", "fd00::7"]
    targets = await Discovery(entries(), dns).resolve()
    assert targets == {
        "fixed": EngineTarget("fixed", "http://fixed:8000", 2),
        "10.0.0.6:8000": EngineTarget("10.0.0.6:8000", "http://10.0.0.6:8000", 8),
        "10.0.0.5:8000": EngineTarget("10.0.0.5:8000", "http://10.0.0.5:8000", 8),
        "[fd00::7]:8000": EngineTarget("[fd00::7]:8000", "http://[fd00::7]:8000", 8),
    }


async def test_a_failed_lookup_keeps_the_last_addresses() -> None:
    dns = Dns()
    discovery = Discovery(entries(), dns)
    dns.records["vllm-headless"] = ["10.0.0.5"]
    assert "10.0.0.5:8000" in await discovery.resolve()
    dns.records["vllm-headless"] = OSError("Temporary failure in name resolution")
    assert "10.0.0.5:8000" in await discovery.resolve()  # a DNS blip drains nothing
    dns.records["vllm-headless"] = []
    assert list(await discovery.resolve()) == ["fixed"]  # an empty answer is an answer


async def test_resolve_dns_uses_the_loop_resolver() -> None:
    assert {"127.0.0.1", "::1"} & set(await resolve_dns("localhost", 8000))


def test_a_dns_entry_is_a_host_and_port() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EngineConfig(dns="svc:8000", url="http://x:1")
    with pytest.raises(ValueError, match="pattern"):
        EngineConfig(dns="http://svc:8000")


async def test_the_fleet_adds_drains_and_removes_engines() -> None:
    clients: dict[str, EngineClient] = {}
    made: dict[str, FakeEngine] = {}

    def make_client(target: EngineTarget) -> EngineClient:
        made[target.name] = FakeEngine(name=target.name, url=target.url)
        return made[target.name]

    registry = Registry({}, Metrics())
    placement = Placement(registry)
    admission = Admission(max_wait_s=1)
    fleet = Fleet(clients, placement, admission, make_client)
    dns = Dns()
    discovery = Discovery(entries()[1:], dns)

    dns.records["vllm-headless"] = ["10.0.0.5", "10.0.0.6"]
    await fleet.sync(await discovery.resolve())
    assert sorted(clients) == sorted(registry.engines) == ["10.0.0.5:8000", "10.0.0.6:8000"]
    assert sorted(admission.queues) == sorted(clients)  # each with its admission queue
    for name in clients:  # their first healthy view marks them up (the runtime does this)
        placement.mark_up(name)

    hold = await registry.acquire("10.0.0.5:8000", None)  # a request in flight there
    dns.records["vllm-headless"] = ["10.0.0.6"]
    await fleet.sync(await discovery.resolve())
    assert placement.up_engines() == ["10.0.0.6:8000"]  # drained: nothing new
    assert "10.0.0.5:8000" in registry.engines  # ...but kept while its request runs
    registry.release(hold)
    await fleet.sync(await discovery.resolve())
    assert list(registry.engines) == list(clients) == list(admission.queues) == ["10.0.0.6:8000"]
    await registry.aclose()
