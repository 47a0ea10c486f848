"""The tables the CLI prints. Each fits an 80-column terminal with one line per row (cells
are cut with an ellipsis, never folded); `wide` adds the columns that need more room."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _table(columns: list[str]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    return table


def list_table(rows: list[dict[str, Any]], wide: bool = False) -> Table:
    """`adapters list`: one row per adapter."""
    columns = ["ADAPTER", "STABLE", "PREVIOUS", "CANARY", "VERSIONS"]
    table = _table(columns + (["BASE", "EVAL (STABLE)"] if wide else []))
    for r in rows:
        cells = [
            r["name"],
            r["stable"] or "-",
            r["previous"] or "-",
            r["canary"] or "-",
            " ".join(r["versions"]),
        ]
        table.add_row(*cells, *([r["base"] or "-", r["eval"] or "-"] if wide else []))
    return table


def status_table(listing: dict[str, Any], wide: bool = False) -> Table:
    """`adapters status`: one row per version (channel, validation, residency, pin)."""
    columns = ["ADAPTER", "VERSION", "CHANNEL", "VALID", "RESIDENT ON", "PIN"]
    table = _table(columns + (["VALIDATION", "EVALS"] if wide else []))
    for adapter in listing["adapters"]:
        canary = adapter["channels"].get("canary") or {}
        for v in adapter["versions"]:
            channel = v["channel"] or "-"
            if channel == "canary":
                channel = f"canary {canary.get('weight', 0):.0%}"
            pin = "operator" if v["version"] in adapter["channels"]["pinned"] else ""
            pin = pin or ("warm" if v["warm_pinned"] else "-")
            valid = v["validation"].partition(":")[0]  # valid, invalid, unknown
            cells = [
                adapter["name"],
                v["version"],
                channel,
                valid,
                " ".join(v["resident_on"]) or "-",
                pin,
            ]
            if wide:
                evals = ", ".join(
                    f"{d}: {e['metric']}={e['score']:.3f}" for d, e in v["evals"].items()
                )
                cells += [v["validation"], evals or "-"]
            table.add_row(*cells)
    return table


def audit_table(entries: list[dict[str, Any]], wide: bool = False) -> Table:
    """`adapters audit`: one row per change, oldest first."""
    columns = ["AT (UTC)", "ACTION", "ADAPTER", "CHANGE", "BY"]
    table = _table(columns + (["FORCED", "DETAIL"] if wide else []))
    for e in entries:
        action = e["action"] + ("!" if e.get("forced") else "")  # forced past the gate
        cells = [
            e["at"][:16].replace("T", " "),
            action,
            e.get("adapter") or "-",
            f"{e.get('from_version') or '-'} → {e.get('to_version') or '-'}",
            e["actor"],
        ]
        if wide:
            cells += ["yes" if e.get("forced") else "", e.get("detail") or ""]
        table.add_row(*cells)
    return table
