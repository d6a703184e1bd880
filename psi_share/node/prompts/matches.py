"""What a reveal session over prompt band items tells this lab, per template and per chain.

The PSI requester learns which of its own band items the responder holds.
Mapped back through the rows of the prompt import, that is, per kept
cluster of an actor (a *template* as this lab received it): how many of its
``bands`` band items matched. Two prompts of Jaccard similarity ``s`` agree
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

from collections.abc import Iterable
from dataclasses import dataclass

from ...identifiers import domain_separated_item
from ...prompts.signature import KIND
from ...store import Store
from ...store.db import IdentifierRow
from ...store.prompt_matches import PromptMatchRecord, parse_raw, prompt_matches

__all__ = ["ChainSighting", "chain_actors", "chain_sightings", "implied_similarity", "match_records"]


def implied_similarity(bands_matched: int, bands: int, rows: int) -> float:
    """The Jaccard similarity that ``bands_matched`` of ``bands`` matching bands imply."""
    return (bands_matched / bands) ** (1.0 / rows) if bands and rows else 0.0


def match_records(session_id: str, peer: str, rows: Iterable[IdentifierRow],
                  matched_items: set[str]) -> list[PromptMatchRecord]:
    """Per cluster with at least one matched band item: the counts to store."""
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
        if label is not None:
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
