"""What a PSI reveal session over prompt band items learned, per prompt template.

A prompt dataset stores each kept prompt cluster of an actor as ``bands``
identifier rows of kind ``prompt`` (one per band item); their ``raw`` text
is a label of ours, never the prompt: ``chain-<hex> cluster-<hex> line <n>
prompts <count>`` (:func:`format_raw`). A requester that matched prompt items
stores, per cluster with at least one matching band, how many of its bands
matched: ``bands_matched / bands`` estimates ``similarity ** rows``.

The table is written in the transaction that finishes the session, so a
failed session stores none of it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # db.py imports this module
    from .db import Store

SCHEMA = """
CREATE TABLE prompt_matches (
    session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    actor_id       TEXT NOT NULL,
    chain          TEXT NOT NULL,
    cluster        TEXT NOT NULL,
    line           INTEGER NOT NULL,
    bands_matched  INTEGER NOT NULL CHECK (bands_matched > 0),
    bands          INTEGER NOT NULL CHECK (bands >= bands_matched),
    PRIMARY KEY (session_id, actor_id, cluster)
);
"""

_RAW = re.compile(r"(chain-[0-9a-f]{12}) (cluster-[0-9a-f]{12}) line (\d+) prompts (\d+)")


@dataclass(frozen=True)
class ClusterLabel:
    """A stored prompt cluster's label (the ``raw`` text of its rows)."""

    chain: str
    cluster: str
    line: int  # the representative prompt's line in its file
    prompts: int  # prompts of the actor folded into it


def format_raw(label: ClusterLabel) -> str:
    return f"{label.chain} {label.cluster} line {label.line} prompts {label.prompts}"


def parse_raw(raw: str) -> ClusterLabel | None:
    """The label of a prompt row (None for a row not written by the prompt import)."""
    m = _RAW.fullmatch(raw)
    return ClusterLabel(m[1], m[2], int(m[3]), int(m[4])) if m else None


@dataclass(frozen=True)
class PromptMatchRecord:
    session_id: str
    peer: str
    actor_id: str
    chain: str
    cluster: str
    line: int
    bands_matched: int
    bands: int


def record_prompt_matches(db: sqlite3.Connection, session_id: str, rows: Iterable[PromptMatchRecord]) -> None:
    """Store a session's per-cluster matches (inside the caller's transaction)."""
    db.executemany(
        "INSERT OR REPLACE INTO prompt_matches(session_id, actor_id, chain, cluster, line, bands_matched, bands) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((session_id, r.actor_id, r.chain, r.cluster, r.line, r.bands_matched, r.bands) for r in rows),
    )


def prompt_matches(store: Store, session_ids: Sequence[str]) -> list[PromptMatchRecord]:
    """Per-cluster matches of the given sessions, with each session's peer."""
    if not session_ids:
        return []
    marks = ",".join("?" * len(session_ids))
    rows = store._query(
        "SELECT p.session_id, s.peer, p.actor_id, p.chain, p.cluster, p.line, p.bands_matched, p.bands "
        f"FROM prompt_matches p JOIN sessions s ON s.id = p.session_id WHERE p.session_id IN ({marks}) "
        "ORDER BY p.chain, p.actor_id, p.line, s.peer",
        list(session_ids),
    )
    return [PromptMatchRecord(*r) for r in rows]
