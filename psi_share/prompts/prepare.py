"""From prompt records to the band items each actor brings to a session.

Steps, in this order, all local:

1. **Band** every prompt (:class:`.signature.SignatureEngine`). A prompt with
   no word after normalisation (only punctuation, only whitespace) has no
   band and is counted as *without words*.
2. **Exclude** benign prompts (:class:`.exclusions.ExclusionIndex`): a prompt
   that is mostly an excluded template is removed whole.
3. **Deduplicate per actor with the same LSH**: an actor's prompts are taken
   in file order; a prompt that shares at least ``min_bands`` band items
   with an earlier kept prompt of the same actor (the parameter set's
   near-duplicate rule, :mod:`.params`) joins that prompt's *cluster* (the
   earliest such one) and adds no item
   (a campaign account sending one template ten thousand times contributes
   it once). Only the cluster's first prompt (its *representative*) brings
   items, so fresh fillings cannot grow an actor's items one band at a time.
4. **Cap items per actor**: an actor keeps at most ``max_items_per_actor //
   bands`` clusters, its largest (most prompts; the earlier one on a tie), so
   a noisy actor cannot flood a session; the rest are dropped and counted.

The items of all actors form the dataset's set for PSI; an item sent by
several actors is one element (:meth:`PreparedPrompts.actors_by_item`).

Who learns what: nothing here leaves the node. A peer later learns about
these items only what PSI reveals (see :mod:`psi_share.prompts`); the cap
bounds how many items one actor can put into a session, and so how far one
actor's prompts can be probed in one session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..identifiers import parse_item
from .exclusions import ExclusionIndex
from .records import PromptRecord
from .signature import SignatureEngine

__all__ = ["DEFAULT_MAX_ITEMS_PER_ACTOR", "Cluster", "PreparationReport", "PreparedPrompts", "prepare_prompts"]

# Ten templates of 48 band items (the default parameter set): an actor brings at
# most its ten largest clusters to a session.
DEFAULT_MAX_ITEMS_PER_ACTOR = 480


@dataclass
class Cluster:
    """Prompts of one actor that the LSH puts together; the first one represents them."""

    line: int  # line of the representative prompt in its file
    items: tuple[str, ...]
    prompts: int = 1
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None

    @property
    def canonicals(self) -> tuple[str, ...]:
        """The canonical texts ``b<i>/<hex>`` of the items (what an identifier row stores)."""
        return tuple(parse_item(item)[2] for item in self.items)

    def add(self, seen_at: dt.datetime | None) -> None:
        self.prompts += 1
        if seen_at is not None:
            self.first_seen = seen_at if self.first_seen is None else min(self.first_seen, seen_at)
            self.last_seen = seen_at if self.last_seen is None else max(self.last_seen, seen_at)


@dataclass
class PreparationReport:
    """What preparation did, in counts (safe to print and log: no text, no item)."""

    prompts: int = 0
    actors: int = 0
    without_words: int = 0
    excluded: dict[str, int] = field(default_factory=dict)  # rule -> prompts removed
    excluded_actors: dict[str, int] = field(default_factory=dict)  # rule -> actors that lost a prompt to it
    actors_emptied: int = 0  # actors left with no prompt by the exclusions
    near_duplicates: int = 0  # prompts folded into an earlier cluster of their actor
    clusters: int = 0  # clusters kept (representatives bringing items)
    capped_actors: int = 0
    clusters_dropped_by_cap: int = 0
    prompts_dropped_by_cap: int = 0
    items: int = 0  # items over all actors (an item of two actors counts twice)
    distinct_items: int = 0  # the size of the set that goes to PSI

    @property
    def excluded_prompts(self) -> int:
        return sum(self.excluded.values())

    def lines(self) -> list[str]:
        """The report as text lines for people."""
        out = [
            f"{self.prompts} prompts from {self.actors} actors",
            f"  without any word (not matchable): {self.without_words}",
            f"  removed as benign: {self.excluded_prompts}"
            + (f" ({self.actors_emptied} actors left without prompts)" if self.actors_emptied else ""),
        ]
        out += [f"    {rule}: {n} prompts, {self.excluded_actors[rule]} actors" for rule, n in sorted(self.excluded.items())]
        out += [
            f"  near-duplicates folded into an earlier prompt of the same actor: {self.near_duplicates}",
            f"  clusters kept: {self.clusters}",
            f"  actors over the cap: {self.capped_actors} "
            f"({self.clusters_dropped_by_cap} clusters, {self.prompts_dropped_by_cap} prompts dropped)",
            f"  items: {self.items} ({self.distinct_items} distinct)",
        ]
        return out


@dataclass
class PreparedPrompts:
    """The clusters each actor kept, and the report."""

    clusters: dict[str, list[Cluster]]
    report: PreparationReport

    def items_by_actor(self) -> dict[str, frozenset[str]]:
        return {actor: frozenset(i for c in kept for i in c.items) for actor, kept in self.clusters.items()}

    def actors_by_item(self) -> dict[str, frozenset[str]]:
        """item -> the actors whose kept prompts carry it (what a PSI match maps back to)."""
        owners: dict[str, set[str]] = {}
        for actor, kept in self.clusters.items():
            for cluster in kept:
                for item in cluster.items:
                    owners.setdefault(item, set()).add(actor)
        return {item: frozenset(actors) for item, actors in owners.items()}


def _near_duplicate(own: dict[str, list[Cluster]], items: tuple[str, ...], min_bands: int) -> Cluster | None:
    """The earliest of an actor's clusters sharing at least ``min_bands`` of ``items``, or None."""
    shared: dict[int, int] = {}
    by_id: dict[int, Cluster] = {}
    for item in items:
        for cluster in own.get(item, ()):
            shared[id(cluster)] = shared.get(id(cluster), 0) + 1
            by_id[id(cluster)] = cluster
    near = [by_id[key] for key, count in shared.items() if count >= min_bands]
    return min(near, key=lambda c: c.line) if near else None


