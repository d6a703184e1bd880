"""SQLite store of one node.

The store holds the lab's own data (it never leaves the node) and the record
of every match session. Writes that belong together happen in one
transaction: an import is all or nothing, a session's results are stored with
its final status or not at all. WAL journaling keeps readers (the CLI)
working while ``serve`` writes, and makes a killed process leave a consistent
file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidIdentifier, NotFound, StoreError
from ..names import NAME_PATTERN, check_name  # noqa: F401  (NAME_PATTERN: still importable from here)
# The record types of the two halves stay importable from here.
from .aggregates import AggregateRecords, FederationRunRecord, SumResultRecord  # noqa: F401
from .datasets import DatasetWrite, device_ids_v2, write_rows
from .job_runs import JobRunPeerRecord, JobRunRecord, JobRunRecords  # noqa: F401

_SCHEMA = """
CREATE TABLE datasets (
    name        TEXT PRIMARY KEY,
    revision    INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);
CREATE TABLE actors (
    dataset   TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
    actor_id  TEXT NOT NULL,
    PRIMARY KEY (dataset, actor_id)
);
CREATE TABLE identifiers (
    dataset    TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    canonical  TEXT NOT NULL,
    raw        TEXT NOT NULL,
    PRIMARY KEY (dataset, actor_id, kind, canonical),
    FOREIGN KEY (dataset, actor_id) REFERENCES actors(dataset, actor_id) ON DELETE CASCADE
);
CREATE INDEX identifiers_by_kind ON identifiers(dataset, kind);
CREATE TABLE peers (
    name      TEXT PRIMARY KEY,
    address   TEXT NOT NULL,
    added_at  REAL NOT NULL,
    note      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE job_runs (
    id           TEXT PRIMARY KEY,
    job_name     TEXT NOT NULL,
    started_at   REAL NOT NULL,
    finished_at  REAL,
    status       TEXT NOT NULL,
    parameters   TEXT NOT NULL,
    error        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('requester', 'responder')),
    protocol       TEXT NOT NULL,
    peer           TEXT NOT NULL,
    local_dataset  TEXT NOT NULL,
    peer_dataset   TEXT NOT NULL,
    kinds          TEXT NOT NULL,
    mode           TEXT NOT NULL,
    job_run_id     TEXT REFERENCES job_runs(id),
    status         TEXT NOT NULL,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    requester_set_size  INTEGER,
    matched_count  INTEGER,
    false_positive_rate REAL,
    error          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_run ON sessions(job_run_id);
CREATE TABLE matches (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    actor_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    PRIMARY KEY (session_id, actor_id, kind)
);
"""

# Periodic jobs (issue 6): how a run was started, the schedule slot it served,
# and one row per peer of a run (a peer that was unreachable has no session,
# so its outcome, attempts and reason live here).
_JOB_HISTORY_SCHEMA = """
ALTER TABLE job_runs ADD COLUMN triggered_by TEXT NOT NULL DEFAULT 'manual';
ALTER TABLE job_runs ADD COLUMN scheduled_for REAL;
CREATE INDEX job_runs_by_job ON job_runs(job_name, started_at);
CREATE TABLE job_run_peers (
    run_id          TEXT NOT NULL REFERENCES job_runs(id) ON DELETE CASCADE,
    peer            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    attempts        INTEGER NOT NULL,
    session_id      TEXT,
    matched_items   INTEGER,
    matched_actors  INTEGER,
    seconds         REAL NOT NULL,
    error           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, peer)
);
"""

#: Schema steps, applied in order from the store's ``user_version`` up. A
#: change to the schema appends a step; released steps are never edited. A
#: step is SQL, or a function run in the step's transaction.
_MIGRATIONS: tuple[tuple[int, str | Callable[[sqlite3.Connection], None]], ...] = (
    (1, _SCHEMA),
    (2, _JOB_HISTORY_SCHEMA),
    # Per-peer query budgets (policy): what each peer used per UTC day, so
    # that a restart does not hand out a fresh budget.
    (3, """
CREATE TABLE peer_usage (
    peer      TEXT NOT NULL,
    day       TEXT NOT NULL,
    sessions  INTEGER NOT NULL DEFAULT 0,
    items     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, day)
);
"""),
    (4, """
