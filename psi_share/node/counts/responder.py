"""The responder side of cardinality sessions (plain Python, no gRPC).

A peer opens a session (policy decides in :class:`Policy`, protocol
``cardinality``: the grant a peer with counts only gets), sends its queries
and key point, receives our session-set, sends the set re-blinded, and gets
one number back: the count, after ``[policy] min_result`` and noise
(:func:`~psi_share.protocols.cardinality.release_count`), or "withheld". We
learn the requester's set size and the exact count; see
:mod:`psi_share.protocols.cardinality` for what each side can and cannot
learn.

Session-sets
------------
A session-set is our prepared blinded set (``sums.keyring.PreparedSums``, per
dataset revision and kinds) re-blinded under a fresh scalar and mixed with
fresh decoys: one exponentiation per item, and it needs nothing from the
peer. :class:`SessionSets` keeps one ready per (dataset, kinds) that peers
ask for, built at serve start and rebuilt whenever no cardinality session is
open, so that a session does not wait for it. Each is used by one session
only: a decoy seen twice would no longer be hidden among our items.

A re-blinded set that fails the decoy check ends its session as
``violation``; :class:`~psi_share.node.policy.Policy` then refuses that peer.

Noise
-----
With ``[privacy] enabled`` (the default) the count carries discrete Laplace
noise of scale 1 / epsilon_per_release (one actor changes a count by at most
1), drawn here, by the party whose data the count is about, and the peer's
daily epsilon budget is charged in the store *before* the count is computed
into the reply: a peer past its budget gets RESOURCE_EXHAUSTED and no count.
``min_result`` applies to the noisy count, so whether a count is withheld is
covered by the noise too.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ...crypto import ec
from ...errors import NotFound, OutOfOrder, Refused
from ...privacy import NoiseSampler, Release
from ...privacy import release_count as dp_release_count
from ...protocols.cardinality import (
    CardinalityOpen,
    CardinalityOpened,
    CardinalityResponder,
    ProtocolViolation,
    SessionSet,
    make_session_set,
    release_count,
    step_of,
)
from ...store import SessionRecord, Store
from ..config import NodeConfig
from ..policy import AccessRequest, Policy
from ..sessions import SessionTable
from ..sums.keyring import PreparedSums
from ..sums.responder import ExchangeReply

log = logging.getLogger("psi_share.count_responder")

PROTOCOL = "cardinality"
#: (dataset, kinds) combinations a node keeps a session-set ready for.
MAX_READY = 4
_SetKey = tuple[str, tuple[str, ...]]  # (dataset, kinds present in it)


class SessionSets:
    """One fresh session-set ready per (dataset, kinds), each used once.

    Built from the prepared set of each kind (so that peers asking for any
    combination of kinds share the per-kind prepared sets), and kept ready
    for at most :data:`MAX_READY` combinations, the ones asked for last: a
    peer cannot make us hold a set for every combination.
    """

    def __init__(
        self, *, store: Store, prepared: PreparedSums, engine: ec.EcEngine, random_bytes: Callable[[int], bytes]
    ) -> None:
        self._store = store
        self._prepared = prepared
        self._engine = engine
        self._random = random_bytes
        self._lock = threading.Lock()
        self._ready: dict[_SetKey, tuple[int, Future[SessionSet]]] = {}  # key -> (revision, set)
        self._wanted: dict[_SetKey, None] = {}  # insertion-ordered: most recently asked last

    def key(self, dataset: str, kinds: Iterable[str]) -> tuple[_SetKey, int]:
        """The key of ``dataset``'s items of ``kinds`` (kinds it lacks add nothing), and its revision."""
        info = self._store.dataset(dataset)
        return (dataset, tuple(sorted(k for k in set(kinds) if k in info.kinds))), info.revision

    def _build(self, key: _SetKey) -> SessionSet:
        dataset, kinds = key
        own = [self._prepared.get(dataset, kind).result().blinded for kind in kinds]
        started = time.perf_counter()
        built = make_session_set(own, engine=self._engine, random_bytes=self._random)
        log.info("session-set of dataset %s (%s) ready: %d items and %d decoys in %.2fs", dataset,
                 ",".join(kinds) or "no kinds", built.items, len(built.decoys), time.perf_counter() - started)
        return built

    def _want(self, key: _SetKey) -> None:
        """Remember ``key`` as asked for (caller holds the lock); forget the oldest beyond MAX_READY."""
        self._wanted.pop(key, None)
        self._wanted[key] = None
        while len(self._wanted) > MAX_READY:
            oldest = next(iter(self._wanted))
            del self._wanted[oldest]
            self._ready.pop(oldest, None)

    def _submit(self, key: _SetKey, revision: int) -> None:
        """Build one set for ``key`` in the background (caller holds the lock).

        The build starts once every kind's prepared set is done, chained on
        their futures rather than waiting for them on a preparation thread:
        waiting there could take every thread while the prepared sets
        themselves sit queued behind them.
        """
        if key in self._ready:
            return
        out: Future[SessionSet] = Future()

        def build() -> None:
            try:
                out.set_result(self._build(key))
            except BaseException as exc:  # noqa: BLE001 - resurfaces in take()
                out.set_exception(exc)

        def start() -> None:
            try:
                self._prepared.submit(build)
            except RuntimeError as exc:  # the node is shutting down
                out.set_exception(exc)

        dataset, kinds = key
        pending = [self._prepared.get(dataset, kind) for kind in kinds]
        left = [len(pending)]
        count_lock = threading.Lock()

        def one_done(done: Future) -> None:  # type: ignore[type-arg]
            if done.cancelled():
                # Only the executor's shutdown cancels, and it runs this callback while
                # holding the lock submit() takes: submitting here would deadlock.
                if not out.done():
                    out.set_exception(RuntimeError("the node is shutting down"))
                return
            with count_lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                start()

        for future in pending:
            future.add_done_callback(one_done)
        if not pending:
            start()
        self._ready[key] = (revision, out)

    def take(self, dataset: str, kinds: Iterable[str]) -> SessionSet:
        """A set no session has seen: the ready one if it is of the current revision, else built now."""
        key, revision = self.key(dataset, kinds)
        with self._lock:
            self._want(key)
            ready = self._ready.pop(key, None)
        if ready is not None and ready[0] == revision:
            return ready[1].result()
        return self._build(key)

    def prepare(self, dataset: str, kinds: Iterable[str]) -> None:
        key, revision = self.key(dataset, kinds)
        with self._lock:
            self._want(key)
            self._submit(key, revision)

    def refill(self) -> None:
        """Rebuild, in the background, the sets sessions have taken (called when idle)."""
        with self._lock:
            for key in list(self._wanted):
                try:
                    _, revision = self.key(*key)
                except NotFound:  # the dataset was deleted
                    del self._wanted[key]
                    continue
                stale = self._ready.get(key)
                if stale is not None and stale[0] != revision:
                    del self._ready[key]
                self._submit(key, revision)


