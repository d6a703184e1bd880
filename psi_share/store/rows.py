"""Reading a dataset's identifier rows: the one seam every consumer goes through.

Everything that uses a dataset's items (the PSI responder's prepared sets
and the requester's set, intersection-sum's blinded sets, job exports)
reads them through :meth:`Store.rows <psi_share.store.db.Store.rows>`,
which returns a :class:`DatasetRows`:

* :class:`SqliteRows`: an imported dataset, streamed from SQLite with
  ``fetchmany`` on a connection of its own, so that one read sees one
  snapshot (WAL) without holding the store's lock between batches;
* :class:`ParquetRows`: a registered dataset, read from its source a record
  batch at a time and canonicalized as it is read, with the rows the
  registration left out skipped.

Both yield lists of at most ``batch_rows`` :class:`IdentifierRow`; neither
holds more than one batch (a Parquet read also holds the skipped rows'
numbers). Row order is the source's: consumers sort what they build.

A Parquet dataset can also be cut into :class:`ParquetPart` slices of whole
row groups (:meth:`ParquetRows.parts`), each read on its own wherever the
source opens: the Dask engine's workers read and canonicalize them, so that
no row passes through the node (``node/psi/setups.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ImportFileError, StoreError
from ..identifiers import CanonicalizationContext
from .db import IdentifierRow
from .importer import check_candidate
from .parquet import BATCH_ROWS, ParquetSource, SourceFile, SourceRow
from .rejects import Rejection
from .sources import ParquetRecord


class DatasetRows(Protocol):
    """A dataset's identifier rows, streamed."""

    def batches(self, kinds: Iterable[str], *, batch_rows: int = BATCH_ROWS) -> Iterator[list[IdentifierRow]]:
        """The rows whose kind is in ``kinds``, in lists of at most
        ``batch_rows`` (none empty). Raises StoreError when the data changed
        under the dataset's registration (Parquet)."""
        ...


