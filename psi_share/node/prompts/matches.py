"""What a reveal session over prompt band items tells this lab, per template and per chain.

The PSI requester learns which of its own band items the responder holds.
Mapped back through the rows of the prompt import, that is, per kept
cluster of an actor (a *template* as this lab received it): how many of its
``bands`` band items matched. A cluster counts as found (stored, shown by
``results show``, linking its actor and chain) only when at least
``min_bands`` of them matched, the parameter set's near-duplicate rule
(:mod:`psi_share.prompts.params`); fewer is what near-misses produce by
chance, and is dropped. Two prompts of Jaccard similarity ``s`` agree
on a band with probability ``s ** rows``, so ``k`` of ``b`` bands matching
estimates ``s`` as ``(k / b) ** (1 / rows)`` (:func:`implied_similarity`):
the requester learns roughly how close the peer's nearest prompt is.

A *chain* groups this lab's clusters that share band items (see
:mod:`.importer`). A chain is *seen at* a peer when any of its clusters
matched in a session with that peer; an actor is linked through a chain
when one of its own clusters in that chain matched. "Accounts at my lab
whose prompts share a chain seen at >= 2 other labs" is
:func:`chain_actors` with ``min_peers = 2``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...identifiers import domain_separated_item
from ...prompts.signature import KIND
from ...store import Store
from ...store.db import IdentifierRow

__all__ = [
    "ChainSighting", "ClusterLabel", "PromptMatchRecord", "chain_actors", "chain_sightings", "format_raw",
    "implied_similarity", "match_records", "parse_raw", "prompt_matches", "record_prompt_matches",
]

# -- the stored rows ----------------------------------------------------------------
# A prompt dataset stores each kept cluster of an actor as ``bands`` identifier
# rows of kind ``prompt``; their ``raw`` text is a label of ours, never the
# prompt. The per-template counts of a session live in the store's
# ``prompt_matches`` table (schema step in store/db.py), written in the
# transaction that finishes the session, so a failed session stores none.

_RAW = re.compile(r"(chain-[0-9a-f]{12}) (cluster-[0-9a-f]{12}) line (\d+) prompts (\d+)(?: min (\d+))?")


@dataclass(frozen=True)
class ClusterLabel:
    """A stored prompt cluster's label (the ``raw`` text of its rows)."""

    chain: str
    cluster: str
    line: int  # the representative prompt's line in its file
    prompts: int  # prompts of the actor folded into it
    # The parameter set's near-duplicate rule when it was imported: a session finds the
    # cluster only when at least this many of its band items match (rows written before
    # the rule existed have no "min" and mean 1).
    min_bands: int = 1


def format_raw(label: ClusterLabel) -> str:
    return f"{label.chain} {label.cluster} line {label.line} prompts {label.prompts} min {label.min_bands}"


def parse_raw(raw: str) -> ClusterLabel | None:
    """The label of a prompt row (None for a row not written by the prompt import)."""
    m = _RAW.fullmatch(raw)
    return ClusterLabel(m[1], m[2], int(m[3]), int(m[4]), int(m[5] or 1)) if m else None


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
    with store.transaction() as db:  # one consistent read
        rows = db.execute(
            "SELECT p.session_id, s.peer, p.actor_id, p.chain, p.cluster, p.line, p.bands_matched, p.bands "
            f"FROM prompt_matches p JOIN sessions s ON s.id = p.session_id WHERE p.session_id IN ({marks}) "
            "ORDER BY p.chain, p.actor_id, p.line, s.peer",
            list(session_ids),
        ).fetchall()
    return [PromptMatchRecord(*r) for r in rows]


# -- what they tell ------------------------------------------------------------------


def implied_similarity(bands_matched: int, bands: int, rows: int) -> float:
    """The Jaccard similarity that ``bands_matched`` of ``bands`` matching bands imply."""
    return (bands_matched / bands) ** (1.0 / rows) if bands and rows else 0.0


def match_records(session_id: str, peer: str, rows: Iterable[IdentifierRow],
                  matched_items: set[str]) -> list[PromptMatchRecord]:
    """Per cluster with at least its ``min_bands`` band items matched (the near-duplicate
    rule it was imported under): the counts to store. A cluster with fewer matched
    items is not found at the peer, and nothing of it is stored or shown."""
    total: dict[tuple[str, str], int] = {}
    hit: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.kind != KIND:
            continue
        key = (row.actor_id, row.raw)
        total[key] = total.get(key, 0) + 1
        if domain_separated_item(row.kind, row.canonical, row.version) in matched_items:
            hit[key] = hit.get(key, 0) + 1
    out = []
    for (actor, raw), k in sorted(hit.items()):
        label = parse_raw(raw)
        if label is not None and k >= label.min_bands:
            out.append(PromptMatchRecord(session_id, peer, actor, label.chain, label.cluster, label.line, k,
                                         total[(actor, raw)]))
    return out


@dataclass(frozen=True)
class ChainSighting:
    """One of this lab's chains in a job run: the peers it was seen at and our actors linked by it."""

    chain: str
    peers: tuple[str, ...]
    actors: tuple[str, ...]  # our actors whose own clusters of this chain matched
    best_bands: int  # most bands one cluster of the chain matched at one peer
    bands: int

    def similarity(self, rows: int) -> float:
        return implied_similarity(self.best_bands, self.bands, rows)


def chain_sightings(store: Store, session_ids: list[str]) -> dict[str, ChainSighting]:
    """chain -> its sighting over the given (completed requester) sessions."""
    peers: dict[str, set[str]] = {}
    actors: dict[str, set[str]] = {}
    best: dict[str, tuple[int, int]] = {}
    for m in prompt_matches(store, session_ids):
        peers.setdefault(m.chain, set()).add(m.peer)
        actors.setdefault(m.chain, set()).add(m.actor_id)
        if m.bands_matched > best.get(m.chain, (0, 0))[0]:
            best[m.chain] = (m.bands_matched, m.bands)
    return {c: ChainSighting(c, tuple(sorted(peers[c])), tuple(sorted(actors[c])), *best[c]) for c in sorted(peers)}


def chain_actors(sightings: dict[str, ChainSighting], min_peers: int) -> dict[str, tuple[ChainSighting, ...]]:
    """actor -> the chains seen at ``min_peers`` or more peers that link it."""
    out: dict[str, list[ChainSighting]] = {}
    for s in sightings.values():
        if len(s.peers) >= min_peers:
            for actor in s.actors:
                out.setdefault(actor, []).append(s)
    return {a: tuple(c) for a, c in sorted(out.items())}
