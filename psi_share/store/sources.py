"""What the store keeps of a dataset registered from Parquet: its metadata, never its rows.

A registered dataset has a row in ``datasets`` (name, revision, updated_at)
like an imported one, and a row in ``parquet_sources``: where the source is,
the column mapping, the Arrow types of the mapped columns, the
canonicalization it was checked with (phone region, kind versions), the
content fingerprint (store/parquet.py), and the counts that ``data list``
shows. ``parquet_skips`` lists the rows the registration left out (refused
with ``--rejects``, or duplicates of an earlier row): reads skip exactly
these, so a read yields exactly the rows the registration accepted.

The revision moves when what a read would yield may have changed: the
fingerprint, the location, the mapping or the canonicalization. Registering
an unchanged source again keeps the revision (and what was prepared from it).

Functions here run inside a transaction the caller holds (``Store``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass

from ..errors import PsiShareError
from ..identifiers import KINDS

#: Schema step 8 (db.py's migrations).
PARQUET_SCHEMA = """
CREATE TABLE parquet_sources (
    dataset           TEXT PRIMARY KEY REFERENCES datasets(name) ON DELETE CASCADE,
    uri               TEXT NOT NULL,
    mapping           TEXT NOT NULL,  -- JSON ColumnMapping
    schema            TEXT NOT NULL,  -- JSON: mapped column -> Arrow type
    canonicalization  TEXT NOT NULL,  -- JSON: phone region and kind versions the rows were checked with
    fingerprint       TEXT NOT NULL,
    files             INTEGER NOT NULL,
    rows              INTEGER NOT NULL,  -- rows in the source, refused and skipped ones included
    actors            INTEGER NOT NULL,
    kinds             TEXT NOT NULL,  -- JSON: kind -> identifiers read
    registered_at     REAL NOT NULL
);
CREATE TABLE parquet_skips (
    dataset  TEXT NOT NULL REFERENCES parquet_sources(dataset) ON DELETE CASCADE,
    file     TEXT NOT NULL,  -- below the source root
    line     INTEGER NOT NULL,  -- row number in the file, from 1
    PRIMARY KEY (dataset, file, line)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column holds what. Exactly one of ``kind_column`` and
    ``kind`` (a fixed kind for a single-kind source) is given."""

    actor: str
    value: str
    kind_column: str | None = None
    kind: str | None = None
    amount: str | None = None

    def __post_init__(self) -> None:
        if (self.kind_column is None) == (self.kind is None):
            raise PsiShareError("give the kind column (--kind-column) or one fixed kind (--kind), not both")
        if self.kind is not None and self.kind not in KINDS:
            raise PsiShareError(f"unknown identifier kind {self.kind!r} (known: {', '.join(sorted(KINDS))})")
        columns = self.columns()
        if any(not c for c in columns) or len(set(columns)) != len(columns):
            raise PsiShareError("the mapped columns must be named and distinct")

    def columns(self) -> list[str]:
        """The source columns read."""
        return [c for c in (self.actor, self.kind_column, self.value, self.amount) if c is not None]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ColumnMapping:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ParquetRecord:
    """A registered Parquet dataset, as the store keeps it."""

    dataset: str
    uri: str
    mapping: ColumnMapping
    schema: dict[str, str]
    phone_region: str
    versions: dict[str, int]  # kind -> canonicalization version at registration
    fingerprint: str
    files: int
    rows: int
    actors: int
    kinds: dict[str, int]
    registered_at: float
    skipped: int = 0

    def state(self) -> tuple[str, str, str, str, str]:
        """What a read depends on: when it changes, the revision moves."""
        return (self.uri, self.mapping.to_json(), self._canonicalization(), self.fingerprint,
                json.dumps(self.schema, sort_keys=True))

    def _canonicalization(self) -> str:
        return json.dumps({"phone_region": self.phone_region, "versions": self.versions}, sort_keys=True)

    def stale_kinds(self) -> list[str]:
        """Kinds whose canonicalization version changed since registration."""
        return sorted(k for k in self.kinds if KINDS[k].version != self.versions.get(k)) if self.kinds else []


def load_record(db: sqlite3.Connection, dataset: str) -> ParquetRecord | None:
    """The dataset's Parquet record, or None for an imported dataset."""
    r = db.execute("SELECT * FROM parquet_sources WHERE dataset = ?", (dataset,)).fetchone()
    if r is None:
        return None
    canon = json.loads(r["canonicalization"])
    skipped = db.execute("SELECT COUNT(*) FROM parquet_skips WHERE dataset = ?", (dataset,)).fetchone()[0]
    return ParquetRecord(
        dataset=dataset, uri=r["uri"], mapping=ColumnMapping.from_json(r["mapping"]), schema=json.loads(r["schema"]),
        phone_region=canon["phone_region"], versions=canon["versions"], fingerprint=r["fingerprint"],
        files=r["files"], rows=r["rows"], actors=r["actors"], kinds=json.loads(r["kinds"]),
        registered_at=r["registered_at"], skipped=skipped,
    )


def load_skips(db: sqlite3.Connection, dataset: str) -> dict[str, set[int]]:
    """file -> row numbers the registration left out."""
    skips: dict[str, set[int]] = {}
    for file, line in db.execute("SELECT file, line FROM parquet_skips WHERE dataset = ?", (dataset,)):
        skips.setdefault(file, set()).add(line)
    return skips


def save_record(db: sqlite3.Connection, record: ParquetRecord, skips: list[tuple[str, int]], *, now: float) -> tuple[int, bool]:
    """Store a registration; return (revision, changed). Creates the
    dataset; refuses a name that holds imported rows."""
    name = record.dataset
    created = db.execute(
        "INSERT INTO datasets(name, revision, updated_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING", (name, now)
    ).rowcount
    previous = load_record(db, name)
    if previous is None and not created:
        raise PsiShareError(
            f"dataset {name!r} holds imported rows: delete it first ('psi-share data delete {name}') "
            "or register the Parquet source under another name"
        )
    changed = previous is None or previous.state() != record.state()
    db.execute("DELETE FROM parquet_sources WHERE dataset = ?", (name,))  # its skips go with it
    db.execute(
        "INSERT INTO parquet_sources(dataset, uri, mapping, schema, canonicalization, fingerprint, files, rows, "
        "actors, kinds, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, record.uri, record.mapping.to_json(), json.dumps(record.schema, sort_keys=True),
         record._canonicalization(), record.fingerprint, record.files, record.rows, record.actors,
         json.dumps(record.kinds, sort_keys=True), now),
    )
    db.executemany("INSERT INTO parquet_skips(dataset, file, line) VALUES (?, ?, ?)", ((name, f, n) for f, n in skips))
    if changed:
        db.execute("UPDATE datasets SET revision = revision + 1, updated_at = ? WHERE name = ?", (now, name))
    revision = db.execute("SELECT revision FROM datasets WHERE name = ?", (name,)).fetchone()[0]
    return revision, changed


def refuse_rows_into(db: sqlite3.Connection, dataset: str) -> None:
    """An import may not write rows into a dataset registered from Parquet."""
    if db.execute("SELECT 1 FROM parquet_sources WHERE dataset = ?", (dataset,)).fetchone():
        raise PsiShareError(
            f"dataset {dataset!r} is registered from a Parquet source and holds no rows of its own: "
            "register the source again after changing it, or import under another name"
        )