class SqliteRows:
    """An imported dataset's rows, from the store's file."""

    def __init__(self, path: Path, dataset: str) -> None:
        self._path = path
        self._dataset = dataset

    def batches(self, kinds: Iterable[str], *, batch_rows: int = BATCH_ROWS) -> Iterator[list[IdentifierRow]]:
        kinds = sorted(set(kinds))
        marks = ",".join("?" * len(kinds))
        # Read-only and apart from the store's connection: the whole read is
        # one statement, hence one snapshot, and writers are never blocked.
        db = sqlite3.connect(self._path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        try:
            cursor = db.execute(
                f"SELECT actor_id, kind, version, canonical, raw, amount FROM identifiers "
                f"WHERE dataset = ? AND kind IN ({marks}) ORDER BY actor_id, kind, canonical",
                (self._dataset, *kinds),
            )
            while batch := cursor.fetchmany(batch_rows):
                yield [IdentifierRow(*r) for r in batch]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read dataset {self._dataset!r}: {exc}") from None
        finally:
            db.close()


class ParquetRows:
    """A registered dataset's rows, read from its Parquet source."""

    def __init__(self, record: ParquetRecord, skips: dict[str, set[int]]) -> None:
        self._record = record
        self._skips = skips
        self._ctx = CanonicalizationContext(record.phone_region)

    def batches(self, kinds: Iterable[str], *, batch_rows: int = BATCH_ROWS) -> Iterator[list[IdentifierRow]]:
        wanted = set(kinds) & set(self._record.kinds)
        if not wanted:
            return
        source, files = self.check_unchanged()
        pieces = (rows for f in files for rows in source.slice_rows(f, self._record.mapping, batch_rows=batch_rows))
        yield from _accepted(self._record, pieces, self._skips, wanted, self._ctx, batch_rows)
        self.check_unchanged()  # a file rewritten while it was read

    def parts(self, kinds: Iterable[str], *, part_rows: int) -> list[ParquetPart]:
        """The rows of ``kinds`` as slices of whole row groups of about
        ``part_rows`` rows or more each (a row group is never split), to be
        read wherever the source's path opens (a Dask worker). The source is
        checked against its registration first; the caller checks it again
        (:meth:`check_unchanged`) once every part was read."""
        wanted = frozenset(kinds) & frozenset(self._record.kinds)
        if not wanted:
            return []
        source, files = self.check_unchanged()
        parts: list[ParquetPart] = []
        for f in files:
            skips = self._skips.get(f.relative, set())
            first = line = start = 0
            sizes = source.row_groups(f)
            for index, rows in enumerate(sizes):
                line += rows
                if line - first >= part_rows or index == len(sizes) - 1:
                    lines = frozenset(n for n in skips if first < n <= line)
                    parts.append(ParquetPart(self._record, f, (start, index + 1), first, lines, wanted))
                    first, start = line, index + 1
        return parts

    def check_unchanged(self) -> tuple[ParquetSource, list[SourceFile]]:
        """The opened source and its files, if they are still what was registered."""
        record = self._record
        stale = record.stale_kinds()
        if stale:
            raise StoreError(
                f"dataset {record.dataset!r}: the canonicalization of {', '.join(stale)} changed since it was "
                f"registered; register it again ('psi-share data register {record.dataset} ...')"
            )
        try:
            source = ParquetSource(record.uri)
            files = source.files()
            fingerprint = source.fingerprint(files)
        except ImportFileError as exc:
            raise StoreError(f"dataset {record.dataset!r}: {exc}") from None
        if fingerprint != record.fingerprint:
            raise _changed(record, "its files changed")
        return source, files



@dataclass(frozen=True)
class ParquetPart:
    """A slice of a registered Parquet dataset: row groups ``groups`` of one
    file, whose rows are numbered from ``first_line + 1``, with the rows the
    registration left out. Plain data, so that it can be shipped to a Dask
    worker and read there (:meth:`batches`), never through the node."""

    record: ParquetRecord
    file: SourceFile
    groups: tuple[int, int]
    first_line: int
    skips: frozenset[int]
    kinds: frozenset[str]

    def batches(self, *, batch_rows: int = BATCH_ROWS) -> Iterator[list[IdentifierRow]]:
        """The slice's accepted rows of its kinds, canonicalized as read."""
        source = ParquetSource(self.record.uri)
        pieces = source.slice_rows(self.file, self.record.mapping, self.groups, self.first_line, batch_rows=batch_rows)
        ctx = CanonicalizationContext(self.record.phone_region)
        yield from _accepted(self.record, pieces, {self.file.relative: self.skips}, self.kinds, ctx, batch_rows)


def _accepted(
    record: ParquetRecord, pieces: Iterable[list[SourceRow]], skips: Mapping[str, AbstractSet[int]],
    wanted: AbstractSet[str], ctx: CanonicalizationContext, batch_rows: int,
) -> Iterator[list[IdentifierRow]]:
    """The rows of ``pieces`` a registration accepted (not in ``skips``), of
    the ``wanted`` kinds, checked and canonicalized, in lists of at most
    ``batch_rows``. A row the registration accepted and that is refused now
    means the source changed under it."""
    out: list[IdentifierRow] = []
    for source_rows in pieces:
        for row in source_rows:
            entry = row.entry
            if entry.line in skips.get(row.file.relative, ()):
                continue
            if isinstance(entry, Rejection):
                raise _changed(record, "a row it accepted is refused now")
            if entry.kind not in wanted:
                continue  # before canonicalizing: the costly part
            checked = check_candidate(entry, ctx)
            if isinstance(checked, Rejection):
                raise _changed(record, "a row it accepted is refused now")
            out.append(checked)
            if len(out) >= batch_rows:
                yield out
                out = []
    if out:
        yield out


def _changed(record: ParquetRecord, what: str) -> StoreError:
    name = record.dataset
    return StoreError(
        f"dataset {name!r}: its Parquet source {record.uri} no longer matches its registration "
        f"({what}); register it again ('psi-share data register {name} ...') to give it a new revision"
    )
