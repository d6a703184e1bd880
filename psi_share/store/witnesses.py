"""What this node holds as a witness: peers' signed audit heads and the keys
their certificates bound (see :mod:`psi_share.audit.witness`).

Rows are written only after the node checked them (the head's signature
under the peer's audit key, the key's binding by the peer's certificate from
the federation CA); the store only keeps them. A peer's key change keeps the
old key's row: both keys stay on record, which is the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Store

#: Schema step (appended to store.db._MIGRATIONS).
SCHEMA = """
-- Audit keys of peers, each bound by the peer's certificate (kept as DER
-- with the binding signature, so the binding can be shown to anyone).
CREATE TABLE witness_keys (
    peer         TEXT NOT NULL,
    audit_key    TEXT NOT NULL,
    certificate  BLOB NOT NULL,
    binding      BLOB NOT NULL,
    serial       TEXT NOT NULL,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    PRIMARY KEY (peer, audit_key)
);
-- Signed heads of peers' audit logs (checkpoints), as received.
CREATE TABLE witnessed_heads (
    peer         TEXT NOT NULL,
    audit_key    TEXT NOT NULL,
    count        INTEGER NOT NULL,
    head         TEXT NOT NULL,
    time_ns      INTEGER NOT NULL,
    signature    TEXT NOT NULL,
    received_at  REAL NOT NULL,
    PRIMARY KEY (peer, audit_key, count, head),
    FOREIGN KEY (peer, audit_key) REFERENCES witness_keys(peer, audit_key)
);
"""

#: Heads kept per peer and audit key; beyond it the lowest counts go (the
#: latest head alone covers its whole prefix: the rest catch forks).
MAX_HEADS_PER_KEY = 10_000


@dataclass(frozen=True)
class PeerAuditKey:
    peer: str
    key: str
    certificate: bytes
    binding: bytes
    serial: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class HeldHead:
    peer: str
    key: str
    count: int
    head: str
    time_ns: int
    signature: str
    received_at: float


def record_peer_key(store: Store, peer: str, key: str, certificate: bytes, binding: bytes, serial: str,
                    *, now: float) -> str | None:
    """Keep ``peer``'s checked audit key; return the key it used before when this one is new to it."""
    with store.transaction() as db:
        latest = db.execute(
            "SELECT audit_key FROM witness_keys WHERE peer = ? ORDER BY last_seen DESC LIMIT 1", (peer,)
        ).fetchone()
        db.execute(
            "INSERT INTO witness_keys(peer, audit_key, certificate, binding, serial, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(peer, audit_key) DO UPDATE SET "
            "certificate = excluded.certificate, binding = excluded.binding, serial = excluded.serial, "
            "last_seen = excluded.last_seen",
            (peer, key, certificate, binding, serial, now, now),
        )
    return latest["audit_key"] if latest is not None and latest["audit_key"] != key else None


def add_head(store: Store, peer: str, key: str, count: int, head: str, time_ns: int, signature: str,
             *, now: float) -> list[str]:
    """Keep a checked head of ``peer``'s log; return the other heads it signed for the same
    count (a fork: two logs under one key), which the caller reports."""
    with store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO witnessed_heads(peer, audit_key, count, head, time_ns, signature, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (peer, key, count, head, time_ns, signature, now),
        )
        forks = db.execute(
            "SELECT head FROM witnessed_heads WHERE peer = ? AND audit_key = ? AND count = ? AND head != ?",
            (peer, key, count, head),
        ).fetchall()
        db.execute(
            "DELETE FROM witnessed_heads WHERE peer = ? AND audit_key = ? AND count < ("
            "SELECT count FROM witnessed_heads WHERE peer = ? AND audit_key = ? ORDER BY count DESC "
            "LIMIT 1 OFFSET ?)", (peer, key, peer, key, MAX_HEADS_PER_KEY - 1),
        )
    return [r["head"] for r in forks]


def held_heads(store: Store, peer: str, *, per_key: int) -> list[HeldHead]:
    """The latest ``per_key`` heads of ``peer``'s log under each of its audit keys, by key then count."""
    rows = store._query(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY audit_key ORDER BY count DESC, head) AS n "
        "FROM witnessed_heads WHERE peer = ?) WHERE n <= ? ORDER BY audit_key, count, head", (peer, per_key),
    )
    return [HeldHead(r["peer"], r["audit_key"], r["count"], r["head"], r["time_ns"], r["signature"],
                     r["received_at"]) for r in rows]


def peer_keys(store: Store, peer: str | None = None) -> list[PeerAuditKey]:
    """Audit keys peers' certificates bound, oldest first (one peer's, or every peer's)."""
    where, args = ("WHERE peer = ?", (peer,)) if peer is not None else ("", ())
    rows = store._query(f"SELECT * FROM witness_keys {where} ORDER BY peer, first_seen", args)
    return [PeerAuditKey(r["peer"], r["audit_key"], bytes(r["certificate"]), bytes(r["binding"]), r["serial"],
                         r["first_seen"], r["last_seen"]) for r in rows]


@dataclass(frozen=True)
class HeldSummary:
    peer: str
    key: str
    heads: int
    latest_count: int
    latest_head: str
    latest_received_at: float
    forks: int  # counts for which the peer signed two different heads under this key


def held_summary(store: Store) -> list[HeldSummary]:
    """Per peer and audit key: how many heads we hold, the latest, and forks."""
    rows = store._query(
        "SELECT h.peer, h.audit_key, COUNT(*) AS heads, "
        "  (SELECT COUNT(*) FROM (SELECT count FROM witnessed_heads f WHERE f.peer = h.peer AND "
        "   f.audit_key = h.audit_key GROUP BY count HAVING COUNT(*) > 1)) AS forks, "
        "  MAX(h.count) AS latest_count FROM witnessed_heads h GROUP BY h.peer, h.audit_key ORDER BY h.peer"
    )
    out = []
    for r in rows:
        latest = store._query(
            "SELECT head, received_at FROM witnessed_heads WHERE peer = ? AND audit_key = ? AND count = ? "
            "ORDER BY received_at DESC LIMIT 1", (r["peer"], r["audit_key"], r["latest_count"]),
        )[0]
        out.append(HeldSummary(r["peer"], r["audit_key"], r["heads"], r["latest_count"], latest["head"],
                               latest["received_at"], r["forks"]))
    return out