@dataclass
class _CountSession:
    id: str
    peer: str
    open: CardinalityOpen
    min_result: int  # [policy] min_result for this peer
    expires: float
    party: CardinalityResponder | None = None  # set once the session-set is taken
    points: int = 0  # in our session-set (our items and the decoys)
    items: int = 0  # our items among them
    release: Release | None = None  # how the count was noised (for the disclosure ledger)
    lock: threading.Lock = field(default_factory=threading.Lock)


class CountResponder:
    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        policy: Policy,
        prepared: PreparedSums,
        engine: ec.EcEngine,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        sampler: Callable[[], NoiseSampler | None] = lambda: None,
    ) -> None:
        self.config = config
        self._sampler = sampler  # read per release: tests inject noise through Node.noise_sampler
        self._store = store
        self._policy = policy
        self._prepared = prepared
        self._engine = engine
        self._clock = clock
        self._random = random_bytes
        self.sets = SessionSets(store=store, prepared=prepared, engine=engine, random_bytes=random_bytes)
        self._table: SessionTable[_CountSession] = SessionTable(
            name="cardinality", store=store, clock=lambda: self._clock(), max_open=config.sessions.max_open,
            max_open_per_peer=config.sessions.max_open_per_peer, log=log, not_found="cardinality session",
        )

    def prepare_exposed(self, datasets: Sequence[str] | None = None) -> None:
        """At serve start: a session-set for the exposed ``datasets`` (default:
        all), each over all its exposed kinds."""
        kinds = self.config.exposed_kinds()
        for dataset in self.config.exposure.datasets if datasets is None else datasets:
            try:
                self.sets.prepare(dataset, kinds)
            except NotFound:
                continue

    def open(self, peer: str, open_: CardinalityOpen) -> CardinalityOpened:
        access = AccessRequest(
            protocol=PROTOCOL, dataset=open_.dataset, kinds=dict(open_.kinds), set_size=open_.set_size, reveal=False,
            prompt_params=open_.prompt_params,
        )
        grant = self._policy.check(peer, access, charge=False)
        now = self._clock()
        sid = uuid.UUID(bytes=self._random(16), version=4).hex
        session = _CountSession(sid, peer, open_, grant.min_result, now + self.config.sessions.ttl_seconds)
        # Admitted and charged to the budget (under the table's lock) before we
        # do any work for it: a peer past its budget costs us no session-set.
        self._table.add(session, now, admit=lambda: self._policy.charge(peer, access))
        self._store.start_session(
            SessionRecord(
                id=sid, role="responder", protocol=PROTOCOL, peer=peer, local_dataset=open_.dataset, peer_dataset="",
                kinds=dict(open_.kinds), mode="count", job_run_id=None, status="open", started_at=now, finished_at=None,
                requester_set_size=open_.set_size, matched_count=None, false_positive_rate=None, error="",
            )
        )
        try:
            session_set = self.sets.take(open_.dataset, open_.kinds)
        except Exception as exc:
            self._table.fail(session, exc)
            raise
        release = functools.partial(release_count, min_result=grant.min_result, noise=self._noise(session))
        session.points, session.items = len(session_set.points), session_set.items
        session.party = CardinalityResponder(
            session_set, engine=self._engine, set_size=open_.set_size, min_result=grant.min_result, release=release,
        )
        log.info("peer %s opened cardinality session %s on dataset %s (%d items)", peer, sid, open_.dataset,
                 open_.set_size)
        return CardinalityOpened(
            session_id=sid, max_set_size=grant.max_set_size, session_ttl_seconds=self.config.sessions.ttl_seconds,
            min_result=grant.min_result,
        )

    def _noise(self, session: _CountSession) -> Callable[[int], int] | None:
        """The count's noise for this session ([privacy]); None when privacy is off.
        The peer's budget is charged first: a refused charge releases nothing."""
        privacy = self.config.privacy
        if not privacy.enabled:
            return None

        def noisy(true_count: int) -> int:
            privacy.charge(self._store, session.peer, PROTOCOL, self._clock())
            session.release = dp_release_count(true_count, epsilon=privacy.epsilon, sampler=self._sampler())
            # Clamped to [0, the requester's set size], where every true count lies: post-processing
            # by a fact the requester announced, no loss of privacy (and release_count clamps at 0).
            return min(session.release.value, session.open.set_size)

        return noisy

    def request_limit(self, peer: str, sid: str) -> int:
        """Largest message this session may receive in one exchange (queries or the re-blinded set)."""
        s = self._table.get(peer, sid)
        return max(s.open.set_size, s.points) * ec.X_BYTES + 8192

    def exchange(self, peer: str, sid: str, payload: bytes) -> ExchangeReply:
        session = self._table.get(peer, sid)
        with session.lock:
            try:
                return self._advance(session, payload)
            except ProtocolViolation as exc:
                self._end(session, "violation", error=str(exc)[:500])
                log.warning("cardinality session %s with %s: PROTOCOL VIOLATION, peer refused from now on: %s",
                            sid, peer, exc)
                raise Refused("PERMISSION_DENIED", f"{exc}; the session is recorded as a protocol violation and "
                              f"{self.config.name} refuses {peer} from now on") from None
            except Exception as exc:
                self._table.fail(session, exc)
                self._refill_if_idle()
                raise

    def _advance(self, s: _CountSession, payload: bytes) -> ExchangeReply:
        step = step_of(payload)
        if s.party is None:
            raise OutOfOrder("the cardinality session is still opening")
        if step == "queries":
            reply = s.party.on_queries(payload)
            # Blind the queries while the requester re-blinds our set.
            self._prepared.submit(s.party.blind_queries)
            # What the requester learns from the session-set, in the ledger's terms.
            learns = {"learns": "our set size (the count follows)", "mode": "count", "dataset": s.open.dataset,
                      "kinds": sorted(s.open.kinds), "queries": s.open.set_size, "our_items": s.items,
                      "decoys": s.points - s.items}
            return ExchangeReply(reply, "session-set", s.points, learns)
        if step == "reblinded":
            reply, outcome = s.party.on_reblinded(payload)
            withheld = outcome.released is None
            self._end(s, "done", matched_count=outcome.true_count,
                      error=f"released as fewer than {s.min_result} ([policy] min_result)" if withheld else "")
            log.info("cardinality session %s with %s done: %d matching items, released %s", s.id, s.peer,
                     outcome.true_count, "nothing" if withheld else outcome.released)
            disclosed: dict[str, object] = ({"withheld": True, "fewer_than": s.min_result} if withheld
                                            else {"count": outcome.released})
            disclosed.update(_noise_record(s.release))
            return ExchangeReply(reply, "count", 0, disclosed)
        raise OutOfOrder(f"step {step!r} is not expected by the responder of a cardinality session")

    def _end(self, s: _CountSession, status: str, *, error: str = "", matched_count: int | None = None) -> None:
        self._table.pop(s.id)
        self._store.finish_session(s.id, status, now=self._clock(), matched_count=matched_count, error=error)
        self._refill_if_idle()

    def _refill_if_idle(self) -> None:
        """With no session open, rebuild the session-sets taken (sessions come first)."""
        if self._table.count() == 0:
            self.sets.refill()

    def close(self, peer: str, sid: str, outcome: str) -> None:
        try:
            session = self._table.get(peer, sid)  # only the owning peer may close it
        except Refused:
            return  # finished sessions are already recorded
        self._end(session, "closed", error=outcome or "closed early")

    def abort(self, peer: str, sid: str, exc: Exception) -> None:
        """End ``sid`` as failed after a broken or hostile stream (if it is ``peer``'s)."""
        self._table.abort(peer, sid, exc)
        self._refill_if_idle()

    def expire(self) -> None:
        """Drop abandoned sessions (the serving node's reaper calls this) and, when
        idle, rebuild taken or outdated session-sets."""
        self._table.expire()
        self._refill_if_idle()

    def open_count(self) -> int:
        return self._table.count()

    def open_by_peer(self) -> dict[str, int]:
        return self._table.count_by_peer()

    def shutdown(self) -> None:
        self._table.close_all()


def _noise_record(r: Release | None) -> dict[str, object]:
    """How a released count was noised, in the disclosure ledger's terms (never the true count).
    Scale and epsilon are text: the audit log holds no floats."""
    if r is None:
        return {"mechanism": "none"}
    return {"mechanism": r.mechanism, "scale": repr(r.scale), "sensitivity": r.sensitivity, "epsilon": str(r.epsilon)}
