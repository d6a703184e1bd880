"""The responder side of a node: what peers may ask, and the sessions they open.

Plain Python, no gRPC: the servicer in ``transport/server.py`` calls these
methods with the authenticated peer name and maps errors to status codes.
Policy is decided in one place, :class:`psi_share.node.policy.Policy`, which
every protocol's responder consults when a peer opens a session.

Prepared filters
----------------
Blinding our items (one EC exponentiation per item) is the slowest step, and
it does not depend on the requester's items. The node blinds them before
requests arrive (``prepare`` at serve start, or as soon as a session is
opened for a new kinds-set) with a fresh OpenMined key, and reuses them for
every session against the same dataset revision and kinds until
``setup_lifetime_seconds`` pass. Filters are built from the blinded items,
one per size class of requester sets (``size_class``): a peer's announced
size picks a class, never shapes a filter another peer gets, and a filter
that fails its own check is never built, cached or served. A peer that
matches twice against one filter can tell whether our set changed between
its sessions; rotating the key on every revision and after the lifetime
bounds that.

Large sets are streamed
-----------------------
A dataset whose rows of the asked kinds exceed ``[matching] bucket_items``
is never read whole: its rows come from :meth:`Store.rows
<psi_share.store.db.Store.rows>` batch by batch and go straight to
``engine.stream_buckets``, which blinds them and builds a bucketed filter
for one size class (:func:`.setups.stream_setup`). An item held by several
actors is one point once blinded, and collapses inside its bucket, so the
size announced is the distinct count; it is known only when the pass ends,
so a session opening before then waits. No point is kept: another size
class is another pass under the same key, started by the first session of
that class, which meanwhile gets the smallest larger class built. The node
holds one batch of rows and items at a time, plus (local engine) every
blinded point packed 33 bytes each until the buckets are built; with Dask
the points stay on the workers and only the filter comes back.

Canary sessions
---------------
A PsiOpen naming a canary dataset (``_canary.<dataset>[.<items>]``, see
:mod:`psi_share.protocols.canary`) is checked by policy exactly as a session
on ``<dataset>`` would be and held to the same session quotas, but is not
charged to the daily budget (it has an hourly limit of its own). It is
answered from a synthetic set blinded under a key of its own, through the
same filter code and size class as a real session (:mod:`.canary_filters`):
no real item is used, and the session is recorded under the canary's name
with ``canary`` in its audit parameters.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from ...crypto.buckets import SETUP_BUCKETS_VERSION, bucket_count
from ...crypto.openmined import OPENMINED_PSI_VERSION, OpenMinedEngine, new_private_key
from ...errors import NotFound, StoreError
from ...identifiers import canonical_versions
from ...protocols import PROTOCOL_VERSION, PROTOCOLS
from ...protocols.canary import CanaryAsk, parse_canary_dataset
from ...protocols.psi import (
    BlindedSet,
    PreparedSetup,
    PsiOpen,
    PsiOpened,
    PsiResponderSession,
    ResponderState,
    blind_set,
    filter_for,
    size_class,
)
from ...store import SessionRecord, Store
from ..config import NodeConfig
from .itemsets import build_item_set, stream_items
from ..policy import AccessRequest, Policy
from ..sessions import SessionTable
from .canary_filters import CanaryFilters
from .setups import SetupEntry, stream_setup

log = logging.getLogger("psi_share.responder")

SOFTWARE_VERSION = "0.1.0"


@dataclass(frozen=True)
class NodeInfo:
    node_name: str
    software_version: str
    openmined_psi_version: str
    canonicalization: dict[str, int]
    datasets: dict[str, tuple[str, ...]]  # dataset -> kinds present
    protocols: tuple[str, ...]
    protocol_version: int = PROTOCOL_VERSION


@dataclass
class _Session:
    id: str
    peer: str
    core: PsiResponderSession
    entry: SetupEntry
    expires: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    queries: int = 0  # the size class of the filter this session gets
    buckets: int = 1  # and its number of buckets (1: one OpenMined setup)
    canary: bool = False  # answered from a synthetic set (peers check)


class Responder:
    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        engine: OpenMinedEngine,
        setup_executor: Executor,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.config = config
        self._store = store
        self._engine = engine
        self._setup_executor = setup_executor
        self._clock = clock
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._setups: dict[tuple[str, int, tuple[str, ...]], SetupEntry] = {}
        # The clock is read through this responder, so that winding its clock winds the table's.
        self._sessions: SessionTable[_Session] = SessionTable(
            name="PSI", store=store, clock=lambda: self._clock(), max_open=config.sessions.max_open,
            max_open_per_peer=config.sessions.max_open_per_peer, log=log,
        )
        self.policy = Policy(config, store, clock)
        self.canaries = CanaryFilters(
            node_name=config.name, engine=engine, executor=setup_executor, random_bytes=random_bytes,
            clock=lambda: self._clock(), lifetime=config.sessions.setup_lifetime_seconds,
        )

    # -- read-only information --------------------------------------------

    def node_info(self, peer: str) -> NodeInfo:
        """What ``peer`` may use here (its policy, within what the node exposes)."""
        exposed = {}
        rule = self.policy.for_peer(peer)
        for name in self.config.exposure.datasets:
            if name not in rule.datasets:
                continue
            try:
                kinds = self._store.dataset(name).kinds
            except NotFound:
                continue
            exposed[name] = tuple(k for k in sorted(kinds) if k in rule.kinds)
        return NodeInfo(
            node_name=self.config.name,
            software_version=SOFTWARE_VERSION,
            openmined_psi_version=OPENMINED_PSI_VERSION,
            canonicalization=canonical_versions(),
            datasets=exposed,
            protocols=tuple(sorted(p for p in PROTOCOLS if p in rule.protocols)),
        )

    # -- prepared filters -------------------------------------------------

    def prepare(
        self, dataset: str, kinds: tuple[str, ...] | None = None, queries: int | None = None
    ) -> Future[BlindedSet | PreparedSetup]:
        """Start (or reuse) blinding ``dataset`` for ``kinds``, then build the
        filter for requester sets of up to ``queries`` items (default: the
        node's max_set_size, whose class covers every request)."""
        kinds = tuple(sorted(kinds if kinds is not None else self.config.exposed_kinds()))
        queries = size_class(queries or self.config.matching.max_set_size, self.config.matching.max_set_size)
        entry = self._setup_entry(dataset, kinds, queries)

        def build_filter(blinding: Future[BlindedSet | PreparedSetup]) -> None:
            try:
                if blinding.exception() is None and entry.streamed:  # another class: another pass, started
                    self._streamed_filter(entry, dataset, queries, wait=False)
                elif blinding.exception() is None:
                    self._filter(entry, dataset, queries, self._buckets(queries, entry.item_count, SETUP_BUCKETS_VERSION))
            except Exception:  # noqa: BLE001  (a session asking for it will fail with the reason)
                log.exception("could not prepare a PSI filter over dataset %s", dataset)

        entry.future.add_done_callback(build_filter)
        return entry.future

    def prepare_exposed(self, datasets: Sequence[str] | None = None) -> list[Future[BlindedSet | PreparedSetup]]:
        """Build filters for the exposed ``datasets`` (default: all) that exist (serve start)."""
        futures = []
        for name in self.config.exposure.datasets if datasets is None else datasets:
            try:
                self._store.dataset(name)
            except NotFound:
                log.warning("exposed dataset %s does not exist yet; nothing to prepare", name)
                continue
            futures.append(self.prepare(name))
        return futures

    def _cache_key(self, dataset: str, kinds: tuple[str, ...]) -> tuple[str, int, tuple[str, ...]]:
        info = self._store.dataset(dataset)
        # Kinds the dataset does not hold add nothing to the filter: normalize
        # them away so that equivalent requests share one prepared filter.
        return dataset, info.revision, tuple(k for k in kinds if k in info.kinds)

    def _cached_entry(self, cache_key: tuple[str, int, tuple[str, ...]]) -> SetupEntry | None:
        with self._lock:
            entry = self._setups.get(cache_key)
            if entry is not None and entry.usable(self._clock(), self.config.sessions.setup_lifetime_seconds):
                return entry
        return None

    def _item_count(self, dataset: str, kinds: tuple[str, ...]) -> int:
        """How many items a session on ``dataset`` and ``kinds`` would be
        answered from, without blinding them (a canary's size). A large
        (streamed) set's distinct count is known only from its filter: that
        one is prepared, and waited for."""
        cache_key = self._cache_key(dataset, kinds)
        entry = self._cached_entry(cache_key)
        if entry is not None:
            return entry.item_count
        if self._row_count(cache_key) > self.config.matching.bucket_items:
            return self._setup_entry(dataset, kinds).item_count
        return len(build_item_set(self._store.identifiers(dataset, cache_key[2])).items)

    def _row_count(self, cache_key: tuple[str, int, tuple[str, ...]]) -> int:
        """Rows of the dataset's ``kinds``, from its metadata: an upper bound
        on its distinct items (one item can be held by several actors)."""
        counts = self._store.dataset(cache_key[0]).kinds
        return sum(counts.get(k, 0) for k in cache_key[2])

    def _setup_entry(self, dataset: str, kinds: tuple[str, ...], queries: int | None = None) -> SetupEntry:
        """The entry of ``dataset`` and ``kinds`` (made if needed). A large
        set's first pass is built for ``queries`` (a size class; default the
        largest)."""
        cache_key = self._cache_key(dataset, kinds)
        kinds = cache_key[2]
        lifetime = self.config.sessions.setup_lifetime_seconds
        entry = self._cached_entry(cache_key)
        if entry is not None:
            return entry
        rows = self._row_count(cache_key)
        # A small set is read here, outside the lock (its size is announced
        # when a session opens); a large one is streamed by the setup task.
        items = None if rows > self.config.matching.bucket_items else build_item_set(
            self._store.identifiers(dataset, kinds)).items
        now = self._clock()
        with self._lock:
            # Drop filters of older revisions, past their lifetime or failed.
            stale = [k for k, e in self._setups.items() if k[0] == dataset and (k != cache_key or not e.usable(now, lifetime))]
            for k in stale:
                del self._setups[k]
            entry = self._setups.get(cache_key)  # another thread may have won the race
            if entry is None:
                key = new_private_key(self._random_bytes)
                future: Future[BlindedSet | PreparedSetup]
                if items is None:
                    first = queries or size_class(self.config.matching.max_set_size, self.config.matching.max_set_size)
                    future = self._setup_executor.submit(self._stream, dataset, kinds, key, rows, first)
                else:
                    future = self._setup_executor.submit(self._blind, dataset, kinds, key, items)
                entry = SetupEntry(key=key, future=future, created=now, known_count=None if items is None else len(items),
                                   kinds=kinds, rows_count=rows)
                self._setups[cache_key] = entry
            return entry

    def _blind(self, dataset: str, kinds: tuple[str, ...], key: bytes, items: tuple[str, ...]) -> BlindedSet:
        started = self._clock()
        blinded = blind_set(self._engine, key, items)
        log.info("blinded %d items of dataset %s (%d kinds) in %.2fs", len(items), dataset, len(kinds), self._clock() - started)
        return blinded

    def _stream(
        self, dataset: str, kinds: tuple[str, ...], key: bytes, rows: int, queries: int, expected: int | None = None
    ) -> PreparedSetup:
        """A large set's bucketed filter for size class ``queries``, its rows
        streamed from the store batch by batch into the engine
        (:func:`stream_setup`). ``expected``: the distinct count a former
        pass under ``key`` announced (a set changed in place is refused)."""
        started = self._clock()
        matching = self.config.matching
        prepared = stream_setup(
            self._engine, key, self._store.rows(dataset), kinds, rows_count=rows,
            false_positive_rate=matching.false_positive_rate, queries=queries, bucket_items=matching.bucket_items,
            read_on_workers=self.config.engine.kind == "dask" and self.config.engine.workers_read_sources,
        )
        if expected is not None and prepared.item_count != expected:
            raise StoreError(f"dataset {dataset!r} changed while a filter over it was built; try again")
        log.info(
            "streamed %d rows (%d distinct items) of dataset %s (%d kinds) into %d buckets, %d bytes, in %.2fs",
            rows, prepared.item_count, dataset, len(kinds), prepared.bucket_count, len(prepared.setup),
            self._clock() - started,
        )
        return prepared

    def _buckets(self, queries: int, items: int, buckets_version: int) -> int:
        """Buckets for a requester that reads ``buckets_version`` (0: one setup, always)."""
        if buckets_version < SETUP_BUCKETS_VERSION:
            return 1
        matching = self.config.matching
        return bucket_count(matching.false_positive_rate, queries, items, matching.bucket_items)

    def _filter(self, entry: SetupEntry, dataset: str, queries: int, buckets: int = 1) -> PreparedSetup:
        """The filter of size class ``queries`` in ``buckets`` over ``entry`` (built once, checked)."""
        blinded = entry.future.result()
        if isinstance(blinded, PreparedSetup):  # streamed: a class's bucketed filter, or a single setup
            if buckets == 1:
                return self._single_setup(entry, dataset, queries)
            with entry.lock:
                return next(p for p in entry.streamed_filters() if (p.max_set_size, p.bucket_count) == (queries, buckets))
        with entry.lock:
            prepared = entry.filters.get((queries, buckets))
            if prepared is None:
                started = self._clock()
                prepared = filter_for(
                    blinded, false_positive_rate=self.config.matching.false_positive_rate, max_set_size=queries,
                    buckets=buckets, engine=self._engine,
                )
                entry.filters[(queries, buckets)] = prepared
                log.info(
                    "prepared PSI filter over dataset %s (%d items, up to %d queries): %s%s, %d bytes, in %.2fs",
                    dataset, prepared.item_count, queries, prepared.kind,
                    f" x{buckets}" if buckets > 1 else "", len(prepared.setup), self._clock() - started,
                )
        return prepared

    def _streamed_filter(self, entry: SetupEntry, dataset: str, queries: int, *, wait: bool = True) -> PreparedSetup | None:
        """The filter a session of size class ``queries`` gets on a streamed
        set: the one built for its class; until that pass is done, the
        smallest built for a larger class (its false-positive bound holds
        for fewer queries too: the requester only receives more bytes).
        Without any, waits for its class's pass (unless not ``wait``)."""
        first = entry.future.result()  # the first pass: its distinct count is announced
        assert isinstance(first, PreparedSetup)
        with entry.lock:
            built = entry.streamed_filters()
            exact = [p for p in built if p.max_set_size == queries]
            if exact:
                return exact[0]
            pending = entry.pending.get(queries)
            if pending is None:
                pending = entry.pending[queries] = self._setup_executor.submit(
                    self._stream, dataset, entry.kinds, entry.key, entry.rows_count, queries, first.item_count)
                pending.add_done_callback(functools.partial(self._keep_streamed, entry, queries))
            larger = [p for p in built if p.max_set_size > queries]
        if larger:
            return min(larger, key=lambda p: p.max_set_size)
        return pending.result() if wait else None

    @staticmethod
    def _keep_streamed(entry: SetupEntry, queries: int, done: Future[PreparedSetup]) -> None:
        with entry.lock:
            entry.pending.pop(queries, None)
            if not done.cancelled() and done.exception() is None:
                prepared = done.result()
                entry.filters[(prepared.max_set_size, prepared.bucket_count)] = prepared
            else:
                log.warning("a streamed PSI filter (%d queries) could not be built: %s", queries, done.exception())

    def _single_setup(self, entry: SetupEntry, dataset: str, queries: int) -> PreparedSetup:
        """One OpenMined setup over a streamed set, for a requester that reads
        nothing else (a foreign client): the set is streamed and blinded
        again under the entry's key (the same points), and every point is
        gathered here, as that one setup holds them all."""
        with entry.lock:
            prepared = entry.filters.get((queries, 1))
            if prepared is None:
                started = self._clock()
                points: set[bytes] = set()
                for chunk in stream_items(self._store.rows(dataset).batches(entry.kinds)):
                    points.update(self._engine.blinded_points(entry.key, chunk))
                if len(points) != entry.item_count:  # an imported dataset rewritten in place meanwhile
                    raise StoreError(f"dataset {dataset!r} changed while its single setup was built; try again")
                prepared = filter_for(
                    BlindedSet(key=entry.key, points=tuple(sorted(points))),
                    false_positive_rate=self.config.matching.false_positive_rate, max_set_size=queries,
                )
                entry.filters[(queries, 1)] = prepared
                log.info("prepared a single PSI setup over streamed dataset %s (%d items): %s, %d bytes, in %.2fs",
                         dataset, prepared.item_count, prepared.kind, len(prepared.setup), self._clock() - started)
        return prepared

    # -- sessions ---------------------------------------------------------

    def psi_open(self, peer: str, open_: PsiOpen) -> PsiOpened:
        canary = parse_canary_dataset(open_.dataset)  # None for a real dataset
        dataset = canary.dataset if canary is not None else open_.dataset
        access = AccessRequest(
            protocol="psi", dataset=dataset, kinds=dict(open_.kinds),
            set_size=open_.set_size, reveal=open_.mode.reveal, requester_counts=not open_.mode.reveal,
            prompt_params=open_.prompt_params,
        )
        # Charged only once the session is sure to open (below, under the lock).
        grant = self.policy.check(peer, access, charge=False)
        kinds = tuple(sorted(open_.kinds))
        admit: Callable[[], None] | None = None  # a canary: its hourly limit, never the daily budget
        queries = size_class(open_.set_size, self.config.matching.max_set_size)
        if canary is None:
            entry = self._setup_entry(dataset, kinds, queries)
            admit = functools.partial(self.policy.charge, peer, access)
        else:
            entry = self._canary_entry(peer, canary, kinds)
        if entry.streamed and open_.setup_buckets_version >= SETUP_BUCKETS_VERSION:
            # A large set's filter (waited for: its distinct count is announced below).
            streamed = self._streamed_filter(entry, dataset, queries)
            assert streamed is not None
            queries, buckets = streamed.max_set_size, streamed.bucket_count
        else:
            buckets = self._buckets(queries, entry.item_count, open_.setup_buckets_version)
        core = PsiResponderSession(
            open_, key=entry.key, max_set_size=self.config.matching.max_set_size, engine=self._engine
        )
        now = self._clock()
        sid = uuid.UUID(bytes=self._random_bytes(16), version=4).hex
        self._sessions.add(
            _Session(sid, peer, core, entry, now + self.config.sessions.ttl_seconds, queries=queries,
                     canary=canary is not None, buckets=buckets),
            now, admit=admit,
        )
        self._store.start_session(
            SessionRecord(
                id=sid, role="responder", protocol="psi", peer=peer, local_dataset=open_.dataset,
                peer_dataset="", kinds=dict(open_.kinds), mode=open_.mode.value, job_run_id=None,
                status="open", started_at=now, finished_at=None, requester_set_size=open_.set_size,
                matched_count=None, false_positive_rate=self.config.matching.false_positive_rate, error="",
            )
        )
        log.info(
            "peer %s opened PSI session %s on dataset %s (%s, %d items)",
            peer, sid, open_.dataset, open_.mode.value, open_.set_size,
        )
        return PsiOpened(
            session_id=sid,
            false_positive_rate=self.config.matching.false_positive_rate,
            max_set_size=queries,
            session_ttl_seconds=self.config.sessions.ttl_seconds,
            min_result=grant.min_result,
            responder_set_size=entry.item_count,
            setup_buckets_version=SETUP_BUCKETS_VERSION if buckets > 1 else 0,
            bucket_count=buckets,
        )

    def _canary_entry(self, peer: str, canary: CanaryAsk, kinds: tuple[str, ...]) -> SetupEntry:
        """The synthetic set a canary is answered from, as large as it asks
        or (``_canary.<dataset>``) as the real set of ``kinds`` is."""
        self.canaries.admit(peer)
        real = 0 if canary.items is not None else self._item_count(canary.dataset, kinds)
        return self.canaries.entry(canary.responder_count(real))

    def _session(self, peer: str, sid: str) -> _Session:
        return self._sessions.get(peer, sid)

    def expire(self) -> None:
        """Drop sessions past their time to live (the serving node's reaper)."""
        self._sessions.expire()

    def open_sessions(self) -> int:
        return self._sessions.count()

    def open_by_peer(self) -> dict[str, int]:
        return self._sessions.count_by_peer()

    def abort(self, peer: str, sid: str, exc: Exception) -> None:
        """End ``sid`` as failed after a broken or hostile stream (if it is ``peer``'s)."""
        self._sessions.abort(peer, sid, exc)

    def request_limit(self, peer: str, sid: str) -> int:
        """Largest serialized request this session may receive."""
        return self._session(peer, sid).core.max_request_bytes()

    def psi_process(self, peer: str, sid: str, pieces: Iterable[bytes]) -> tuple[int, Iterator[bytes]]:
        """``(length, pieces)`` of the serialized Response to the request
        arriving in ``pieces``, computed a batch at a time as it arrives; a
        request that turns out bad midway fails the session there."""
        session = self._session(peer, sid)
        with session.lock:
            try:
                replies = session.core.process_stream(pieces)
            except Exception as exc:
                self._sessions.fail(session, exc)
                raise

        def failing_the_session() -> Iterator[bytes]:
            try:
                yield from replies
            except Exception as exc:
                self._sessions.fail(session, exc)
                raise

        return session.core.response_bytes(), failing_the_session()

    def psi_setup(self, peer: str, sid: str) -> bytes:
        session = self._session(peer, sid)
        try:
            prepared = self._filter(session.entry, session.core.open.dataset, session.queries, session.buckets)
        except Exception as exc:  # no filter to serve: the session failed here
            self._sessions.fail(session, exc)
            raise
        with session.lock:
            return session.core.setup(prepared)

    def psi_close(self, peer: str, sid: str, outcome: str) -> None:
        session = self._session(peer, sid)
        self._sessions.pop(sid)
        with session.lock:
            done = session.core.state is ResponderState.PROCESSED
            session.core.close()
        # The requester computes the result; when it says the session failed
        # (it refused our filter, say), it failed on both sides.
        if outcome == "failed":
            status, error = "failed", "the requester closed the session as failed"
        else:
            status, error = ("done", "") if done else ("closed", outcome or "closed early")
        self._store.finish_session(sid, status, now=self._clock(), error=error)
        log.info("PSI session %s with %s closed (%s)", sid, peer, status)

    # -- what a peer can learn (for the audit log) -------------------------

    def audit_parameters(self, peer: str, sid: str) -> dict[str, object]:
        """The parameters that bound what ``peer`` learns in session ``sid``.

        Recorded with every message of the session; never blocks on a
        filter that is still being built.
        """
        session = self._session(peer, sid)
        out: dict[str, object] = {
            "mode": session.core.open.mode.value,
            "curve": "P-256",
            "requester_items": session.core.open.set_size,
            "response_items": session.core.open.set_size,
            "filter_max_queries": session.queries,
            "setup_buckets": session.buckets,
            "false_positive_rate": self.config.matching.false_positive_rate,
            "setup_items": session.entry.item_count,
            "canary_items" if session.canary else "our_items": session.entry.item_count,
        }
        if session.canary:
            out["canary"] = True
        return out

    def setup_disclosure(self, peer: str, sid: str) -> dict[str, object]:
        """What the requester of ``sid`` can learn once it has our filter."""
        session = self._session(peer, sid)
        prepared = self._filter(session.entry, session.core.open.dataset, session.queries, session.buckets)
        reveal = session.core.open.mode.reveal
        if session.canary:
            return {
                "learns": "which of its canary items our synthetic canary set holds (no data of ours), and its size",
                "canary": True,
                "mode": session.core.open.mode.value,
                "dataset": session.core.open.dataset,
                "kinds": sorted(session.core.open.kinds),
                "queries": session.core.open.set_size,
                "canary_items": prepared.item_count,
                "false_positive_rate": prepared.false_positive_rate,
                "filter": prepared.kind,
            }
        return {
            # OpenMined's count mode: an honest client learns the count, a modified one which items.
            "learns": "which of its items we hold" if reveal else "how many of its items we hold (modified software: which)",
            "mode": session.core.open.mode.value,
            "dataset": session.core.open.dataset,
            "kinds": sorted(session.core.open.kinds),
            "queries": session.core.open.set_size,
            "our_items": prepared.item_count,
            "false_positive_rate": prepared.false_positive_rate,
            "filter": prepared.kind,
            **({"buckets": prepared.bucket_count, "bucket_filters": sorted(set(prepared.bucket_kinds))}
               if prepared.bucket_count > 1 else {}),
        }

    def close(self) -> None:
        """Record every open session as aborted (the node is shutting down)."""
        self._sessions.close_all()
