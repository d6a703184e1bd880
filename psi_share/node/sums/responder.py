"""The responder side of intersection-sum sessions (plain Python, no gRPC).

A peer opens a session (policy decides, in :class:`Policy`), then drives it
with one exchange per protocol step; this node answers as the matcher or as
the value holder, whichever the requester chose. Results are stored with the
session's final status in one transaction.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ...crypto import ec, modulus_proof
from ...crypto.paillier import PublicKey
from ...errors import LocalProtocolError, OutOfOrder, Refused
from ...privacy import NoiseSampler
from ...protocols.intersection_sum import (
    Matcher,
    SumOpen,
    SumOpened,
    SumResult,
    ValueHolder,
    ValueHolderParty,
    control,
    parse,
    step_of,
    proof_context,
)
from ...store import SessionRecord, Store, SumResultRecord
from ..config import NodeConfig
from ..policy import AccessRequest, Policy
from ..sessions import SessionTable
from .dp import charge_sum, disclosure, sum_noise
from .keyring import PaillierKeyring, PreparedItems, PreparedSums

log = logging.getLogger("psi_share.sum_responder")


@dataclass(frozen=True)
class ExchangeReply:
    payload: bytes
    step: str
    items: int = 0
    # What the peer learns from this reply, for Egress.disclosed (None: nothing new).
    disclosed: dict | None = None


@dataclass
class _SumSession:
    id: str
    peer: str
    open: SumOpen
    prepared: PreparedItems
    party: Matcher | ValueHolderParty
    expires: float
    key: PublicKey | None = None
    min_result: int = 0  # [policy] min_result for this peer: fewer matches release no sum
    lock: threading.Lock = field(default_factory=threading.Lock)


class SumResponder:
    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        policy: Policy,
        prepared: PreparedSums,
        keyring: PaillierKeyring,
        engine: ec.EcEngine,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        sampler: Callable[[], NoiseSampler | None] = lambda: None,
    ) -> None:
        self.config = config
        self._sampler = sampler  # read per session: tests inject noise through Node.noise_sampler
        self._store = store
        self._policy = policy
        self._prepared = prepared
        self._keyring = keyring
        self._engine = engine
        self._clock = clock
        self._random = random_bytes
        # The clock is read through this responder, so that winding its clock winds the table's.
        self._sessions: SessionTable[_SumSession] = SessionTable(
            name="intersection-sum", store=store, clock=lambda: self._clock(), max_open=config.sessions.max_open,
            max_open_per_peer=config.sessions.max_open_per_peer,
            log=log, not_found="intersection-sum session",
        )

    def open(self, peer: str, open_: SumOpen) -> SumOpened:
        access = AccessRequest(
            protocol="intersection-sum", dataset=open_.dataset, kinds={open_.kind: open_.kind_version},
            set_size=open_.set_size, reveal=False, value_holder=open_.value_holder.value,
        )
        # Charged only once the session is sure to open (below, under the table's lock):
        # an open refused for [sessions] max_open costs the peer nothing.
        grant = self._policy.check(peer, access, charge=False)
        prepared = self._prepared.get(open_.dataset, open_.kind).result()
        limit = self.config.matching.max_set_size
        sid = uuid.UUID(bytes=self._random(16), version=4).hex
        # The value holder's key proof is bound to this session and both names.
        holder, matcher = (peer, self.config.name) if open_.responder_is_matcher else (self.config.name, peer)
        context = proof_context(sid, holder, matcher)
        if open_.responder_is_matcher:
            party: Matcher | ValueHolderParty = Matcher(
                prepared.blinded, engine=self._engine, random_bytes=self._random,
                max_peer_set_size=open_.set_size, key_bits=open_.key_bits, context=context,
            )
            key = None
        else:
            values = prepared.require_values(open_.dataset, open_.kind)
            private = self._keyring.key(open_.key_bits)
            party = ValueHolderParty(
                prepared.blinded, values, key=private, encrypt=lambda v: self._keyring.encrypt(private, v),
                engine=self._engine, random_bytes=self._random, max_peer_set_size=open_.set_size,
                context=context, noise=sum_noise(self.config.privacy, self._sampler()),
            )
            key = private.public
            # Encrypt our values while the requester blinds its set (exchange waits for it).
            self._background(party.prepare_ciphertexts)
        now = self._clock()
        self._sessions.add(_SumSession(
            sid, peer, open_, prepared, party, now + self.config.sessions.ttl_seconds, key, grant.min_result,
        ), now, admit=lambda: self._policy.charge(peer, access))
        self._store.start_session(
            SessionRecord(
                id=sid, role="responder", protocol="intersection-sum", peer=peer, local_dataset=open_.dataset,
                peer_dataset="", kinds={open_.kind: open_.kind_version}, mode=f"values:{open_.value_holder.value}",
                job_run_id=None, status="open", started_at=now, finished_at=None, requester_set_size=open_.set_size,
                matched_count=None, false_positive_rate=None, error="",
            )
        )
        log.info(
            "peer %s opened intersection-sum session %s on dataset %s (%s, values held by the %s, %d items)",
            peer, sid, open_.dataset, open_.kind, open_.value_holder.value, open_.set_size,
        )
        return SumOpened(session_id=sid, max_set_size=limit, session_ttl_seconds=self.config.sessions.ttl_seconds)

    def _background(self, fn: Callable[[], None]) -> None:
        self._prepared.submit(fn)

    def _session(self, peer: str, sid: str) -> _SumSession:
        return self._sessions.get(peer, sid)

    def abort(self, peer: str, sid: str, exc: Exception) -> None:
        """End ``sid`` as failed after a broken or hostile stream (if it is ``peer``'s)."""
        self._sessions.abort(peer, sid, exc)

    def expire(self) -> None:
        """Drop sessions past their time to live (called by the serving node's
        reaper, as for PSI sessions: an abandoned session frees its memory and
        no longer keeps the randomness pool from filling)."""
        self._sessions.expire()

    def request_limit(self, peer: str, sid: str) -> int:
        """Largest message this session may receive in one exchange."""
        s = self._session(peer, sid)
        ct = 2 * s.open.key_bits // 8
        proof = modulus_proof.proof_length(s.open.key_bits)  # the value holder's key proof rides along
        return s.open.set_size * (ec.X_BYTES + ct) + len(s.prepared.blinded.points) * ec.X_BYTES + proof + 8192

    def open_count(self) -> int:
        return self._sessions.count()

    def open_by_peer(self) -> dict[str, int]:
        return self._sessions.count_by_peer()

    def exchange(self, peer: str, sid: str, payload: bytes) -> ExchangeReply:
        session = self._session(peer, sid)
        self._keyring.touch()
        with session.lock, self._keyring.busy():
            try:
                return self._advance(session, payload)
            except Exception as exc:
                self._sessions.fail(session, exc)
                raise

    def _advance(self, s: _SumSession, payload: bytes) -> ExchangeReply:
        step = step_of(payload)
        party = s.party
        own = len(s.prepared.blinded.points)
        if isinstance(party, ValueHolderParty):
            if step == "blinded-set":
                reply = party.on_blinded_set(payload)
                return ExchangeReply(reply, "double-blinded", own, {"set_size": own})
            if step == "encrypted-sum":
                self._withhold_below_minimum(s, parse(payload, "encrypted-sum").count)
                # The peer's budget pays before anything is decrypted (RESOURCE_EXHAUSTED when spent).
                charge_sum(self._store, self.config.privacy, s.peer, self._clock)
                reply, result = party.on_encrypted_sum(payload)
                self._finish(s, result)
                return ExchangeReply(reply, "sum", 0, disclosure(result))
        else:
            if step == "start":
                return ExchangeReply(party.blinded_set(), "blinded-set", own, {"set_size": own})
            if step == "double-blinded":
                reply = party.on_double_blinded(payload)
                self._withhold_below_minimum(s, party.intersection_size)
                return ExchangeReply(reply, "encrypted-sum", 1, {"intersection_size": party.intersection_size, "encrypted_sum": 1})
            if step == "sum":
                result = party.on_sum(payload)
                self._finish(s, result)
                return ExchangeReply(control("ack"), "ack")
        raise OutOfOrder(f"step {step!r} is not expected by this node's side of the session")

    def _withhold_below_minimum(self, s: _SumSession, count: int) -> None:
        """[policy] min_result: below it the sum is never released (the session fails).

        As value holder we refuse before decrypting; as matcher we refuse to
        send the encrypted sum, so the requester learns neither sum nor count.
        (A matcher requester computes the count itself: that is the protocol.)
        """
        if count < s.min_result:
            raise Refused(
                "PERMISSION_DENIED",
                f"fewer than {s.min_result} matching items: {self.config.name} withholds the sum from {s.peer} "
                "([policy] min_result)",
            )

    def _finish(self, s: _SumSession, result: SumResult) -> None:
        self._sessions.pop(s.id)
        self._store.finish_sum_session(
            s.id,
            SumResultRecord(
                kind=s.open.kind, value_holder=s.open.value_holder.value, key_bits=s.open.key_bits,
                intersection_size=result.intersection_size, total=result.sum,
                own_set_size=result.own_set_size, peer_set_size=result.peer_set_size,
            ),
            now=self._clock(),
        )
        log.info("intersection-sum session %s with %s done: %d matching items", s.id, s.peer, result.intersection_size)

    def close(self, peer: str, sid: str, outcome: str) -> None:
        try:
            self._session(peer, sid)  # only the owning peer may close it
        except Refused:
            return  # finished sessions are already recorded
        self._sessions.pop(sid)
        self._store.finish_session(sid, "closed", now=self._clock(), error=outcome or "closed early")

    def shutdown(self) -> None:
        """Record every open session as aborted (the node is shutting down)."""
        self._sessions.close_all()


def value_holder_of(name: str) -> ValueHolder:
    try:
        return ValueHolder(name)
    except ValueError:
        raise LocalProtocolError(f"value holder must be 'requester' or 'responder', not {name!r}") from None
