"""What the release commands share: the gateway URL and arguments, the admin client with its
exit codes, and how a channel change is printed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from server.cli.admin_client import AdminClient, Refused, Unreachable, change_summary

console = Console()
err_console = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="LORAGATE_URL", help="gateway URL")]
NameArg = Annotated[str, typer.Argument(help="adapter name")]
VersionArg = Annotated[str, typer.Argument(help="version, e.g. v3")]
DEFAULT_URL = "http://127.0.0.1:8000"


@contextlib.contextmanager
def admin(url: str) -> Iterator[AdminClient]:
    """A client sending LORAGATE_ADMIN_TOKEN. Exit 1 when the gateway refuses (its message is
    printed), 2 when it cannot be reached."""
    try:
        with AdminClient(url, os.environ.get("LORAGATE_ADMIN_TOKEN")) as client:
            yield client
    except Refused as exc:
        err_console.print(f"[red]refused ({exc.status}):[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    except Unreachable as exc:
        err_console.print(f"[red]unreachable:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None


def show_change(result: dict[str, Any]) -> None:
    console.print(escape(change_summary(result)))
    if result.get("gate"):
        console.print(f"gate: {escape(result['gate']['reason'])}")
    if result.get("forced"):
        console.print("[yellow]forced past the eval gate (audited as forced)[/yellow]")
