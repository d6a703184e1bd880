"""The responder's side of canary sessions: synthetic filters shaped like the real ones.

A canary (:mod:`psi_share.protocols.canary`) must fail exactly when a real
session would, so its filter is built by the same code over the synthetic
set, for the same number of queries as the real filter that would answer a
real session with the same dataset, kinds and set size, and (for
``_canary.<dataset>``) over as many items as that real filter holds. Only
that item count is taken from the real filter; no real item, point or key
goes into a canary filter, and each canary filter has a fresh key of its
own.

Abuse: a canary is opened through the same policy check as a real session
(the dataset must be granted to the peer, kinds and versions must agree,
reveal needs its grant) and is charged to the same daily budget. On top of
that a peer may open at most :data:`CANARY_SESSIONS_PER_HOUR` canaries per
hour here (counted in memory), and canary filters are cached (at most
:data:`CACHED_FILTERS`, each for the setup lifetime), so that repeating a
check costs the responder little.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Protocol

from ...crypto.openmined import OpenMinedEngine, new_private_key
from ...errors import Refused
from ...protocols.canary import CanaryAsk, held_items
from ...protocols.psi import PreparedSetup, prepare_setup

CANARY_SESSIONS_PER_HOUR = 60
CACHED_FILTERS = 16
_HOUR = 3600.0


class RealFilter(Protocol):
    """The real prepared filter a canary mirrors (the responder's setup entry)."""

    key: bytes
    future: Future[PreparedSetup]
    queries: int


class CanaryFilters:
    """Canary filters and the per-peer canary rate, for one responder."""

    def __init__(
        self,
        *,
        node_name: str,
        engine: OpenMinedEngine,
        executor: Executor,
        random_bytes: Callable[[int], bytes],
        clock: Callable[[], float],
        false_positive_rate: float,
        lifetime: float,
        per_hour: int = CANARY_SESSIONS_PER_HOUR,
    ) -> None:
        self._node = node_name
        self._engine = engine
        self._executor = executor
        self._random_bytes = random_bytes
        self._clock = clock
        self._fpr = false_positive_rate
        self._lifetime = lifetime
        self._per_hour = per_hour
        self._lock = threading.Lock()
        self._opened: dict[str, collections.deque[float]] = {}
        # (real filter's key, items asked) -> (created, canary key, canary filter)
        self._cache: collections.OrderedDict[tuple[bytes, int | None], tuple[float, bytes, Future[PreparedSetup]]] = (
            collections.OrderedDict()
        )

    def admit(self, peer: str) -> None:
        """Count one canary of ``peer``, or refuse it past the hourly limit
        (RESOURCE_EXHAUSTED). Called after the policy check, before any work."""
        now = self._clock()
        with self._lock:
            opened = self._opened.setdefault(peer, collections.deque())
            while opened and opened[0] <= now - _HOUR:
                opened.popleft()
            if len(opened) >= self._per_hour:
                raise Refused("RESOURCE_EXHAUSTED", f"{peer} has opened {len(opened)} canary sessions at "
                              f"{self._node} in the last hour, the most it may; retry later")
            opened.append(now)

    def setup(self, real: RealFilter, ask: CanaryAsk) -> tuple[bytes, Future[PreparedSetup]]:
        """The key and (future) filter of a canary mirroring ``real``."""
        now = self._clock()
        cache_key = (real.key, ask.items)
        with self._lock:
            for k in [k for k, (created, _, _) in self._cache.items() if now - created >= self._lifetime]:
                del self._cache[k]
            cached = self._cache.get(cache_key)
            if cached is not None:
                self._cache.move_to_end(cache_key)
                return cached[1], cached[2]
            key = new_private_key(self._random_bytes)
            if ask.items is not None:
                future = self._executor.submit(self._build, key, ask.items, real.queries)
            else:
                # The real filter's size is known once it is built; never wait
                # for it on an executor thread (it may be queued behind us).
                future = _then(real.future, lambda prepared: self._executor.submit(
                    self._build, key, ask.responder_count(prepared.item_count), real.queries))
            self._cache[cache_key] = (now, key, future)
            while len(self._cache) > CACHED_FILTERS:
                self._cache.popitem(last=False)
        future.add_done_callback(lambda done: self._forget_failed(cache_key, done))
        return key, future

    def _forget_failed(self, cache_key: tuple[bytes, int | None], done: Future[PreparedSetup]) -> None:
        """A filter that could not be built is not kept: the next canary tries again."""
        if done.cancelled() or done.exception() is not None:
            with self._lock:
                cached = self._cache.get(cache_key)
                if cached is not None and cached[2] is done:
                    del self._cache[cache_key]

    def _build(self, key: bytes, count: int, queries: int) -> PreparedSetup:
        return prepare_setup(self._engine, key, held_items(count), false_positive_rate=self._fpr, max_set_size=queries)


def _then(first: Future[PreparedSetup], start: Callable[[PreparedSetup], Future[PreparedSetup]]) -> Future[PreparedSetup]:
    """A future for ``start(first's result)``, chained without blocking a thread."""
    out: Future[PreparedSetup] = Future()

    def relay(done: Future[PreparedSetup]) -> None:
        try:
            out.set_result(done.result())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on ``out``
            out.set_exception(exc)

    def started(done: Future[PreparedSetup]) -> None:
        try:
            start(done.result()).add_done_callback(relay)
        except BaseException as exc:  # noqa: BLE001 - the real filter failed, or the executor is shut down
            out.set_exception(exc)

    first.add_done_callback(started)
    return out
