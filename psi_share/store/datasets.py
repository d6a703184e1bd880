"""Writing a dataset's rows, and moving the revision only when they change.

A dataset's *revision* keys what the node prepares from it (the PSI
responder's filter, the blinded sets of intersection-sum): a new revision
means a new key and an expensive preparation, and tells a peer that matches
twice that the set changed. So the revision moves exactly when the stored
rows change: appending rows the dataset already holds, or replacing it with
what it already holds, leaves it (and ``updated_at``) alone.

Functions here run inside a transaction the caller holds (``Store``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, NamedTuple

from ..identifiers import canonicalize
from .sources import refuse_rows_into

if TYPE_CHECKING:  # db.py imports this module
    from .db import IdentifierRow


class DatasetWrite(NamedTuple):
    """What one write to a dataset did."""

    actors_added: int
    identifiers_added: int
    actors_removed: int
    identifiers_removed: int
    revision: int  # the dataset's revision afterwards
    changed: bool  # False: the dataset already held exactly this, the revision did not move


_APPEND_IDENTIFIER = (
    "INSERT OR IGNORE INTO identifiers(dataset, actor_id, kind, version, canonical, raw, amount) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# A replace takes the file's version, raw text and amount; the WHERE leaves an
# identical row untouched, so that it does not count as a change.
_REPLACE_IDENTIFIER = _APPEND_IDENTIFIER.replace("OR IGNORE ", "") + (
    " ON CONFLICT(dataset, actor_id, kind, canonical) DO UPDATE SET version = excluded.version, "
    "raw = excluded.raw, amount = excluded.amount WHERE identifiers.version IS NOT excluded.version "
    "OR identifiers.raw IS NOT excluded.raw OR identifiers.amount IS NOT excluded.amount"
)


def write_rows(
    db: sqlite3.Connection, name: str, rows: list[IdentifierRow], *, replace: bool, now: float
) -> DatasetWrite:
    """Extend dataset ``name`` with ``rows`` (an identifier the actor already
    has, same kind and canonical form, keeps its stored raw text and amount),
    or with ``replace`` make it hold exactly ``rows``. Creates the dataset."""
    refuse_rows_into(db, name)
    created = db.execute(
        "INSERT INTO datasets(name, revision, updated_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING", (name, now)
    ).rowcount
    before = _counts(db, name)
    removed = _remove_rows_not_in(db, name, rows) if replace else (0, 0)
    db.executemany("INSERT OR IGNORE INTO actors(dataset, actor_id) VALUES (?, ?)", ((name, r.actor_id) for r in rows))
    written = db.executemany(
        _REPLACE_IDENTIFIER if replace else _APPEND_IDENTIFIER,
        ((name, r.actor_id, r.kind, r.version, r.canonical, r.raw, r.amount) for r in rows),
    ).rowcount  # rows inserted, plus (replace) rows whose version, raw text or amount changed
    after = _counts(db, name)
    added = (after[0] - before[0] + removed[0], after[1] - before[1] + removed[1])
    changed = bool(created or any(removed) or written)
    if changed:
        db.execute("UPDATE datasets SET revision = revision + 1, updated_at = ? WHERE name = ?", (now, name))
    revision = db.execute("SELECT revision FROM datasets WHERE name = ?", (name,)).fetchone()[0]
    return DatasetWrite(*added, *removed, revision, changed)


def _counts(db: sqlite3.Connection, dataset: str) -> tuple[int, int]:
    """(actors, identifiers) of ``dataset``."""
    return (
        db.execute("SELECT COUNT(*) FROM actors WHERE dataset = ?", (dataset,)).fetchone()[0],
        db.execute("SELECT COUNT(*) FROM identifiers WHERE dataset = ?", (dataset,)).fetchone()[0],
    )


def _remove_rows_not_in(db: sqlite3.Connection, dataset: str, rows: list[IdentifierRow]) -> tuple[int, int]:
    """Delete the dataset's identifiers and actors that ``rows`` do not hold;
    return (actors, identifiers) removed. The keys go through a temporary
    table so that SQLite compares them, not Python over the whole dataset."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_keys (actor_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "canonical TEXT NOT NULL, PRIMARY KEY (actor_id, kind, canonical)) WITHOUT ROWID"
    )
    db.execute("DELETE FROM temp.incoming_keys")
    db.executemany(
        "INSERT OR IGNORE INTO temp.incoming_keys VALUES (?, ?, ?)", ((r.actor_id, r.kind, r.canonical) for r in rows)
    )
    identifiers = db.execute(
        "DELETE FROM identifiers WHERE dataset = ? AND NOT EXISTS (SELECT 1 FROM temp.incoming_keys k WHERE "
        "k.actor_id = identifiers.actor_id AND k.kind = identifiers.kind AND k.canonical = identifiers.canonical)",
        (dataset,),
    ).rowcount
    actors = db.execute(
        "DELETE FROM actors WHERE dataset = ? AND actor_id NOT IN (SELECT actor_id FROM temp.incoming_keys)",
        (dataset,),
    ).rowcount
    db.execute("DELETE FROM temp.incoming_keys")
    return actors, identifiers


def device_ids_v2(db: sqlite3.Connection) -> None:
    """Schema step 5: device ids stored under canonicalization version 1
    (lowercased) get their version-2 form (case kept, see identifiers.py),
    computed again from the raw text the store keeps. Datasets holding any
    get a new revision, so that nothing prepared from their version-1 items
    is reused. The device_id rules read nothing from the node's context
    (unlike phone's region), so the default context is exact here."""
    stale = db.execute(
        "SELECT rowid, dataset, raw FROM identifiers WHERE kind = 'device_id' AND version < 2"
    ).fetchall()
    # Two rows of one actor never collide: version 2 only stops folding the
    # case of some ids, so distinct version-1 forms stay distinct.
    db.executemany(
        "UPDATE identifiers SET version = 2, canonical = ? WHERE rowid = ?",
        ((canonicalize("device_id", r[2]), r[0]) for r in stale),
    )
    db.executemany(
        "UPDATE datasets SET revision = revision + 1 WHERE name = ?",
        ((name,) for name in sorted({r[1] for r in stale})),
    )
