"""Rendering rows as a rich table, CSV or JSON (one place for all commands).

A table never cuts a value: on a terminal a long value wraps inside its
column (``overflow="fold"``, never an ellipsis); anywhere else (a pipe, a
file, a CI log) there is no width to respect, so the table is printed as
wide as its content. Cells are plain text, never rich markup, so a
``[section]`` in a value is printed as it is.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "csv", "json")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="Output as a table for people, or CSV/JSON for scripts.",
)

console = Console()
err_console = Console(stderr=True)
# Rich falls back to 80 columns when stdout is not a terminal and shrinks
# tables to fit; this is the width a table may take there instead.
_UNBOUNDED_WIDTH = 1_000_000


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
    table = Table(title=Text(title) if title else None, show_lines=False)
    for c in columns:
        table.add_column(c.replace("_", " "), overflow="fold")
    for r in rows:
        table.add_row(*(Text(_flat(r.get(c))) for c in columns))
    (console if console.is_terminal else Console(width=_UNBOUNDED_WIDTH)).print(table)


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