-- Paillier aggregates (intersection-sum, federation totals).
-- An identifier row may carry a non-negative integer (NULL: none given).
ALTER TABLE identifiers ADD COLUMN amount INTEGER CHECK (amount IS NULL OR amount >= 0);
-- What an intersection-sum session learned (both roles); sums are decimal
-- text because they may exceed SQLite's 64-bit integers.
CREATE TABLE sum_results (
    session_id         TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    kind               TEXT NOT NULL,
    value_holder       TEXT NOT NULL CHECK (value_holder IN ('requester', 'responder')),
    key_bits           INTEGER NOT NULL,
    intersection_size  INTEGER NOT NULL,
    total              TEXT NOT NULL,
    own_set_size       INTEGER NOT NULL,
    peer_set_size      INTEGER NOT NULL
);
-- This lab's own figures, by metric name, for federation totals.
CREATE TABLE federation_figures (
    metric      TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
-- Federation-total runs, as initiator or contributor.
CREATE TABLE federation_runs (
    id               TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('initiator', 'contributor')),
    metric           TEXT NOT NULL,
    initiator        TEXT NOT NULL,
    participants     TEXT NOT NULL,
    min_contributors INTEGER NOT NULL,
    job_run_id       TEXT,
    status           TEXT NOT NULL,
    started_at       REAL NOT NULL,
    finished_at      REAL,
    contributors     INTEGER,
    total            TEXT,
    error            TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, role)
);
"""),
    (5, device_ids_v2),
    # Differential privacy (issue 11): the epsilon each peer's releases were
    # charged, per UTC day and protocol, in millionths (integers: sums stay
    # exact), kept here so that a restart does not hand out a fresh budget.
    (6, """
