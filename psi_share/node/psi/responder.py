"""The responder side of a node: what peers may ask, and the sessions they open.

Plain Python, no gRPC: the servicer in ``transport/server.py`` calls these
methods with the authenticated peer name and maps errors to status codes.
Policy is decided in one place, :class:`psi_share.node.policy.Policy`, which
every protocol's responder consults when a peer opens a session.

Prepared filters
----------------
Building the filter over our items (one EC exponentiation per item) is the
slowest step, and it does not depend on the requester's items. The node
builds it before requests arrive (``prepare`` at serve start, or as soon as a
session is opened for a new kinds-set) with a fresh OpenMined key per filter,
and reuses it for every session against the same dataset revision and kinds
until ``setup_lifetime_seconds`` pass. A peer that matches twice against one
filter can tell whether our set changed between its sessions; rotating the
key on every revision and after the lifetime bounds that.

Canary sessions
---------------
A PsiOpen naming a canary dataset (``_canary.<dataset>[.<items>]``, see
:mod:`psi_share.protocols.canary`) is checked by policy exactly as a session
on ``<dataset>`` would be, and is answered from a synthetic filter built like
that dataset's real one (:mod:`.canary_filters`): no real item is used.
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
from ...protocols.canary import CanaryAsk, parse_canary_dataset
from ...protocols.psi import (
    PreparedSetup,
    PsiOpen,
    PsiOpened,
    PsiResponderSession,
    ResponderState,
    prepare_setup,
)
from ...store import SessionRecord, Store
from ..config import NodeConfig
from ..itemsets import build_item_set
from ..policy import AccessRequest, Policy
from ..sessions import SessionTable
from .canary_filters import CanaryFilters

log = logging.getLogger("psi_share.responder")

SOFTWARE_VERSION = "0.1.0"
_MIN_QUERIES = 1024


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
    key: bytes
    future: Future[PreparedSetup]
    created: float
    queries: int  # the largest requester set the filter is sized for


@dataclass
class _Session:
    id: str
    peer: str
    core: PsiResponderSession
    entry: _SetupEntry
    expires: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    canary: bool = False  # answered from a synthetic filter (peers check)


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
        self._setups: dict[tuple[str, int, tuple[str, ...]], list[_SetupEntry]] = {}
        # The clock is read through this responder, so that winding its clock winds the table's.
        self._sessions: SessionTable[_Session] = SessionTable(
            name="PSI", store=store, clock=lambda: self._clock(), max_open=config.sessions.max_open, log=log,
        )
        self.policy = Policy(config, store, clock)
        self.canaries = CanaryFilters(
            node_name=config.name, engine=engine, executor=setup_executor, random_bytes=random_bytes,
            clock=lambda: self._clock(), false_positive_rate=config.matching.false_positive_rate,
            lifetime=config.sessions.setup_lifetime_seconds,
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
    ) -> Future[PreparedSetup]:
        """Start (or reuse) building the filter over ``dataset`` for ``kinds``,
        valid for requester sets of up to ``queries`` items (default: the
        node's max_set_size, which covers every request)."""
        kinds = tuple(sorted(kinds if kinds is not None else self.config.exposed_kinds()))
        return self._setup_entry(dataset, kinds, queries or self.config.matching.max_set_size).future

    def prepare_exposed(self) -> list[Future[PreparedSetup]]:
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

    def _setup_entry(self, dataset: str, kinds: tuple[str, ...], set_size: int) -> _SetupEntry:
        info = self._store.dataset(dataset)
        # Kinds the dataset does not hold add nothing to the filter: normalize
        # them away so that equivalent requests share one prepared filter.
        kinds = tuple(k for k in kinds if k in info.kinds)
        # Filters are sized for a power-of-two number of queries: one sized
        # for more queries than a request has still meets the guarantee.
        limit = self.config.matching.max_set_size
        queries = min(limit, max(_MIN_QUERIES, 1 << max(0, set_size - 1).bit_length()))
        now = self._clock()
        lifetime = self.config.sessions.setup_lifetime_seconds
        cache_key = (dataset, info.revision, kinds)
        with self._lock:
            # Drop filters of older revisions or past their lifetime.
            for k in list(self._setups):
                if k[0] == dataset and k != cache_key:
                    del self._setups[k]
            fresh = [e for e in self._setups.get(cache_key, []) if now - e.created < lifetime]
            usable = [e for e in fresh if e.queries >= queries]
            if usable:
                return min(usable, key=lambda e: e.queries)
            key = new_private_key(self._random_bytes)
            future = self._setup_executor.submit(self._build_setup, dataset, kinds, key, queries)
            entry = _SetupEntry(key=key, future=future, created=now, queries=queries)
            self._setups[cache_key] = fresh + [entry]
            return entry

    def _build_setup(self, dataset: str, kinds: tuple[str, ...], key: bytes, queries: int) -> PreparedSetup:
        started = self._clock()
        items = build_item_set(self._store.identifiers(dataset, kinds))
        prepared = prepare_setup(
            self._engine,
            key,
            items.items,
            false_positive_rate=self.config.matching.false_positive_rate,
            max_set_size=queries,
        )
        log.info(
            "prepared PSI filter over dataset %s (%d items, %d kinds, up to %d queries) in %.2fs: %d bytes",
            dataset, prepared.item_count, len(kinds), queries, self._clock() - started, len(prepared.setup),
        )
        return prepared

    # -- sessions ---------------------------------------------------------

    def psi_open(self, peer: str, open_: PsiOpen) -> PsiOpened:
        canary = parse_canary_dataset(open_.dataset)  # None for a real dataset
        dataset = canary.dataset if canary is not None else open_.dataset
        access = AccessRequest(
            protocol="psi", dataset=dataset, kinds=dict(open_.kinds),
            set_size=open_.set_size, reveal=open_.mode.reveal,
        )
        # Charged only once the session is sure to open (below, under the lock).
        grant = self.policy.check(peer, access, charge=False)
        kinds = tuple(sorted(open_.kinds))
        entry = self._setup_entry(dataset, kinds, open_.set_size)
        if canary is not None:
            entry = self._canary_entry(peer, canary, entry)
        core = PsiResponderSession(
            open_, key=entry.key, max_set_size=self.config.matching.max_set_size, engine=self._engine
        )
        now = self._clock()
        sid = uuid.UUID(bytes=self._random_bytes(16), version=4).hex
        self._sessions.add(
            _Session(sid, peer, core, entry, now + self.config.sessions.ttl_seconds, canary=canary is not None), now,
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
            max_set_size=entry.queries,
            session_ttl_seconds=self.config.sessions.ttl_seconds,
            min_result=grant.min_result,
        )

    def _canary_entry(self, peer: str, canary: CanaryAsk, real: _SetupEntry) -> _SetupEntry:
        """A synthetic filter sized like ``real`` (the filter a real session would get)."""
        self.canaries.admit(peer)
        key, future = self.canaries.setup(real, canary)
        return _SetupEntry(key=key, future=future, created=self._clock(), queries=real.queries)

    def _session(self, peer: str, sid: str) -> _Session:
        return self._sessions.get(peer, sid)

    def expire(self) -> None:
        """Drop sessions past their time to live (the serving node's reaper)."""
        self._sessions.expire()

    def open_sessions(self) -> int:
        return self._sessions.count()

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
        prepared = session.entry.future.result()
        with session.lock:
            return session.core.setup(prepared)

    def psi_close(self, peer: str, sid: str, outcome: str) -> None:
        session = self._session(peer, sid)
        self._sessions.pop(sid)
        with session.lock:
            done = session.core.state is ResponderState.PROCESSED
            session.core.close()
        status = "done" if done else "closed"
        self._store.finish_session(sid, status, now=self._clock(), error="" if done else (outcome or "closed early"))
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
            "filter_max_queries": session.entry.queries,
            "false_positive_rate": self.config.matching.false_positive_rate,
        }
        if session.entry.future.done() and session.entry.future.exception() is None:
            prepared = session.entry.future.result()
            out["setup_items"] = prepared.item_count
            out["canary_items" if session.canary else "our_items"] = prepared.item_count
        return out

    def setup_disclosure(self, peer: str, sid: str) -> dict[str, object]:
        """What the requester of ``sid`` can learn once it has our filter."""
        session = self._session(peer, sid)
        prepared = session.entry.future.result()
        reveal = session.core.open.mode.reveal
        if session.canary:
            return {
                "learns": "which of its canary items our synthetic canary set holds (no data of ours), and its size",
                "mode": session.core.open.mode.value,
                "dataset": session.core.open.dataset,
                "canary_items": prepared.item_count,
                "queries": session.core.open.set_size,
            }
        return {
            "learns": "which of its items we hold" if reveal else "how many of its items we hold",
            "mode": session.core.open.mode.value,
            "dataset": session.core.open.dataset,
            "kinds": sorted(session.core.open.kinds),
            "queries": session.core.open.set_size,
            "our_items": prepared.item_count,
            "false_positive_rate": prepared.false_positive_rate,
        }

    def close(self) -> None:
        """Record every open session as aborted (the node is shutting down)."""
        self._sessions.close_all()
