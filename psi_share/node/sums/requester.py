"""The requester side of intersection-sum: open, drive the steps, store the result.

The requester chooses who holds the values (``value_holder``): ``responder``
asks "how much do the actors we share weigh in *your* data?", ``requester``
offers our own values. Either way both sides learn the intersection size and
the sum (the value holder's released figure: clipped and noised under
[privacy], see :mod:`.dp`), and the session is stored with its result in one
transaction; a failed session stores no result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ...crypto import ec
from ...errors import LocalProtocolError, PsiShareError
from ...privacy import NoiseSampler
from ...identifiers import KINDS
from ...protocols.intersection_sum import (
    EXCHANGES,
    Matcher,
    SumOpen,
    SumResult,
    ValueHolder,
    ValueHolderParty,
    control,
    proof_context,
)
from ...store import SessionRecord, Store, SumResultRecord
from ...transport.client import PeerClient
from ..privacy_config import PrivacyConfig
from ..psi.requester import Laps
from ..sessions import start_requester_session
from .dp import charge_sum, disclosure, sum_noise
from .keyring import PaillierKeyring, PreparedSums

log = logging.getLogger("psi_share.sum_requester")


@dataclass(frozen=True)
class SumRequest:
    peer: str
    dataset: str  # ours
    peer_dataset: str
    kind: str
    value_holder: ValueHolder
    key_bits: int = 2048
    job_run_id: str | None = None


@dataclass(frozen=True)
class SumOutcome:
    session_id: str
    peer: str
    kind: str
    value_holder: str
    intersection_size: int
    sum: int
    own_set_size: int
    peer_set_size: int
    seconds: float
    timings: dict[str, float]


def run_intersection_sum(
    request: SumRequest,
    *,
    store: Store,
    client: PeerClient,
    prepared: PreparedSums,
    keyring: PaillierKeyring,
    engine: ec.EcEngine,
    clock: Callable[[], float],
    random_bytes: Callable[[int], bytes],
    max_set_size: int,
    own_name: str,
    privacy: PrivacyConfig | None = None,
    sampler: NoiseSampler | None = None,
) -> SumOutcome:
    """Run one session; as value holder, clip and noise per ``privacy`` (None:
    [privacy] defaults) and charge the peer's budget before the sum leaves."""
    privacy = privacy or PrivacyConfig()
    if request.kind not in KINDS:
        raise LocalProtocolError(f"unknown identifier kind {request.kind!r} (known: {', '.join(sorted(KINDS))})")
    lap = Laps()
    items = prepared.get(request.dataset, request.kind).result()
    lap("prepare")
    n = len(items.blinded.points)
    if n > max_set_size:
        raise LocalProtocolError(
            f"dataset {request.dataset} has {n} {request.kind} items; [matching] max_set_size is {max_set_size}"
        )
    we_hold = request.value_holder is ValueHolder.REQUESTER
    values = items.require_values(request.dataset, request.kind) if we_hold else None
    open_ = SumOpen(
        dataset=request.peer_dataset, kind=request.kind, kind_version=KINDS[request.kind].version, set_size=n,
        value_holder=request.value_holder, key_bits=request.key_bits, job_id=request.job_run_id or "",
    )
    opened = client.sum_open(open_)
    lap("open")
    sid = opened.session_id
    # The value holder's key proof is bound to this session and both names.
    context = proof_context(sid, own_name if we_hold else request.peer, request.peer if we_hold else own_name)
    if values is not None:
        private = keyring.key(request.key_bits)
        party: Matcher | ValueHolderParty = ValueHolderParty(
            items.blinded, values, key=private, encrypt=lambda v: keyring.encrypt(private, v), engine=engine,
            random_bytes=random_bytes, max_peer_set_size=max_set_size, context=context,
            noise=sum_noise(privacy, sampler),
        )
    else:
        party = Matcher(items.blinded, engine=engine, random_bytes=random_bytes,
                        max_peer_set_size=max_set_size, key_bits=request.key_bits, context=context)
    try:
        start_requester_session(store, SessionRecord(
            id=sid, role="requester", protocol="intersection-sum", peer=request.peer, local_dataset=request.dataset,
            peer_dataset=request.peer_dataset, kinds={request.kind: KINDS[request.kind].version},
            mode=f"values:{request.value_holder.value}", job_run_id=request.job_run_id, status="running",
            started_at=clock(), finished_at=None, requester_set_size=n, matched_count=None,
            false_positive_rate=None, error="",
        ))
    except PsiShareError:
        _close_quietly(client, sid)
        raise
    try:
        pay = lambda: charge_sum(store, privacy, request.peer, clock)  # noqa: E731
        result = _drive(party, client, sid, request.value_holder, lap, n, pay)
    except BaseException as exc:
        store.finish_session(sid, "failed", now=clock(), error=str(exc)[:500])
        _close_quietly(client, sid)
        raise
    store.finish_sum_session(
        sid,
        SumResultRecord(
            kind=request.kind, value_holder=request.value_holder.value, key_bits=request.key_bits,
            intersection_size=result.intersection_size, total=result.sum, own_set_size=result.own_set_size,
            peer_set_size=result.peer_set_size,
        ),
        now=clock(),
    )
    seconds = lap.elapsed()
    log.info("intersection-sum session %s with %s done in %.2fs: %d matching items", sid, request.peer, seconds,
             result.intersection_size)
    return SumOutcome(
        session_id=sid, peer=request.peer, kind=request.kind, value_holder=request.value_holder.value,
        intersection_size=result.intersection_size, sum=result.sum, own_set_size=result.own_set_size,
        peer_set_size=result.peer_set_size, seconds=seconds, timings=lap.timings,
    )


def _drive(party, client: PeerClient, sid: str, holder: ValueHolder, lap, n: int, pay) -> SumResult:  # type: ignore[no-untyped-def]
    steps = EXCHANGES[holder]
    if holder is ValueHolder.RESPONDER:
        assert isinstance(party, Matcher)
        reply = client.sum_exchange(sid, party.blinded_set(), steps[0][0], items=n)
        lap("blinded-set")
        message = party.on_double_blinded(reply)
        lap("match-and-sum")
        reply = client.sum_exchange(sid, message, steps[1][0], items=1)
        result = party.on_sum(reply)
        lap("sum")
        # The responder decrypted and disclosed the sum to us; we tell it nothing more.
        return result
    assert isinstance(party, ValueHolderParty)
    # Encrypt our values while the peer sends its blinded set.
    preparing = threading.Thread(target=party.prepare_ciphertexts, name="sum-encrypt", daemon=True)
    preparing.start()
    their_set = client.sum_exchange(sid, control("start"), steps[0][0])
    preparing.join()
    lap("their-set")
    message = party.on_blinded_set(their_set)
    lap("blind-and-encrypt")
    encrypted_sum = client.sum_exchange(sid, message, steps[1][0], items=n)
    lap("exchange")
    pay()  # the peer's budget pays before we decrypt; spent: the session fails, nothing sent
    sum_message, result = party.on_encrypted_sum(encrypted_sum)
    client.sum_exchange(sid, sum_message, steps[2][0], disclosed=disclosure(result))
    lap("sum")
    return result


def _close_quietly(client: PeerClient, sid: str) -> None:
    try:
        client.sum_close(sid, "failed")
    except PsiShareError as exc:
        log.warning("could not close session %s at %s: %s", sid, client.peer, exc)
