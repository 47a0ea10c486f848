from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from server.errors import RateLimited, Unauthorized
from server.serving.limits import Limiter
from server.serving.tenants import OPEN_TENANT, RateLimit, Tenant, Tenants, hash_key


def write(path: Path, tenants: dict[str, dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


def test_keys_are_looked_up_by_hash(tmp_path: Path) -> None:
    tenants = Tenants(
        write(
            tmp_path / "t.yaml",
            {
                "acme": {"keys_sha256": [hash_key("sk-acme")], "adapters": ["sentiment"]},
            },
        )
    )
    assert tenants.authenticate("Bearer sk-acme").name == "acme"
    for bad in (None, "", "Bearer ", "Basic sk-acme", "Bearer sk-other", "sk-acme"):
        with pytest.raises(Unauthorized):
            tenants.authenticate(bad)


def test_open_mode_has_one_tenant_that_may_use_everything() -> None:
    tenants = Tenants(None)
    assert tenants.open and tenants.authenticate(None) is OPEN_TENANT
    assert OPEN_TENANT.may_use("anything") and OPEN_TENANT.allow_base


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        ({"a": {"keys_sha256": ["sk-plain-key"]}}, "64 lowercase hex"),
        ({"a": {"keys_sha256": [hash_key("k")]}, "b": {"keys_sha256": [hash_key("k")]}}, "shared"),
        ({"a": {"adapters": ["x"], "default": "y"}}, "not in adapters"),
        ({"a": {"adapters": ["x"], "tasks": {"qa": "y"}}}, "not in adapters"),
        ({"a": {"adaptors": ["x"]}}, "adaptors"),
    ],
)
def test_invalid_tenants_files_are_refused(
    tmp_path: Path, tenants: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Tenants(write(tmp_path / "t.yaml", tenants))


def test_reload_keeps_the_previous_tenants_when_the_new_file_is_bad(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", {"a": {"keys_sha256": [hash_key("ka")]}})
    tenants = Tenants(path)
    write(path, {"b": {"keys_sha256": [hash_key("kb")]}})
    tenants.maybe_reload()
    assert tenants.authenticate("Bearer kb").name == "b"
    path.write_text("tenants: [not, a, mapping")
    tenants.maybe_reload()
    assert tenants.authenticate("Bearer kb").name == "b"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_request_rate_burst_then_refill() -> None:
    clock = Clock()
    limiter = Limiter(clock=clock)
    tenant = Tenant(name="t", rate_limit=RateLimit(requests_per_s=2, burst=3))
    for _ in range(3):
        with limiter.admit(tenant):
            pass
    with pytest.raises(RateLimited) as info, limiter.admit(tenant):
        pass
    assert info.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    with limiter.admit(tenant):
        pass


def test_tokens_per_minute_are_charged_up_front_and_settled_by_usage() -> None:
    clock = Clock()
    limiter = Limiter(clock=clock)
    tenant = Tenant(name="t", rate_limit=RateLimit(tokens_per_min=600))
    with limiter.admit(tenant, 300):  # asked for 300 ...
        limiter.settle(tenant, 650 - 300)  # ... used 650
    with pytest.raises(RateLimited, match="tokens per minute") as info, limiter.admit(tenant):
        pass
    assert info.value.retry_after_s == pytest.approx(5.1)  # 51 tokens at 10 tokens/s
    clock.now += 6
    with limiter.admit(tenant):
        pass


def test_concurrency_limit() -> None:
    limiter = Limiter()
    tenant = Tenant(name="t", max_concurrent=2)
    with (
        limiter.admit(tenant),
        limiter.admit(tenant),
        pytest.raises(RateLimited, match="in flight"),
        limiter.admit(tenant),
    ):
        pass
    with limiter.admit(tenant):
        pass
