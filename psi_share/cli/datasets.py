"""CLI for datasets that stay in the warehouse: ``data register`` and ``data show``.

Registered from ``cli/main.py`` on its ``data`` group. Commands use
``click.pass_obj`` (the ``Ctx`` of ``main.py``), as cli/jobs.py does.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..store.parquet import BATCH_ROWS
from ..store.registry import register_parquet
from ..store.sources import ColumnMapping
from ..timefmt import utc_text
from .output import emit_object, format_option


@click.command("register")
@click.argument("dataset")
@click.argument("source")
@click.option("--actor-column", required=True, metavar="COLUMN", help="Column holding the actor id (string or integer).")
@click.option("--value-column", required=True, metavar="COLUMN", help="Column holding the identifier (string).")
@click.option("--kind-column", default=None, metavar="COLUMN", help="Column holding each row's kind (string).")
@click.option("--kind", "fixed_kind", default=None, metavar="KIND",
              help="One kind for every row (a single-kind source); instead of --kind-column.")
@click.option("--amount-column", default=None, metavar="COLUMN",
              help="Column holding each row's amount for intersection-sum (integer, optional).")
@click.option(
    "--rejects", "rejects", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="Register the valid rows; write each refused row's file, row number, kind and reason (never its "
         "value) to FILE (CSV). An existing FILE is overwritten only if it is a rejects file.",
)
@click.option("--batch-rows", type=click.IntRange(1, 10_000_000), default=BATCH_ROWS, show_default=True,
              help="Rows read per record batch (memory, not results).")
@format_option
@click.pass_obj
def data_register(
    c: object, dataset: str, source: str, actor_column: str, value_column: str, kind_column: str | None,
    fixed_kind: str | None, amount_column: str | None, rejects: Path | None, batch_rows: int, fmt: str,
) -> None:
    """Register a Parquet SOURCE as DATASET: read in place, never copied.

    \b
    SOURCE is a Parquet file, a directory of them (read recursively; names
    starting with . or _ are skipped, as Spark writes _SUCCESS), or a URI
    pyarrow opens (file:///...). Map its columns with --actor-column,
    --value-column and --kind-column (or --kind for a single-kind source).

    Every row is read and canonicalized now, as an import would; a refused
    row (file, row number and reason, never the value) stops the
    registration and every refused row is listed; with --rejects FILE the
    valid rows are registered. The store keeps the source, the mapping, the
    column types and a fingerprint of the files; the node reads the rows
    from the source each time it prepares the dataset, and refuses to if the
    files changed since. Registering an unchanged source again keeps the
    dataset's revision; a changed one gets a new revision.
    """
    mapping = ColumnMapping(actor=actor_column, value=value_column, kind_column=kind_column, kind=fixed_kind,
                            amount=amount_column)
    with c.node() as n:  # type: ignore[attr-defined]
        s = register_parquet(n.store, dataset, source, mapping, ctx=n.config.canonicalization, now=n.clock(),
                             rejects=rejects, batch_rows=batch_rows)
        emit_object(
            {"dataset": s.dataset, "source": s.uri, "files": s.files, "rows": s.rows, "rejected": s.rejected,
             "rejected_by_reason": s.rejected_by_reason, "rejects_file": s.rejects_file, "actors": s.actors,
             "identifiers": s.identifiers, "kinds": s.kinds, "duplicates_collapsed": s.duplicates,
             "fingerprint": s.fingerprint, "revision": s.revision, "changed": s.changed},
            fmt, title="register",
        )
    if s.rejected:
        click.echo(f"{s.rejected} of {s.rows} rows refused and left out; file, row and reason of each "
                   f"are in {s.rejects_file}", err=True)


@click.command("show")
@click.argument("dataset")
@format_option
@click.pass_obj
def data_show(c: object, dataset: str, fmt: str) -> None:
    """Show DATASET: counts by kind, revision and, for a Parquet dataset,
    where it is read from, its column mapping, types and fingerprint."""
    with c.node() as n:  # type: ignore[attr-defined]
        info = n.store.dataset(dataset)
        source = n.store.parquet_source(dataset)
        shown: dict[str, object] = {
            "dataset": info.name, "source": "imported" if source is None else "parquet", "actors": info.actors,
            "identifiers": info.identifiers, "kinds": info.kinds, "revision": info.revision,
            "exposed_to_peers": info.name in n.config.exposure.datasets, "updated": utc_text(info.updated_at),
        }
        if source is not None:
            m = source.mapping
            shown |= {
                "location": source.uri, "files": source.files, "rows": source.rows, "rows_left_out": source.skipped,
                "actor_column": m.actor, "value_column": m.value, "kind_column": m.kind_column or "",
                "fixed_kind": m.kind or "", "amount_column": m.amount or "", "column_types": source.schema,
                "phone_region": source.phone_region, "fingerprint": source.fingerprint,
            }
        emit_object(shown, fmt, title=f"dataset {dataset}")


def register(data: click.Group) -> None:
    """Add this module's commands to main.py's ``data`` group."""
    data.add_command(data_register)
    data.add_command(data_show)
