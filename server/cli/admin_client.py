"""A synchronous client for the admin API, and the tables the `loragate adapters` CLI shows.

Nothing here prints; `server/cli/main.py` does. Errors are the client's own: `Refused` (the
gateway answered with an error: its message is shown, exit 1) and `Unreachable` (no answer:
exit 2).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx


class AdminClientError(Exception):
    """Base of the admin client's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(AdminClientError):
    """Raised when the gateway answered the request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(AdminClientError):
    """Raised when the gateway could not be reached or did not answer in time."""


class AdminClient:
    """`/admin/*` of one gateway, authenticated with the admin token (if any)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + "/admin", headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; raises `Refused` or `Unreachable`."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        if response.is_error:
            try:
                message = str(response.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = response.text[:500] or response.reason_phrase
            raise Refused(response.status_code, message)
        return response.json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/adapters")
        return result

    def register(self, directory: Path, name: str, version: str) -> dict[str, Any]:
        """Upload the regular files at the top of `directory` (a packaged version: manifest,
        config, weights); the gateway validates them. Subdirectories (evals/) are not sent."""
        with contextlib.ExitStack() as stack:
            files = [
                ("file", (p.name, stack.enter_context(p.open("rb"))))
                for p in sorted(directory.iterdir())
                if p.is_file() and not p.is_symlink()
            ]
            result: dict[str, Any] = self._call(
                "POST", f"/adapters/{name}/versions", data={"version": version}, files=files
            )
        return result

    def promote(
        self, name: str, version: str, *, force: bool = False, dataset: str | None = None
    ) -> dict[str, Any]:
        body = {"version": version, "force": force, "dataset": dataset}
        result: dict[str, Any] = self._call("POST", f"/adapters/{name}/promote", json=body)
        return result

    def rollback(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/adapters/{name}/rollback")
        return result

    def canary(
        self, name: str, version: str, weight: float | None, **bounds: Any
    ) -> dict[str, Any]:
        """`bounds`: the canary's analysis fields to send (None: that bound off)."""
        body = {"version": version, **({"weight": weight} if weight is not None else {}), **bounds}
        result: dict[str, Any] = self._call("POST", f"/adapters/{name}/canary", json=body)
        return result

    def shadow(self, name: str, version: str, share: float) -> dict[str, Any]:
        body = {"version": version, "share": share}
        result: dict[str, Any] = self._call("POST", f"/adapters/{name}/shadow", json=body)
        return result

    def version_action(self, name: str, version: str, action: str) -> dict[str, Any]:
        """`pin`, `unpin` or `prewarm`."""
        result: dict[str, Any] = self._call("POST", f"/adapters/{name}/versions/{version}/{action}")
        return result

    def retire(self, name: str, version: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/adapters/{name}/versions/{version}")
        return result

    def audit(self, limit: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/audit", params={"limit": limit})[
            "entries"
        ]
        return result


def change_summary(result: dict[str, Any]) -> str:
    """One line for a channel change: the pointers now, the switch and prewarm times."""
    ch = result["channels"]
    canary = ch.get("canary")
    parts = [
        f"{result['adapter']}: stable {ch['stable'] or '-'}, previous {ch['previous'] or '-'}",
        f"canary {canary['version']} {canary['weight']:.0%}" if canary else "no canary",
        *(
            [f"shadow {shadow['version']} {shadow['share']:.0%}"]
            if (shadow := ch.get("shadow"))
            else []
        ),
        f"switch {result['switch_ms']:.1f} ms",
    ]
    if result.get("prewarmed"):
        parts.append(
            f"prewarmed on {', '.join(result['prewarmed'])} ({result.get('prewarm_ms', 0):.0f} ms)"
        )
    if result.get("not_resident"):
        parts.append(f"not resident on {', '.join(result['not_resident'])} (loads on first use)")
    return "; ".join(parts)


def canary_bounds(options: dict[str, str | None]) -> dict[str, Any]:
    """CLI options → the canary request's bound fields: numbers, `off` (null: not checked),
    `steps` as comma-separated percentages. Raises ValueError naming the option."""
    bounds: dict[str, Any] = {}
    for name, raw in options.items():
        if raw is None:
            continue
        try:
            if name == "steps":
                bounds[name] = [float(s) for s in raw.split(",") if s.strip()]
            elif raw.strip().lower() == "off":
                bounds[name] = None
            else:
                bounds[name] = int(raw) if name == "min_requests" else float(raw)
        except ValueError:
            raise ValueError(f"--{name.replace('_', '-')}: {raw!r} is not a number") from None
    return bounds
