"""The admin token check, table-driven."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from server.errors import Forbidden, LoragateError, Unauthorized
from server.serving.auth import DISABLED, authenticate_admin

TOKEN = "s3cret-admin-token-for-tests"
CONFIGURED = SecretStr(TOKEN)


@pytest.mark.parametrize(
    ("configured", "header", "error", "fragment"),
    [
        (None, f"Bearer {TOKEN}", Forbidden, DISABLED),
        (SecretStr(""), f"Bearer {TOKEN}", Forbidden, DISABLED),
        (CONFIGURED, None, Unauthorized, "missing admin token"),
        (CONFIGURED, "Bearer ", Unauthorized, "missing admin token"),
        (CONFIGURED, f"Basic {TOKEN}", Unauthorized, "missing admin token"),
        (CONFIGURED, f"Bearer {TOKEN}x", Unauthorized, "invalid admin token"),
        (CONFIGURED, "Bearer sk-tenant-1f2e3d4c5b6a", Unauthorized, "invalid admin token"),
    ],
)
def test_refusals(
    configured: SecretStr | None, header: str | None, error: type[LoragateError], fragment: str
) -> None:
    with pytest.raises(error) as info:
        authenticate_admin(configured, header)
    assert type(info.value) is error and fragment in info.value.message


def test_the_actor_names_the_token_without_revealing_it() -> None:
    admin = authenticate_admin(CONFIGURED, f"bearer  {TOKEN}")
    assert admin.actor == "admin:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert TOKEN not in admin.actor
