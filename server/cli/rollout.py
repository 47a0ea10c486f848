"""`loragate adapters canary|shadow`: a canary with its analysis bounds (and steps), a shadow.
Registered on the `adapters` group by `server.cli.main`."""

from __future__ import annotations

from typing import Annotated

import typer

from server.cli.admin_client import canary_bounds
from server.cli.remote import DEFAULT_URL, NameArg, UrlOpt, VersionArg, admin, show_change

BoundOpt = Annotated[str | None, typer.Option(help="a number, or off (not checked)")]


def canary(
    name: NameArg,
    version: VersionArg,
    weight: Annotated[
        float | None, typer.Argument(help="share of requests, 0..1; 0 ends it; with --steps: -")
    ] = None,
    max_error_rate_delta: BoundOpt = None,
    max_p99_ratio: BoundOpt = None,
    max_violation_rate: BoundOpt = None,
    min_requests: BoundOpt = None,
    window_s: BoundOpt = None,
    steps: Annotated[str | None, typer.Option(help="percent steps, e.g. 1,5,25,50,100")] = None,
    dwell_s: BoundOpt = None,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Send a share of NAME's requests to VERSION (sticky per OpenAI `user`); the gateway
    rolls it back by itself when it breaks a bound against the stable (defaults: 2 points
    more 5xx, 1.5x p99, 1 % failed output checks, over 50+ requests in 300 s). With --steps
    the share grows a step per --dwell-s held, and VERSION is promoted after 100."""
    options = {
        "max_error_rate_delta": max_error_rate_delta,
        "max_p99_ratio": max_p99_ratio,
        "max_violation_rate": max_violation_rate,
        "min_requests": min_requests,
        "window_s": window_s,
        "steps": steps,
        "dwell_s": dwell_s,
    }
    try:
        bounds = canary_bounds(options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with admin(url) as client:
        show_change(client.canary(name, version, weight, **bounds))


def shadow(
    name: NameArg,
    version: VersionArg,
    share: Annotated[float, typer.Argument(help="share of the stable's requests, 0..1; 0 ends")],
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Mirror a share of NAME's stable requests to VERSION (never answered from); results go
    to VERSION's evals/shadow.json, which the promotion gate reads."""
    with admin(url) as client:
        show_change(client.shadow(name, version, share))
