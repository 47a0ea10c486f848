"""Adapter names, versions and references (`name`, `name@version`).

Names and versions become directory names and engine-side LoRA names, so the rules are
strict: anything else is refused with `InvalidName` before it reaches the filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import InvalidName

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# `v<N>` or semver `MAJOR.MINOR.PATCH[-prerelease]`; no build metadata (`+` is not path-safe
# everywhere and carries no ordering).
_V_RE = re.compile(r"v(0|[1-9][0-9]{0,8})")
_SEMVER_RE = re.compile(
    r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
    r"(?:-([0-9A-Za-z-]{1,32}(?:\.[0-9A-Za-z-]{1,32}){0,7}))?"
)

VersionKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def check_name(name: str) -> str:
    """Return `name` if it is a valid adapter name; raise `InvalidName` otherwise."""
    if not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid adapter name {name!r}: use [a-z0-9][a-z0-9_-]{{0,62}}", param="name"
        )
    return name


def check_version(version: str) -> str:
    """Return `version` if it is `v<N>` or semver; raise `InvalidName` otherwise."""
    version_key(version)
    return version


def version_key(version: str) -> VersionKey:
    """Sort key: `v<N>` orders like `N.0.0`; a semver prerelease sorts before its release.

    Raises `InvalidName` for anything that is neither form.
    """
    if m := _V_RE.fullmatch(version):
        return (int(m.group(1)), 0, 0, 1, ())
    if m := _SEMVER_RE.fullmatch(version):
        pre = m.group(4)
        # A release (no prerelease) sorts after all its prereleases: flag 1 vs 0.
        ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
        return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids)
    raise InvalidName(
        f"invalid version {version!r}: use v<N> (v3) or semver (1.2.0, 1.2.0-rc.1)",
        param="version",
    )


@dataclass(frozen=True, order=True)
class AdapterRef:
    """An adapter name with an optional exact version, as written `name` or `name@version`."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """Parse `name` or `name@version`; raise `InvalidName` for anything else."""
        name, sep, version = text.partition("@")
        check_name(name)
        if not sep:
            return cls(name)
        return cls(name, check_version(version))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name
