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
the task's duration, and are forgotten with it. Results (blinded points,
filters) are gathered at once and released. Workers must run with spilling
off (``--memory-limit 0``, or ``distributed.worker.memory.spill: false``),
so that no task data is written to disk; the scheduler and workers must be
reachable only inside the lab's network (TLS with ``tls://`` addresses where
the network is shared). Nothing here logs arguments or results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ...errors import PsiShareError

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

    def blind_remote(self, key: bytes, chunks: Iterable[Sequence[str] | Callable[[], Sequence[str]]]) -> list[Any]:
        """Blind a set that arrives in chunks, keeping the points on the
        workers: one future per chunk (its sorted points), for
        :meth:`remote_buckets`. The node holds one
        chunk of items at a time; at most two chunks per worker are in
        flight, so the scheduler's memory stays flat too."""
        from distributed import wait

        from ..openmined import load_and_blind, raw_points_span

        futures: list[Any] = []
        in_flight = 2 * self.workers
        with self._client.as_current():  # wait() asks for the current client; ours is not the default
            for chunk in chunks:
                if len(futures) >= in_flight:
                    wait(futures[-in_flight])  # without gathering: the points stay on the worker
                if callable(chunk):  # a loader: the worker reads its items itself
                    futures.append(self._client.submit(load_and_blind, key, chunk, pure=False))
                else:
                    futures.append(self._client.submit(raw_points_span, key, list(chunk), pure=False))
            wait(futures)
        return futures

    def remote_buckets(self, handle: list[Any], fpr: float, queries: int, buckets: int) -> tuple[list[int], list[bytes]]:
        """Each chunk's points split into buckets on its worker, each bucket's
        setup built on a worker from its parts; only the setups come back."""
        from operator import getitem

        from ..buckets import partition
        from ..openmined import build_bucket_from_parts

        client = self._client
        splits = [client.submit(partition, f, buckets, pure=False) for f in handle]
        parts = [[client.submit(getitem, split, j, pure=False) for split in splits] for j in range(buckets)]
        built = [client.submit(build_bucket_from_parts, parts[j], fpr, queries, buckets, pure=False)
                 for j in range(buckets)]
        try:
            results = client.gather(built)
        finally:  # forgotten on the cluster once no future here names them
            for future in built + splits + [f for bucket in parts for f in bucket]:
                future.release()
        return [size for size, _ in results], [setup for _, setup in results]

    def stream_buckets(
        self, key: bytes, chunks: Iterable[Sequence[str] | Callable[[], Sequence[str]]], fpr: float, queries: int,
        buckets: int,
    ) -> tuple[list[int], list[bytes]]:
        """:meth:`blind_remote` then :meth:`remote_buckets`: blinded points
        never reach the node."""
        handle = self.blind_remote(key, chunks)
        try:
            return self.remote_buckets(handle, fpr, queries, buckets)
        finally:
            for future in handle:
                future.release()

    def close(self) -> None:
        self._client.close()
