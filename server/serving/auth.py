"""The admin bearer token: who may call `/admin/*`, and the name the audit log records.

The token is separate from tenant keys (a tenant key is never an admin token). Without a
configured token the admin API is disabled (403), not open.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from server.errors import Forbidden, Unauthorized

DISABLED = "admin API disabled: set LORAGATE_ADMIN_TOKEN"


@dataclass(frozen=True)
class Admin:
    """An authenticated admin caller."""

    actor: str  # `admin:<first 8 hex of sha256(token)>`: names the token, never reveals it


def actor_for(token: str) -> str:
    return f"admin:{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def authenticate_admin(configured: SecretStr | None, authorization: str | None) -> Admin:
    """Check `Authorization: Bearer <token>` against the configured admin token.

    Raises `Forbidden` when no admin token is configured, `Unauthorized` when the header is
    missing, not a bearer token, or carries any other token (compared in constant time).
    """
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        raise Forbidden(DISABLED)
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing admin token: send Authorization: Bearer <LORAGATE_ADMIN_TOKEN>")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("invalid admin token")
    return Admin(actor_for(expected))