CREATE TABLE dp_spent (
    peer           TEXT NOT NULL,
    day            TEXT NOT NULL,
    protocol       TEXT NOT NULL,
    micro_epsilon  INTEGER NOT NULL CHECK (micro_epsilon >= 0),
    releases       INTEGER NOT NULL CHECK (releases >= 0),
    PRIMARY KEY (peer, day, protocol)
);
"""),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


@dataclass(frozen=True)
class IdentifierRow:
    """One identifier of one actor, already canonicalized."""

    actor_id: str
    kind: str
    version: int
    canonical: str
    raw: str
    amount: int | None = None  # the row's non-negative integer, if the file gave one


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    revision: int
    actors: int
    identifiers: int
    kinds: dict[str, int]  # kind -> identifier count
    updated_at: float


@dataclass(frozen=True)
class PeerRecord:
    name: str
    address: str
    added_at: float
    note: str


@dataclass(frozen=True)
class SessionRecord:
    id: str
    role: str
    protocol: str
    peer: str
    local_dataset: str
    peer_dataset: str
    kinds: dict[str, int]
    mode: str
    job_run_id: str | None
    status: str
    started_at: float
    finished_at: float | None
    requester_set_size: int | None
    matched_count: int | None
    false_positive_rate: float | None
    error: str


@dataclass(frozen=True)
class MatchRecord:
    session_id: str
    peer: str
    actor_id: str
    kind: str


class Store(JobRunRecords, AggregateRecords):
    """One node's SQLite database. Safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}; this software reads up to {SCHEMA_VERSION}"
                )
            for step, script in _MIGRATIONS:
                if step > version:
                    # executescript commits first; the step and its version
                    # bump then land in one transaction of their own.
                    try:
                        if callable(script):
                            with self.transaction() as db:
                                script(db)
                                db.execute(f"PRAGMA user_version={step}")
                        else:
                            self._db.executescript(f"BEGIN IMMEDIATE;{script}PRAGMA user_version={step};COMMIT;")
                    except (sqlite3.Error, InvalidIdentifier) as exc:
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                        raise StoreError(f"store {self.path}: schema step {step} failed: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: commit on success, roll back on any exception."""
        with self._lock:
            began = not self._db.in_transaction
            if began:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if began and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            else:
                if began and self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- datasets --------------------------------------------------------

    def write_dataset(
        self, name: str, rows: Iterable[IdentifierRow], *, replace: bool, now: float,
        before_commit: Callable[[], None] | None = None,
    ) -> DatasetWrite:
        """Replace or extend a dataset in one transaction (see
        :func:`~psi_share.store.datasets.write_rows`); ``before_commit`` runs
        in it, last: if it raises, nothing is written."""
        check_name("dataset", name)
        rows = list(rows)
        with self.transaction() as db:
            written = write_rows(db, name, rows, replace=replace, now=now)
            if before_commit is not None:
                before_commit()
        return written

    def delete_dataset(self, name: str) -> None:
        with self.transaction() as db:
            self.dataset(name)
            db.execute("DELETE FROM identifiers WHERE dataset = ?", (name,))
            db.execute("DELETE FROM actors WHERE dataset = ?", (name,))
            db.execute("DELETE FROM datasets WHERE name = ?", (name,))

    def datasets(self) -> list[DatasetInfo]:
        names = [r["name"] for r in self._query("SELECT name FROM datasets ORDER BY name")]
        return [self.dataset(n) for n in names]

    def dataset(self, name: str) -> DatasetInfo:
        row = self._query("SELECT * FROM datasets WHERE name = ?", (name,))
        if not row:
            raise NotFound(f"no dataset named {name!r} in this node's store")
        kinds = {
            r["kind"]: r["n"]
            for r in self._query(
                "SELECT kind, COUNT(*) AS n FROM identifiers WHERE dataset = ? GROUP BY kind ORDER BY kind",
                (name,),
            )
        }
        actors = self._query("SELECT COUNT(*) FROM actors WHERE dataset = ?", (name,))[0][0]
        return DatasetInfo(
            name=name,
            revision=row[0]["revision"],
            actors=actors,
            identifiers=sum(kinds.values()),
            kinds=kinds,
            updated_at=row[0]["updated_at"],
        )

    def identifiers(self, dataset: str, kinds: Iterable[str]) -> list[IdentifierRow]:
        """Every identifier of ``dataset`` whose kind is in ``kinds``."""
        self.dataset(dataset)
        kinds = sorted(set(kinds))
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            f"SELECT actor_id, kind, version, canonical, raw, amount FROM identifiers "
            f"WHERE dataset = ? AND kind IN ({marks}) ORDER BY actor_id, kind, canonical",
            (dataset, *kinds),
        )
        return [
            IdentifierRow(r["actor_id"], r["kind"], r["version"], r["canonical"], r["raw"], r["amount"]) for r in rows
        ]

    def actor_ids(self, dataset: str) -> list[str]:
        self.dataset(dataset)
        return [r[0] for r in self._query("SELECT actor_id FROM actors WHERE dataset=? ORDER BY actor_id", (dataset,))]

    # -- peers -----------------------------------------------------------

    def add_peer(self, name: str, address: str, *, now: float, note: str = "", replace: bool = False) -> None:
        check_name("peer", name)
        with self.transaction() as db:
            exists = db.execute("SELECT 1 FROM peers WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise StoreError(f"peer {name!r} already exists (use --replace to change its address)")
            db.execute(
                "INSERT INTO peers(name, address, added_at, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET address = excluded.address, note = excluded.note",
                (name, address, now, note),
            )

    def remove_peer(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM peers WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no peer named {name!r}")

    def peer(self, name: str) -> PeerRecord:
        rows = self._query("SELECT * FROM peers WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"unknown peer {name!r}: add it with 'psi-share peers add {name} HOST:PORT'")
        r = rows[0]
        return PeerRecord(r["name"], r["address"], r["added_at"], r["note"])

    def peers(self) -> list[PeerRecord]:
        return [
            PeerRecord(r["name"], r["address"], r["added_at"], r["note"])
            for r in self._query("SELECT * FROM peers ORDER BY name")
        ]

    # -- sessions and results --------------------------------------------

    def start_session(self, record: SessionRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sessions(id, role, protocol, peer, local_dataset, peer_dataset, kinds, mode, "
                "job_run_id, status, started_at, requester_set_size, false_positive_rate) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id, record.role, record.protocol, record.peer, record.local_dataset,
                    record.peer_dataset, json.dumps(record.kinds, sort_keys=True), record.mode,
                    record.job_run_id, record.status, record.started_at, record.requester_set_size,
                    record.false_positive_rate,
                ),
            )

    def finish_session(
        self,
        session_id: str,
        status: str,
        *,
        now: float,
        matched_count: int | None = None,
        matches: Iterable[tuple[str, str]] = (),
        error: str = "",
    ) -> None:
        """Record a session's end and its (actor_id, kind) matches atomically."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO matches(session_id, actor_id, kind) VALUES (?, ?, ?)",
                ((session_id, a, k) for a, k in matches),
            )
            db.execute(
                "UPDATE sessions SET status = ?, finished_at = ?, matched_count = ?, error = ? WHERE id = ?",
                (status, now, matched_count, error, session_id),
            )

    def session(self, session_id: str) -> SessionRecord:
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            rows = self._query("SELECT * FROM sessions WHERE substr(id, 1, length(?)) = ?", (session_id, session_id))
            if len(rows) != 1:
                raise NotFound(f"no session {session_id!r}" + (" (ambiguous prefix)" if rows else ""))
        return _session(rows[0])

    def sessions(self, *, job_run_id: str | None = None, limit: int = 50) -> list[SessionRecord]:
        if job_run_id is not None:
            rows = self._query("SELECT * FROM sessions WHERE job_run_id = ? ORDER BY started_at", (job_run_id,))
        else:
            rows = self._query("SELECT * FROM sessions ORDER BY started_at DESC LIMIT ?", (limit,))
        return [_session(r) for r in rows]

    def matches(self, session_ids: Sequence[str]) -> list[MatchRecord]:
        if not session_ids:
            return []
        marks = ",".join("?" * len(session_ids))
        rows = self._query(
            f"SELECT m.session_id, s.peer, m.actor_id, m.kind FROM matches m JOIN sessions s ON s.id = m.session_id "
            f"WHERE m.session_id IN ({marks}) ORDER BY m.actor_id, s.peer, m.kind",
            list(session_ids),
        )
        return [MatchRecord(r[0], r[1], r[2], r[3]) for r in rows]


# -- per-peer budgets (policy) -------------------------------------------------


@dataclass(frozen=True)
class UsageCharge:
    """The outcome of charging one session to a peer's daily budget."""

    charged: bool
    sessions_used: int  # after the charge when charged, before it otherwise
    items_used: int


def charge_usage(store: Store, peer: str, day: str, items: int, *, max_sessions: int, max_items: int) -> UsageCharge:
    """Charge one session of ``items`` to ``peer``'s budget for ``day``, atomically,
    only if both stay within the limits."""
    with store.transaction() as db:
        row = db.execute("SELECT sessions, items FROM peer_usage WHERE peer = ? AND day = ?", (peer, day)).fetchone()
        sessions, used = (row[0], row[1]) if row else (0, 0)
        if sessions + 1 > max_sessions or used + items > max_items:
            return UsageCharge(False, sessions, used)
        db.execute(
            "INSERT INTO peer_usage(peer, day, sessions, items) VALUES (?, ?, 1, ?) "
            "ON CONFLICT(peer, day) DO UPDATE SET sessions = sessions + 1, items = items + excluded.items",
            (peer, day, items),
        )
    return UsageCharge(True, sessions + 1, used + items)


def interrupt_responder_sessions(store: Store, *, now: float) -> int:
    """Record responder sessions left open by a node that died (kill -9,
    power loss) as interrupted; a responder session lives only in the
    serving process's memory, so none can still be running at serve start."""
    with store.transaction() as db:
        return db.execute(
            "UPDATE sessions SET status = 'interrupted', finished_at = ?, "
            "error = 'the node stopped before the session ended' WHERE role = 'responder' AND status = 'open'",
            (now,),
        ).rowcount


def usage(store: Store, day: str) -> dict[str, tuple[int, int]]:
    """peer -> (sessions, items) charged on ``day``."""
    rows = store._query("SELECT peer, sessions, items FROM peer_usage WHERE day = ? ORDER BY peer", (day,))
    return {r[0]: (r[1], r[2]) for r in rows}


def _session(r: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=r["id"], role=r["role"], protocol=r["protocol"], peer=r["peer"],
        local_dataset=r["local_dataset"], peer_dataset=r["peer_dataset"], kinds=json.loads(r["kinds"]),
        mode=r["mode"], job_run_id=r["job_run_id"], status=r["status"], started_at=r["started_at"],
        finished_at=r["finished_at"], requester_set_size=r["requester_set_size"],
        matched_count=r["matched_count"], false_positive_rate=r["false_positive_rate"], error=r["error"],
    )


def session_stats(store: Store) -> list[tuple[str, str, str, str, int, float]]:
    """(protocol, peer, role, status, sessions, seconds of the finished ones) over every
    recorded session: what the operator's metrics show as sessions by outcome."""
    rows = store._query(
        "SELECT protocol, peer, role, status, count(*), "
        "coalesce(sum(CASE WHEN finished_at IS NOT NULL THEN finished_at - started_at END), 0.0) "
        "FROM sessions GROUP BY protocol, peer, role, status ORDER BY protocol, peer, role, status"
    )
    return [(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]