def prepare_prompts(
    records: Iterable[PromptRecord],
    engine: SignatureEngine,
    exclusions: ExclusionIndex | None = None,
    max_items_per_actor: int = DEFAULT_MAX_ITEMS_PER_ACTOR,
) -> PreparedPrompts:
    """Band, exclude, deduplicate and cap ``records`` (see the module docstring)."""
    bands = engine.params.bands
    if max_items_per_actor < bands:
        raise ValueError(f"max_items_per_actor must be at least the number of bands ({bands})")
    max_clusters = max_items_per_actor // bands
    report = PreparationReport()
    clusters: dict[str, list[Cluster]] = {}
    index: dict[str, dict[str, list[Cluster]]] = {}  # actor -> item of a representative -> its clusters
    seen_actors: set[str] = set()
    lost: dict[str, set[str]] = {}
    for record in records:
        report.prompts += 1
        seen_actors.add(record.actor_id)
        banded = engine.band(record.text)
        items = banded.items
        if not items:
            report.without_words += 1
            continue
        rule = exclusions.rule_for(banded.shingles) if exclusions is not None else None
        if rule is not None:
            report.excluded[rule] = report.excluded.get(rule, 0) + 1
            lost.setdefault(rule, set()).add(record.actor_id)
            continue
        own = index.setdefault(record.actor_id, {})
        cluster = _near_duplicate(own, items, engine.params.min_bands)
        if cluster is not None:
            cluster.add(record.seen_at)
            report.near_duplicates += 1
            continue
        cluster = Cluster(record.line, items, first_seen=record.seen_at, last_seen=record.seen_at)
        clusters.setdefault(record.actor_id, []).append(cluster)
        for item in items:
            own.setdefault(item, []).append(cluster)
    report.actors = len(seen_actors)
    report.excluded_actors = {rule: len(actors) for rule, actors in lost.items()}
    report.actors_emptied = len(set().union(*lost.values()) - set(clusters)) if lost else 0
    for actor, kept in clusters.items():
        if len(kept) > max_clusters:
            # Largest clusters first; sorted() is stable, so file order breaks ties.
            ranked = sorted(kept, key=lambda c: -c.prompts)
            dropped = ranked[max_clusters:]
            clusters[actor] = sorted(ranked[:max_clusters], key=lambda c: c.line)
            report.capped_actors += 1
            report.clusters_dropped_by_cap += len(dropped)
            report.prompts_dropped_by_cap += sum(c.prompts for c in dropped)
    report.clusters = sum(len(kept) for kept in clusters.values())
    report.items = sum(len(c.items) for kept in clusters.values() for c in kept)
    report.distinct_items = len({i for kept in clusters.values() for c in kept for i in c.items})
    return PreparedPrompts(clusters, report)
