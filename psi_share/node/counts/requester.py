"""The requester side of cardinality: open, send our queries, re-blind the
responder's session-set, store the count it releases.

This is what ``match --count`` and jobs with ``mode = "count"`` run. We learn
only the count (or "fewer than k" when the responder's ``min_result``
withholds it) and the responder's set size; the responder learns our set
size and the exact count. Our own items are the prepared blinded set of the
dataset revision and kinds (``sums.keyring.PreparedSums``), so a node that
prepared them answers faster. A session that fails stores no result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...crypto import ec
from ...errors import LocalProtocolError, PsiShareError
from ...identifiers import canonical_versions
from ...protocols.cardinality import CardinalityOpen, CardinalityRequester, CountResult
from ...store import SessionRecord, Store
from ...transport.client import PeerClient
from ..psi.requester import Laps, MatchOutcome, MatchRequest, _check_kinds
from ..sums.keyring import PreparedSums

log = logging.getLogger("psi_share.count_requester")


def run_count(
    request: MatchRequest,
    *,
    store: Store,
    client: PeerClient,
    prepared: PreparedSums,
    engine: ec.EcEngine,
    clock: Callable[[], float],
    max_set_size: int,
) -> MatchOutcome:
    kinds = _check_kinds(request.kinds)
    lap = Laps()
    own = prepared.get(request.dataset, kinds).result().blinded
    lap("prepare")
    n = len(own.points)
    if n > max_set_size:
        raise LocalProtocolError(
            f"dataset {request.dataset} has {n} items of the chosen kinds; [matching] max_set_size is {max_set_size}"
        )
    party = CardinalityRequester(own, engine=engine, max_peer_set_size=max_set_size)
    opened = client.cardinality_open(
        CardinalityOpen(dataset=request.peer_dataset, kinds=canonical_versions(kinds), set_size=n,
                        job_id=request.job_run_id or "", prompt_params=request.prompt_params)
    )
    lap("open")
    sid = opened.session_id
    store.start_session(
        SessionRecord(
            id=sid, role="requester", protocol="cardinality", peer=request.peer, local_dataset=request.dataset,
            peer_dataset=request.peer_dataset, kinds=canonical_versions(kinds), mode="count",
            job_run_id=request.job_run_id, status="running", started_at=clock(), finished_at=None,
            requester_set_size=n, matched_count=None, false_positive_rate=None, error="",
        )
    )
    try:
        result = _drive(party, client, sid, lap, n)
    except BaseException as exc:
        store.finish_session(sid, "failed", now=clock(), error=str(exc)[:500])
        try:
            client.cardinality_close(sid, "failed")
        except PsiShareError as close_exc:
            log.warning("could not close session %s at %s: %s", sid, client.peer, close_exc)
        raise
    if result.count is None:
        store.finish_session(sid, "done", now=clock(),
                             error=f"fewer than {result.fewer_than} matching items (withheld by {request.peer}'s min_result)")
    else:
        store.finish_session(sid, "done", now=clock(), matched_count=result.count)
    seconds = lap.elapsed()
    log.info("cardinality session %s with %s done in %.2fs: %s matching items", sid, request.peer, seconds,
             result.count if result.count is not None else f"fewer than {result.fewer_than}")
    return MatchOutcome(
        session_id=sid, peer=request.peer, count=result.count, requester_set_size=n, matched_actors=None,
        false_positive_rate=0.0, seconds=seconds, timings=lap.timings, fewer_than=result.fewer_than,
    )


def _drive(party: CardinalityRequester, client: PeerClient, sid: str, lap: Laps, n: int) -> CountResult:
    session_set = client.cardinality_exchange(sid, party.queries(), "queries", items=n)
    lap("queries")
    reblinded = party.on_session_set(session_set)
    lap("reblind")
    reply = client.cardinality_exchange(sid, reblinded, "reblinded", items=party.peer_points)
    lap("count")
    return party.on_count(reply)
