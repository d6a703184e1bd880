"""Turning stored identifiers into the distinct items a protocol matches on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ...errors import ImportFileError, StoreError
from ...identifiers import domain_separated_item
from ...store.db import IdentifierRow
from ...store.rows import ParquetPart


@dataclass(frozen=True)
class ItemSet:
    """Distinct domain-separated items, and which (actor, kind) each came from.

    Several actors can share one identifier (two accounts paying with one
    card): the item is sent once and a match counts for every owner.
    """

    items: tuple[str, ...]
    owners: tuple[tuple[tuple[str, str], ...], ...]  # per item: (actor_id, kind) pairs

    def __len__(self) -> int:
        return len(self.items)


def build_item_set(rows: Iterable[IdentifierRow]) -> ItemSet:
    owners: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        item = domain_separated_item(row.kind, row.canonical, row.version)
        owners.setdefault(item, []).append((row.actor_id, row.kind))
    ordered = sorted(owners)
    return ItemSet(tuple(ordered), tuple(tuple(owners[i]) for i in ordered))


def stream_items(batches: Iterable[list[IdentifierRow]]) -> Iterator[list[str]]:
    """The items of each batch of rows, distinct within the batch and sorted.

    Items repeated across batches (one identifier held by several actors
    whose rows fall in different batches) are left in: whoever consumes the
    stream collapses them after blinding (:meth:`OpenMinedEngine.stream_buckets
    <psi_share.crypto.openmined.OpenMinedEngine.stream_buckets>`), so that no
    set of every item is ever built here.
    """
    for batch in batches:
        yield sorted({domain_separated_item(row.kind, row.canonical, row.version) for row in batch})


def part_items(part: ParquetPart) -> list[str]:
    """The distinct items of one slice of a Parquet dataset, sorted: run
    where the slice is read (a Dask worker, which must reach the source's
    path). Errors name the dataset and the file, never a value."""
    try:
        return sorted({item for chunk in stream_items(part.batches()) for item in chunk})
    except (ImportFileError, StoreError) as exc:
        raise StoreError(
            f"dataset {part.record.dataset!r}: a Dask worker could not read {part.file.relative} of its Parquet "
            f"source ({exc}); the workers must reach {part.record.uri}, or set [engine] workers_read_sources = false "
            "to read it through the node"
        ) from None
