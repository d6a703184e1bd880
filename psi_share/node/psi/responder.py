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
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from ...crypto.openmined import OPENMINED_PSI_VERSION, OpenMinedEngine, new_private_key
from ...errors import NotFound
from ...identifiers import canonical_versions
from ...protocols import PROTOCOL_VERSION, PROTOCOLS
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
from .itemsets import build_item_set
from ..policy import AccessRequest, Policy
from ..sessions import SessionTable

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
class _SetupEntry:
    """Our items of one dataset revision and kinds, blinded under ``key``,
    and the filters built from them, one per size class."""

    key: bytes
    future: Future[BlindedSet]
    created: float
    item_count: int  # announced to requesters; their filter must hold exactly this many
    filters: dict[int, PreparedSetup] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usable(self, now: float, lifetime: float) -> bool:
        failed = self.future.done() and self.future.exception() is not None
        return not failed and now - self.created < lifetime


@dataclass
class _Session:
    id: str
    peer: str
    core: PsiResponderSession
    entry: _SetupEntry
    expires: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    queries: int = 0  # the size class of the filter this session gets


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
        self._setups: dict[tuple[str, int, tuple[str, ...]], _SetupEntry] = {}
        # The clock is read through this responder, so that winding its clock winds the table's.
        self._sessions: SessionTable[_Session] = SessionTable(
            name="PSI", store=store, clock=lambda: self._clock(), max_open=config.sessions.max_open,
            max_open_per_peer=config.sessions.max_open_per_peer, log=log,
        )
        self.policy = Policy(config, store, clock)

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
    ) -> Future[BlindedSet]:
        """Start (or reuse) blinding ``dataset`` for ``kinds``, then build the
        filter for requester sets of up to ``queries`` items (default: the
        node's max_set_size, whose class covers every request)."""
        kinds = tuple(sorted(kinds if kinds is not None else self.config.exposed_kinds()))
        entry = self._setup_entry(dataset, kinds)
        queries = size_class(queries or self.config.matching.max_set_size, self.config.matching.max_set_size)

        def build_filter(blinding: Future[BlindedSet]) -> None:
            try:
                if blinding.exception() is None:
                    self._filter(entry, dataset, queries)
            except Exception:  # noqa: BLE001  (a session asking for it will fail with the reason)
                log.exception("could not prepare a PSI filter over dataset %s", dataset)

        entry.future.add_done_callback(build_filter)
        return entry.future

    def prepare_exposed(self) -> list[Future[BlindedSet]]:
        """Build filters for every exposed dataset that exists (serve start)."""
        futures = []
        for name in self.config.exposure.datasets:
            try:
                self._store.dataset(name)
            except NotFound:
                log.warning("exposed dataset %s does not exist yet; nothing to prepare", name)
                continue
            futures.append(self.prepare(name))
        return futures

    def _setup_entry(self, dataset: str, kinds: tuple[str, ...]) -> _SetupEntry:
        info = self._store.dataset(dataset)
        # Kinds the dataset does not hold add nothing to the filter: normalize
        # them away so that equivalent requests share one prepared filter.
        kinds = tuple(k for k in kinds if k in info.kinds)
        cache_key = (dataset, info.revision, kinds)
        lifetime = self.config.sessions.setup_lifetime_seconds
        with self._lock:
            entry = self._setups.get(cache_key)
            if entry is not None and entry.usable(self._clock(), lifetime):
                return entry
        # Read outside the lock (the set size is announced when a session opens).
        items = build_item_set(self._store.identifiers(dataset, kinds)).items
        now = self._clock()
        with self._lock:
            # Drop filters of older revisions, past their lifetime or failed.
            stale = [k for k, e in self._setups.items() if k[0] == dataset and (k != cache_key or not e.usable(now, lifetime))]
            for k in stale:
                del self._setups[k]
            entry = self._setups.get(cache_key)  # another thread may have won the race
            if entry is None:
                key = new_private_key(self._random_bytes)
                future = self._setup_executor.submit(self._blind, dataset, kinds, key, items)
                entry = _SetupEntry(key=key, future=future, created=now, item_count=len(items))
                self._setups[cache_key] = entry
            return entry

    def _blind(self, dataset: str, kinds: tuple[str, ...], key: bytes, items: tuple[str, ...]) -> BlindedSet:
        started = self._clock()
        blinded = blind_set(self._engine, key, items)
        log.info("blinded %d items of dataset %s (%d kinds) in %.2fs", len(items), dataset, len(kinds), self._clock() - started)
        return blinded

    def _filter(self, entry: _SetupEntry, dataset: str, queries: int) -> PreparedSetup:
        """The filter of size class ``queries`` over ``entry`` (built once, checked)."""
        blinded = entry.future.result()
        with entry.lock:
            prepared = entry.filters.get(queries)
            if prepared is None:
                started = self._clock()
                prepared = filter_for(
                    blinded, false_positive_rate=self.config.matching.false_positive_rate, max_set_size=queries
                )
                entry.filters[queries] = prepared
                log.info(
                    "prepared PSI filter over dataset %s (%d items, up to %d queries): %s, %d bytes, in %.2fs",
                    dataset, prepared.item_count, queries, prepared.kind, len(prepared.setup), self._clock() - started,
                )
        return prepared

    # -- sessions ---------------------------------------------------------

    def psi_open(self, peer: str, open_: PsiOpen) -> PsiOpened:
        access = AccessRequest(
            protocol="psi", dataset=open_.dataset, kinds=dict(open_.kinds),
            set_size=open_.set_size, reveal=open_.mode.reveal,
        )
        # Charged only once the session is sure to open (below, under the lock).
        grant = self.policy.check(peer, access, charge=False)
        kinds = tuple(sorted(open_.kinds))
        entry = self._setup_entry(open_.dataset, kinds)
        queries = size_class(open_.set_size, self.config.matching.max_set_size)
        core = PsiResponderSession(
            open_, key=entry.key, max_set_size=self.config.matching.max_set_size, engine=self._engine
        )
        now = self._clock()
        sid = uuid.UUID(bytes=self._random_bytes(16), version=4).hex
        self._sessions.add(
            _Session(sid, peer, core, entry, now + self.config.sessions.ttl_seconds, queries=queries), now,
            admit=lambda: self.policy.charge(peer, access),
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
        )

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

    def psi_process(self, peer: str, sid: str, data: bytes) -> bytes:
        session = self._session(peer, sid)
        with session.lock:
            try:
                return session.core.process(data)
            except Exception as exc:
                self._sessions.fail(session, exc)
                raise

    def psi_setup(self, peer: str, sid: str) -> bytes:
        session = self._session(peer, sid)
        try:
            prepared = self._filter(session.entry, session.core.open.dataset, session.queries)
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
            "false_positive_rate": self.config.matching.false_positive_rate,
            "setup_items": session.entry.item_count,
            "our_items": session.entry.item_count,
        }
        return out

    def setup_disclosure(self, peer: str, sid: str) -> dict[str, object]:
        """What the requester of ``sid`` can learn once it has our filter."""
        session = self._session(peer, sid)
        prepared = self._filter(session.entry, session.core.open.dataset, session.queries)
        reveal = session.core.open.mode.reveal
        return {
            "learns": "which of its items we hold" if reveal else "how many of its items we hold",
            "mode": session.core.open.mode.value,
            "dataset": session.core.open.dataset,
            "kinds": sorted(session.core.open.kinds),
            "queries": session.core.open.set_size,
            "our_items": prepared.item_count,
            "false_positive_rate": prepared.false_positive_rate,
            "filter": prepared.kind,
        }

    def close(self) -> None:
        """Record every open session as aborted (the node is shutting down)."""
        self._sessions.close_all()
