"""A responder's blinded items and the filters built from them.

One :class:`SetupEntry` holds a set blinded under one OpenMined key (the
slow step, one EC exponentiation per item) and the filters built from it,
one per size class of requester sets. The responder keeps one per dataset
revision and kinds; canary sessions (``peers check``) keep their own over
synthetic items. Neither the key nor the points leave the node: only a
filter does, and only once it has passed its own check
(:func:`psi_share.protocols.psi.filter_for`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial
from concurrent.futures import Future
from dataclasses import dataclass, field

from ...crypto.buckets import bucket_count
from ...crypto.openmined import OpenMinedEngine
from ...protocols.psi import BlindedSet, PreparedSetup, bucketed_setup
from ...store.rows import DatasetRows, ParquetRows
from .itemsets import part_items, stream_items

# Rows per batch read from the store when a large set is streamed: one batch
# of items (and its points) is what the node holds at a time. A Parquet row
# costs about 2 KB of Python objects while its batch is canonicalized
# (measured: node peak 366 MiB at 137,500 rows a batch, 285 at 65,536, 231 at
# 16,384, over an 85 MiB idle node; pyarrow's row-group buffers are the rest).
STREAM_ROWS = 32_768


@dataclass
class SetupEntry:
    """Items blinded under ``key``, and the filters built from them, one per size class.

    A large dataset's entry is *streamed*: its rows are blinded batch by
    batch straight into a bucketed filter for one size class (the future's
    PreparedSetup), no point or item kept, and its distinct item count is
    known only once that filter is built (``known_count`` None until then).
    Another size class is another pass over the rows under the same key
    (``pending`` until built, then in ``filters``).
    """

    key: bytes
    future: Future[BlindedSet | PreparedSetup]  # PreparedSetup: streamed
    created: float
    known_count: int | None  # announced to requesters; their filter must hold exactly this many
    kinds: tuple[str, ...] = ()  # the kinds it was read for
    rows_count: int = 0  # streamed: the rows of those kinds (fixes each class's bucket count)
    pending: dict[int, Future[PreparedSetup]] = field(default_factory=dict)  # streamed: classes being built
    filters: dict[tuple[int, int], PreparedSetup] = field(default_factory=dict)  # (queries, buckets)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def streamed(self) -> bool:
        return self.known_count is None

    @property
    def item_count(self) -> int:
        """Distinct items of the set (a streamed entry's waits for its filter)."""
        if self.known_count is not None:
            return self.known_count
        return self.future.result().item_count

    def streamed_filters(self) -> list[PreparedSetup]:
        """A streamed entry's bucketed filters built so far (call under ``lock``)."""
        first = self.future.result()
        assert isinstance(first, PreparedSetup)
        return [first, *(p for p in self.filters.values() if p.bucket_count > 1)]

    def usable(self, now: float, lifetime: float) -> bool:
        failed = self.future.done() and (self.future.cancelled() or self.future.exception() is not None)
        return not failed and now - self.created < lifetime


def stream_setup(
    engine: OpenMinedEngine, key: bytes, rows: DatasetRows, kinds: Iterable[str], *, rows_count: int,
    false_positive_rate: float, queries: int, bucket_items: int, read_on_workers: bool = False,
) -> PreparedSetup:
    """The bucketed filter over a dataset read batch by batch, never whole.

    ``rows_count`` (the rows of ``kinds``, from the dataset's metadata)
    bounds the distinct items from above and fixes the number of buckets
    before any point exists; repeated items collapse after blinding, inside
    their bucket (:meth:`OpenMinedEngine.stream_buckets`), so the set size
    announced (the sum of the bucket sizes) is the distinct count. Built for
    requester sets of up to ``queries`` items (a size class).

    With ``read_on_workers`` (a Dask engine) and a registered Parquet
    dataset, the engine's workers read the source themselves, a slice of
    whole row groups each (:meth:`ParquetRows.parts
    <psi_share.store.rows.ParquetRows.parts>`), and canonicalize what they
    read: no row passes through this process. The source is checked against
    its registration before the first slice is handed out and after the last
    is read, as a read here checks it.

    What the requester learns beyond a filter built from the distinct count:
    the bucket count, hence ``rows_count`` to within ``bucket_items``.
    """
    buckets = max(2, bucket_count(false_positive_rate, queries, rows_count, bucket_items))
    # Several batches per engine worker even for a modest set, so that every worker blinds.
    batch_rows = max(2048, min(STREAM_ROWS, -(-rows_count // 8)))
    if read_on_workers and isinstance(rows, ParquetRows):
        parts = rows.parts(kinds, part_rows=batch_rows)
        sizes, setups = engine.stream_buckets(key, [partial(part_items, p) for p in parts], false_positive_rate,
                                              queries, buckets)
        rows.check_unchanged()  # a file rewritten while the workers read it
    else:
        chunks = stream_items(rows.batches(kinds, batch_rows=batch_rows))
        sizes, setups = engine.stream_buckets(key, chunks, false_positive_rate, queries, buckets)
    return bucketed_setup(key, sizes, setups, false_positive_rate, queries)
