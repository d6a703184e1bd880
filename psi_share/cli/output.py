"""Rendering rows as a rich table, CSV or JSON (one place for all commands)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="Output as a table for people, or CSV/JSON for scripts.",
)

console = Console()
err_console = Console(stderr=True)


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2, default=str))
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _flat(r.get(c)) for c in columns})
        return
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c.replace("_", " "))
    for r in rows:
        table.add_row(*(_flat(r.get(c)) for c in columns))
    console.print(table)


def emit_object(obj: dict[str, Any], fmt: str, title: str | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        emit([{"key": k, "value": v} for k, v in obj.items()], ("key", "value"), fmt, title)


def _flat(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
