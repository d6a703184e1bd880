"""Registering a Parquet source as a dataset: checked in full, copied never.

Registration reads the whole source once, a record batch at a time, and
canonicalizes every row with the same rules as an import
(:func:`~psi_share.store.importer.check_candidate`). Refused rows are
handled as for a CSV file: without ``--rejects`` one refused row means
nothing is registered and the error lists them all (file below the source
root and row number, reason, never the value); with it, the valid rows are
registered and the refused ones go to the rejects file. Rows that repeat an
earlier row of the same actor (same kind and canonical form) are left out
as an import collapses them; with a different amount they are refused.

What grows with the source: to find repeats and count actors without
keeping rows, each row leaves 16-byte keyed digests of (actor, kind,
canonical form) and of the actor, its amount, kind code, file index and row
number: 53 bytes a row (1M rows: 53 MB; 100M: 5.3 GB), in numpy arrays rather
than Python objects; sorting them at the end takes a few times that for a
moment. The rows themselves are never kept.
The digests use a key drawn for this registration (BLAKE2b), so nobody can
make two rows collide on purpose; by chance, at 100M rows, about 1 in 10^22.

The store keeps the metadata (store/sources.py) and the numbers of the rows
left out; reads (store/rows.py) skip exactly those.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ImportFileError
from ..identifiers import KINDS, CanonicalizationContext
from .db import Store, check_name
from .importer import AMOUNT_CONFLICT_DETAIL, check_candidate
from .parquet import BATCH_ROWS, ParquetSource, SourceFile
from .rejects import Reason, RejectsFile, Rejection, RejectTally
from .sources import ColumnMapping, ParquetRecord, save_record

_KIND_CODES = {k: i for i, k in enumerate(sorted(KINDS))}
_KIND_NAMES = sorted(KINDS)


@dataclass(frozen=True)
class RegisterSummary:
    dataset: str
    uri: str
    files: int
    rows: int  # rows in the source, refused ones included
    actors: int
    identifiers: int
    duplicates: int  # rows left out as repeats of an earlier row of the same actor
    kinds: dict[str, int]
    fingerprint: str
    revision: int
    changed: bool  # False: the source, mapping and canonicalization were already registered as they are
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None


class _Digests:
    """Per accepted row: key digest, actor digest, amount, kind code, file
    index and line, kept per batch as numpy arrays (not a Python object per row)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add_batch(self, rows: list[tuple[int, int, str, str, str, int | None]]) -> None:
        """rows: (file index, line, actor, kind, canonical, amount)."""
        if not rows:
            return
        keys, actors = bytearray(), bytearray()
        for _, _, actor, kind, canonical, _ in rows:
            keys += self._digest(f"{actor}\x00{kind}\x00{canonical}")
            actors += self._digest(actor)
        self._parts.append((
            np.frombuffer(bytes(keys), dtype=np.uint64).reshape(-1, 2),
            np.frombuffer(bytes(actors), dtype=np.uint64).reshape(-1, 2),
            np.array([-1 if r[5] is None else r[5] for r in rows], dtype=np.int64),
            np.array([_KIND_CODES[r[3]] for r in rows], dtype=np.uint8),
            np.array([r[0] for r in rows], dtype=np.uint32),
            np.array([r[1] for r in rows], dtype=np.int64),
        ))

    def _digest(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key).digest()

    def resolve(self) -> _Resolved:
        """Group equal (actor, kind, canonical) rows: the first of each group
        is kept, a later one with the same amount is a repeat, with another
        amount a conflict (refused)."""
        if not self._parts:
            return _Resolved([], [], 0, {})
        keys, actors, amounts, kinds, file_idx, lines = (
            np.concatenate([p[i] for p in self._parts]) for i in range(6)
        )
        self._parts = []
        order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal keys stay in row order
        same = np.all(keys[order[1:]] == keys[order[:-1]], axis=1)
        # run_start[i]: where order[i]'s run of equal keys begins in ``order``
        run_start = np.maximum.accumulate(np.where(np.concatenate(([False], same)), 0, np.arange(len(order))))
        later, firsts = order[1:][same], order[run_start][1:][same]
        conflict = amounts[later] != amounts[firsts]
        where = lambda i: (int(file_idx[i]), int(lines[i]))  # noqa: E731
        repeats = [where(i) for i in later[~conflict].tolist()]
        conflicts = [(where(i), where(f), _KIND_NAMES[kinds[i]]) for i, f in zip(later[conflict].tolist(),
                                                                                     firsts[conflict].tolist())]
        keep = np.ones(len(order), dtype=bool)
        keep[later] = False  # repeats and conflicts alike
        kept = np.ascontiguousarray(actors[keep])
        distinct = len(np.unique(kept.view([("a", np.uint64), ("b", np.uint64)]))) if len(kept) else 0
        counts = np.bincount(kinds[keep], minlength=len(_KIND_NAMES))
        return _Resolved(sorted(repeats), sorted(conflicts), distinct,
                         {_KIND_NAMES[i]: int(n) for i, n in enumerate(counts) if n})


