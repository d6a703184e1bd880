"""The Dask engine: OpenMined steps as tasks on the lab's Dask cluster.

A :class:`~psi_share.crypto.openmined.Runner` whose ``map`` submits one task
per call to a Dask distributed scheduler and gathers the results in order.
Every task is a module-level function of bytes, strings and ints that builds
its own OpenMined object (they are not thread-safe; a Dask worker runs
several tasks on its threads at once).

Secrets. The responder's and requester's EC keys travel as 32 raw bytes
inside the task's arguments (never a key object, never ``scatter``-ed as
data of its own, never a task result): they go from the node to the
scheduler to a worker over the cluster's own connections, live in memory for
the task's duration, and are forgotten with it. Blinded points stay on the
workers (packed, until their bucket is built); filters are gathered at once
and released. Workers must run with spilling off (``--memory-limit 0``, or
``distributed.worker.memory.spill: false``), so that no task data is
written to disk; the scheduler and workers must be
reachable only inside the lab's network (TLS with ``tls://`` addresses where
the network is shared). Nothing here logs arguments or results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from operator import getitem
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import PsiShareError

if TYPE_CHECKING:
    from ..openmined import Chunk

T = TypeVar("T")


class EngineUnavailable(PsiShareError):
    """The configured engine cannot be used (extra not installed, scheduler unreachable)."""


class DaskRunner:
    """Runs an engine's calls on a Dask cluster at ``scheduler``."""

    def __init__(self, scheduler: str, *, timeout: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise EngineUnavailable(
                '[engine] kind = "dask" needs the optional extra: pip install "psi-share[dask]"'
            ) from None
        try:
            self._client = Client(scheduler, timeout=timeout, set_as_default=False)
        except OSError as exc:
            raise EngineUnavailable(f"Dask scheduler {scheduler} is not reachable: {exc}") from None
        self.scheduler = scheduler

    @property
    def workers(self) -> int:
        """Threads across the cluster's workers: how many chunks a step is cut into."""
        info = self._client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def map(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], *, cpu_bound: bool = False) -> list[T]:
        if not calls:
            return []
        # pure=False: never deduplicated or cached by content (two sessions
        # with one key still get tasks of their own, gone once gathered).
        futures = [self._client.submit(fn, *args, pure=False) for args in calls]
        try:
            return list(self._client.gather(futures))
        finally:
            for future in futures:
                future.release()

    def stream_buckets(
        self, key: bytes, chunks: Iterable[Chunk], fpr: float, queries: int,
        buckets: int,
    ) -> tuple[list[int], list[bytes]]:
        """Blind a set that arrives in chunks and build its bucketed setup on
        the cluster; blinded points never reach the node, only the setups
        come back (:meth:`OpenMinedEngine.stream_buckets
        <psi_share.crypto.openmined.OpenMinedEngine.stream_buckets>`).

        What a worker holds: each chunk it blinded, packed per bucket
        (:func:`~psi_share.crypto.openmined.blind_packed_span`: 33 bytes a
        point, one ``bytes`` per bucket), until that bucket is built; the
        parts of the bucket it builds (fetched from the other workers, 33
        bytes a point too); and that one bucket unpacked while its setup is
        built. The node holds one chunk of items (none for a loader, which
        the worker calls to read its items itself), and keeps at most two
        chunks per worker in flight, so that the scheduler's memory stays
        flat too; it keeps no future of a step whose result a later step
        took, so each bucket's parts are forgotten once it is built.
        """
        from distributed import wait

        from ..openmined import blind_packed_span, build_bucket_from_packed, load_and_blind_packed

        client = self._client
        parts: list[list[Any]] = [[] for _ in range(buckets)]  # per bucket: its part of every chunk
        blinding: deque[Any] = deque()
        built: list[Any] = []
        try:
            with client.as_current():  # wait() asks for the current client; ours is not the default
                for chunk in chunks:
                    if len(blinding) >= 2 * self.workers:
                        self._settle(blinding.popleft(), wait)
                    if callable(chunk):  # a loader: the worker reads its items itself
                        blinded = client.submit(load_and_blind_packed, key, chunk, buckets, pure=False)
                    else:
                        blinded = client.submit(blind_packed_span, key, list(chunk), buckets, pure=False)
                    for index in range(buckets):  # on the worker that holds the chunk: no copy
                        parts[index].append(client.submit(getitem, blinded, index, pure=False))
                    blinding.append(blinded)
                while blinding:
                    self._settle(blinding.popleft(), wait)
            built = [client.submit(build_bucket_from_packed, part, fpr, queries, buckets, pure=False) for part in parts]
        finally:
            # The builds keep what they need on the cluster; what no build names goes now.
            for future in [*blinding, *(f for part in parts for f in part)]:
                future.release()
            parts.clear()
        return self._collect(built)

    def _collect(self, built: list[Any]) -> tuple[list[int], list[bytes]]:
        """The built buckets' ``(sizes, setups)`` in bucket order, fetched one
        at a time as they finish and each forgotten on the cluster at once:
        the node holds the setups and one bucket's transfer, where a single
        gather of them all held the whole filter's frames and its objects
        at once."""
        from distributed import as_completed

        order = {future.key: index for index, future in enumerate(built)}
        sizes, setups = [0] * len(built), [b""] * len(built)
        try:
            with self._client.as_current():  # as_completed asks for the current client, as wait() does
                for future in as_completed(built):
                    sizes[order[future.key]], setups[order[future.key]] = future.result()
                    future.release()
        finally:  # forgotten on the cluster once no future here names them
            for future in built:
                future.release()
        return sizes, setups

    @staticmethod
    def _settle(future: Any, wait: Callable[[Any], Any]) -> None:
        """Wait for a chunk's blinding (without gathering it: its points stay
        on the worker), raise its error at once, and drop the node's handle
        on it (its parts' futures keep its result until they have run)."""
        try:
            wait(future)
            if future.status == "error":
                future.result()  # raises the task's error
        finally:
            future.release()

    def close(self) -> None:
        self._client.close()
