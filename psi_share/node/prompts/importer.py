"""Importing a prompt file (JSONL) into a dataset, as band items of kind ``prompt``.

``psi-share data import DATASET FILE --prompts [--benign SAMPLE]``:

1. Every line is read (:mod:`psi_share.prompts.records`); a bad line is
   refused with its file, line and reason (never the text, the actor id or
   a value). Without ``--rejects`` one refused line means nothing is
   imported and every refused line is listed; with it the valid lines are
   imported and the refused ones written to the rejects file, exactly as
   for identifier files (:mod:`psi_share.store.rejects`).
2. Benign prompts are removed (:class:`~psi_share.prompts.ExclusionIndex`):
   the ``[prompts] stoplist`` files, and with ``--benign`` the templates
   that at least ``[prompts] benign_min_actors`` actors of that sample of
   the lab's own ordinary traffic send.
3. Each actor's prompts are deduplicated by the LSH and capped at
   ``[prompts] max_items_per_actor`` band items
   (:func:`~psi_share.prompts.prepare_prompts`).
4. Kept clusters become identifier rows: kind ``prompt``, canonical text
   ``b<i>/<hex>`` (one row per band), raw text a label of ours
   (:func:`.matches.format_raw`): the chain, the
   cluster, the representative's line and how many prompts it stands for.
   The text itself is not stored.

A *chain* is this lab's group of clusters (of any actors) that share at
least ``min_bands`` band items (the parameter set's near-duplicate rule, and
at least two): the same template filled differently, as far as the LSH can
tell. Its label is a hash of its smallest band item, local to this
node, so the same data gives the same labels; it never leaves the node.

``--replace`` replaces the dataset's prompt rows and keeps its rows of
other kinds; ``--append`` adds clusters. Who learns what: nothing here
leaves the node.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ImportFileError, NotFound, PsiShareError
from ...prompts import (
    Cluster,
    ExclusionIndex,
    PreparationReport,
    PromptRecord,
    SignatureEngine,
    load_stoplist,
    prepare_prompts,
    read_prompts_jsonl,
)
from ...prompts.records import read_lines
from ...prompts.records import _record as parse_record  # one line, FILE:LINE errors without content
from ...prompts.signature import KIND
from ...store import ImportMode, Reason, Store
from ...store.db import DatasetWrite, IdentifierRow, check_name
from .matches import ClusterLabel, format_raw
from ...store.rejects import Rejection, RejectsFile, RejectTally
from .config import PromptsConfig

__all__ = ["PromptImportSummary", "import_prompt_file", "label_clusters"]


@dataclass(frozen=True)
class PromptImportSummary:
    """What a prompt import read, removed, kept and wrote (counts only)."""

    dataset: str
    path: str
    lines: int  # prompt lines read, refused ones included
    report: PreparationReport
    chains: int
    stoplists: tuple[tuple[str, str], ...]  # (file, sha256)
    benign_common_shingles: int | None  # None without --benign
    written: DatasetWrite  # what the store did (added, removed, revision)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None

    def as_dict(self) -> dict[str, object]:
        r = self.report
        return {
            "dataset": self.dataset, "file": self.path, "lines": self.lines, "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason, "rejects_file": self.rejects_file,
            "prompts": r.prompts, "actors": r.actors, "without_words": r.without_words,
            "removed_as_benign": r.excluded_prompts, "removed_by_rule": dict(sorted(r.excluded.items())),
            "actors_by_rule": dict(sorted(r.excluded_actors.items())), "actors_emptied": r.actors_emptied,
            "near_duplicates_folded": r.near_duplicates, "clusters": r.clusters, "chains": self.chains,
            "capped_actors": r.capped_actors, "clusters_dropped_by_cap": r.clusters_dropped_by_cap,
            "prompts_dropped_by_cap": r.prompts_dropped_by_cap, "band_items": r.items,
            "distinct_band_items": r.distinct_items,
            "stoplists": [{"file": f, "sha256": d} for f, d in self.stoplists],
            "benign_common_shingles": self.benign_common_shingles, **self.written._asdict(),
        }


def _reason(problem: str) -> Reason:
    if problem.startswith(("invalid JSON", "expected a JSON object", "unknown field")):
        return Reason.MALFORMED_ROW
    if "actor_id" in problem:
        return Reason.ACTOR_ID
    return Reason.INVALID_VALUE


def read_prompt_lines(path: Path, tally: RejectTally) -> tuple[list[PromptRecord], int]:
    """Every valid prompt of ``path`` and the number of prompt lines; refused lines go to ``tally``."""
    name = str(path)
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ImportFileError(name, 0, "prompt files are JSON Lines: use a .jsonl or .ndjson file")
    records, read = [], 0
    for number, line in read_lines(path)[0]:
        if not line.strip():
            continue
        read += 1
        try:
            records.append(parse_record(name, number, line))
        except ImportFileError as exc:
            reason = _reason(exc.reason)
            tally.add(Rejection(number, reason, exc.reason, KIND if reason is Reason.INVALID_VALUE else ""))
    if read == 0:
        raise ImportFileError(name, 1, "file holds no prompts")
    return records, read


_CROWD = 64


def label_clusters(clusters: dict[str, list[Cluster]], min_bands: int = 2) -> dict[int, str]:
    """id(cluster) -> chain label: clusters sharing at least ``max(2, min_bands)`` band items are one chain."""
    needed = max(2, min_bands)
    flat = [c for kept in clusters.values() for c in kept]
    parent = list(range(len(flat)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    holders: dict[str, list[int]] = {}
    for n, c in enumerate(flat):
        for item in c.items:
            holders.setdefault(item, []).append(n)
    shared: dict[tuple[int, int], int] = {}

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    for owners in holders.values():
        if len(owners) > _CROWD:
            # A band item this many clusters share is no coincidence (and
            # counting its pairs would be quadratic): one chain.
            for other in owners[1:]:
                union(owners[0], other)
            continue
        for i, a in enumerate(owners):
            for b in owners[i + 1:]:
                key = (a, b)
                shared[key] = shared.get(key, 0) + 1
                if shared[key] == needed:  # one shared band is chance; the near-duplicate rule is the same template
                    union(a, b)
    smallest: dict[int, str] = {}
    for n, c in enumerate(flat):
        root = find(n)
        low = min(c.items)
        if root not in smallest or low < smallest[root]:
            smallest[root] = low
    return {id(c): _label("chain", smallest[find(n)]) for n, c in enumerate(flat)}


def _label(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=6, person=b'psi-prompt-label').hexdigest()}"


def import_prompt_file(
    store: Store, dataset: str, path: Path, *, config: PromptsConfig, home: Path, mode: ImportMode | None,
    now: float, rejects: Path | None = None, benign: Path | None = None,
) -> PromptImportSummary:
    """Import prompt file ``path`` into ``dataset`` (see the module docstring)."""
    check_name("dataset", dataset)
    params = config.params  # ConfigError first when prompts are off
    engine = SignatureEngine(params)
    exclusions = ExclusionIndex(params.shingle_words, config.containment)
    stoplists = [load_stoplist(p) for p in config.stoplist_paths(home)]
    for stoplist in stoplists:
        exclusions.add_stoplist(stoplist)
    common = exclusions.add_frequent(read_prompts_jsonl(benign), config.benign_min_actors) if benign else None
    with RejectsFile(rejects, path) if rejects is not None else nullcontext() as out:
        tally = RejectTally(path, out)
        records, read = read_prompt_lines(path, tally)
        if tally.total and (out is None or not records):
            raise tally.error(read)
        prepared = prepare_prompts(records, engine, exclusions, config.max_items_per_actor)
        chains = label_clusters(prepared.clusters, params.min_bands)
        rows = [
            IdentifierRow(actor, KIND, params.normalisation_version, canonical,
                          format_raw(ClusterLabel(chains[id(c)], _label("cluster", min(c.items)), c.line, c.prompts,
                                                  params.min_bands)))
            for actor, kept in prepared.clusters.items() for c in kept for canonical in c.canonicals
        ]
        try:
            existing = store.dataset(dataset)
        except NotFound:
            existing = None
        if existing is not None and existing.actors and mode is None:
            raise PsiShareError(f"dataset {dataset!r} already holds {existing.actors} actors: say --replace or --append")
        replace = mode is not ImportMode.APPEND
        if replace and existing is not None:
            # --replace replaces the prompt rows only: the dataset's other kinds stay.
            rows += store.identifiers(dataset, [k for k in existing.kinds if k != KIND])
        written = store.write_dataset(dataset, rows, replace=replace, now=now,
                                      before_commit=out.publish if out is not None else None)
    return PromptImportSummary(
        dataset=dataset, path=str(path), lines=read, report=prepared.report, chains=len(set(chains.values())),
        stoplists=tuple((s.path, s.sha256) for s in stoplists), benign_common_shingles=common,
        written=written, rejected=tally.total,
        rejected_by_reason=dict(tally.by_reason), rejects_file=None if rejects is None else str(rejects),
    )