@dataclass(frozen=True)
class _Resolved:
    repeats: list[tuple[int, int]]  # (file index, line) of rows left out as repeats
    conflicts: list[tuple[tuple[int, int], tuple[int, int], str]]  # (row, its first row, kind)
    actors: int
    kinds: dict[str, int]  # identifiers kept, by kind


def register_parquet(
    store: Store, dataset: str, uri: str, mapping: ColumnMapping, *, ctx: CanonicalizationContext, now: float,
    rejects: Path | None = None, batch_rows: int = BATCH_ROWS,
) -> RegisterSummary:
    """Register the Parquet source at ``uri`` as ``dataset`` (see the module
    docstring): all or nothing, or with ``rejects`` the valid rows.

    The store and the rejects file change together or not at all."""
    check_name("dataset", dataset)
    source = ParquetSource(uri)
    stored_uri = source.local_path or uri  # absolute: 'serve' may run from another directory
    files = source.files()
    fingerprint = source.fingerprint(files)
    schema = source.schema(files, mapping)
    label = Path(stored_uri)
    with RejectsFile(rejects, label) if rejects is not None else nullcontext() as out:
        tally = RejectTally(label, out)
        digests, refused, read = _read_all(source, files, mapping, ctx, tally, batch_rows)
        if read == 0:
            raise ImportFileError(stored_uri, 0, "the source holds no rows")
        found = digests.resolve()
        for (file, line), (first_file, first_line), kind in found.conflicts:
            at = f"line {first_line}" if first_file == file else f"{files[first_file].relative} line {first_line}"
            tally.add(Rejection(line, Reason.AMOUNT_CONFLICT, f"{AMOUNT_CONFLICT_DETAIL} ({at})", kind,
                                files[file].relative))
        valid = read - tally.total - len(found.repeats)
        if tally.total and (out is None or not valid):
            raise tally.error(read, done="registered")
        skips = sorted({(files[f].relative, line) for f, line in [*refused, *found.repeats,
                                                                   *(c[0] for c in found.conflicts)]})
        record = ParquetRecord(
            dataset=dataset, uri=stored_uri, mapping=mapping, schema=schema, phone_region=ctx.default_phone_region,
            versions={k: KINDS[k].version for k in sorted(KINDS)}, fingerprint=fingerprint, files=len(files),
            rows=read, actors=found.actors, kinds=found.kinds, registered_at=now,
        )
        with store.transaction() as db:
            revision, changed = save_record(db, record, skips, now=now)
            if out is not None:
                out.publish()
    return RegisterSummary(
        dataset=dataset, uri=stored_uri, files=len(files), rows=read, actors=found.actors,
        identifiers=sum(found.kinds.values()), duplicates=len(found.repeats), kinds=found.kinds,
        fingerprint=fingerprint, revision=revision, changed=changed, rejected=tally.total,
        rejected_by_reason=dict(tally.by_reason), rejects_file=None if rejects is None else str(rejects),
    )


def _read_all(
    source: ParquetSource, files: list[SourceFile], mapping: ColumnMapping, ctx: CanonicalizationContext,
    tally: RejectTally, batch_rows: int,
) -> tuple[_Digests, list[tuple[int, int]], int]:
    """One pass over the source: digests of the accepted rows, (file index,
    line) of the refused ones, rows read."""
    index = {f.relative: i for i, f in enumerate(files)}
    digests, refused, read = _Digests(), [], 0
    for batch in source.rows(files, mapping, batch_rows=batch_rows):
        accepted = []
        for row in batch:
            read += 1
            entry = row.entry
            checked = entry if isinstance(entry, Rejection) else check_candidate(entry, ctx)
            file = index[row.file.relative]
            if isinstance(checked, Rejection):
                tally.add(replace(checked, file=row.file.relative))
                refused.append((file, checked.line))
            else:
                accepted.append((file, entry.line, checked.actor_id, checked.kind, checked.canonical, checked.amount))
        digests.add_batch(accepted)
    return digests, refused, read
