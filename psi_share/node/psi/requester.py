"""The requester side: match one of our datasets against a peer's.

Drives :class:`~psi_share.protocols.psi.PsiRequester` over a
:class:`~psi_share.transport.client.PeerClient` and stores the outcome. A
session's results are written together with its final status, in one
transaction; a session that fails stores no result at all.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import closing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ...crypto.openmined import OpenMinedEngine, new_private_key
from ...errors import LocalProtocolError, PsiShareError
from ...identifiers import KINDS, canonical_versions
from ...crypto import prefetch
from ...protocols.psi import STREAM_BATCH_ITEMS, Mode, PsiOutcome, PsiRequester, below_minimum
from ...prompts.signature import KIND as PROMPT_KIND
from ...store import SessionRecord, Store
from ..prompts.matches import record_prompt_matches
from ...transport.client import PeerClient
from .itemsets import build_item_set
from ..prompts.matches import match_records
from ..sessions import start_requester_session

log = logging.getLogger("psi_share.requester")


@dataclass(frozen=True)
class MatchRequest:
    peer: str
    dataset: str  # ours
    peer_dataset: str  # theirs
    kinds: tuple[str, ...]
    mode: Mode = Mode.REVEAL
    job_run_id: str | None = None
    # Our prompt parameter set (PromptParams.describe), when kinds include "prompt".
    prompt_params: Mapping[str, object] | None = None


@dataclass(frozen=True)
class MatchOutcome:
    session_id: str
    peer: str
    count: int | None  # None when withheld: fewer than ``fewer_than``
    requester_set_size: int
    matched_actors: int | None  # None in count mode
    false_positive_rate: float
    seconds: float
    timings: dict[str, float]
    fewer_than: int = 0  # the responder's minimum k when the result was withheld
    prompt_templates: int | None = None  # prompt clusters with a matching band (reveal with the prompt kind)


class Laps:
    """Wall-clock timings of a session's steps: ``lap("name")`` closes the
    step that began at the previous lap (or at creation)."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._last
        self._last = now

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_match(
    request: MatchRequest,
    *,
    store: Store,
    client: PeerClient,
    engine: OpenMinedEngine,
    clock: Callable[[], float],
    random_bytes: Callable[[int], bytes],
    max_set_size: int,
) -> MatchOutcome:
    kinds = _check_kinds(request.kinds)
    rows = store.identifiers(request.dataset, kinds)
    item_set = build_item_set(rows)
    if len(item_set) > max_set_size:
        raise LocalProtocolError(
            f"dataset {request.dataset} has {len(item_set)} items of the chosen kinds; "
            f"[matching] max_set_size is {max_set_size}"
        )
    requester = PsiRequester(
        item_set.items,
        dataset=request.peer_dataset,
        kinds=canonical_versions(kinds),
        mode=request.mode,
        key=new_private_key(random_bytes),
        engine=engine,
        job_id=request.job_run_id or "",
        prompt_params=request.prompt_params,
    )
    lap = Laps()
    opened = client.psi_open(requester.open)
    lap("open")
    requester.on_opened(opened)
    local_id = opened.session_id  # the responder's id names the session on both sides
    try:
        start_requester_session(store, SessionRecord(
            id=local_id, role="requester", protocol="psi", peer=request.peer, local_dataset=request.dataset,
            peer_dataset=request.peer_dataset, kinds=dict(requester.open.kinds), mode=request.mode.value,
            job_run_id=request.job_run_id, status="running", started_at=clock(), finished_at=None,
            requester_set_size=len(item_set), matched_count=None,
            false_positive_rate=opened.false_positive_rate, error="",
        ))
    except PsiShareError:
        _close_quietly(client, opened.session_id, "failed")
        raise
    log.info(
        "PSI session %s with %s: %d items of dataset %s against %s (%s)",
        local_id, request.peer, len(item_set), request.dataset, request.peer_dataset, request.mode.value,
    )
    try:
        if request.mode.reveal:
            outcome = _streamed(requester, client, opened.session_id, len(item_set), lap)
        else:  # OpenMined's count mode answers sorted: nothing to overlap
            blinded = requester.request()
            lap("blind")
            requester.on_response(client.psi_process(opened.session_id, blinded, len(item_set)))
            lap("process")
            with closing(client.psi_setup_pieces(opened.session_id)) as setup:  # a bucketed one: bucket by bucket
                outcome = requester.on_setup_pieces(setup)
            lap("setup+intersect")
    except BaseException as exc:
        store.finish_session(local_id, "failed", now=clock(), error=str(exc)[:500])
        _close_quietly(client, opened.session_id, "failed")
        raise
    if below_minimum(outcome, opened.min_result):
        # The responder's policy: below k, only "fewer than k" is released.
        # Nothing else is stored or returned (not the count, not the matches).
        k = opened.min_result
        store.finish_session(local_id, "done", now=clock(), error=f"fewer than {k} matching items (withheld by {request.peer}'s min_result)")
        _close_quietly(client, opened.session_id, "done")
        log.info("PSI session %s with %s done: fewer than %d matching items (withheld)", local_id, request.peer, k)
        return MatchOutcome(
            session_id=local_id, peer=request.peer, count=None, requester_set_size=len(item_set),
            matched_actors=None, false_positive_rate=outcome.false_positive_rate,
            seconds=lap.elapsed(), timings=lap.timings, fewer_than=k,
        )
    matches: list[tuple[str, str]] = []
    if outcome.matched is not None:
        for index in outcome.matched:
            matches.extend(item_set.owners[index])
    prompts = []
    if PROMPT_KIND in kinds and outcome.matched is not None:
        prompts = match_records(local_id, request.peer, rows, {item_set.items[i] for i in outcome.matched})
    with store.transaction() as db:  # the session's end and all it learned, together
        store.finish_session(local_id, "done", now=clock(), matched_count=outcome.count, matches=matches)
        record_prompt_matches(db, local_id, prompts)
    _close_quietly(client, opened.session_id, "done")
    seconds = lap.elapsed()
    matched_actors = len({a for a, _ in matches}) if outcome.matched is not None else None
    log.info(
        "PSI session %s with %s done in %.2fs (%s): %d matching items%s",
        local_id, request.peer, seconds, ", ".join(f"{k} {v:.2f}s" for k, v in lap.timings.items()), outcome.count,
        "" if matched_actors is None else f", {matched_actors} actors",
    )
    return MatchOutcome(
        session_id=local_id, peer=request.peer, count=outcome.count, requester_set_size=len(item_set),
        matched_actors=matched_actors, false_positive_rate=outcome.false_positive_rate,
        seconds=seconds, timings=lap.timings,
        prompt_templates=len(prompts) if PROMPT_KIND in kinds and outcome.matched is not None else None,
    )


def _streamed(requester: PsiRequester, client: PeerClient, sid: str, items: int, lap: Laps) -> PsiOutcome:
    """Reveal mode: our request and its response overlapped
    (``protocols/psi_stream.py``): the peer raises our first batches while
    we still blind the last, and we unblind what comes back while it still
    works. Responses are read off the wire on a thread of their own, so the
    peer is never held up by our lookups. A single setup is fetched and
    checked first and each answered batch looked up in it; a bucketed one
    (``requester.setup_last``) is read after the response, bucket by bucket
    as its chunks arrive, so that we keep our own points and one bucket,
    never the whole setup (54 MB at 10M items, and its decoded hashes)."""
    if not requester.setup_last:
        requester.take_setup(client.psi_setup(sid))
        lap("setup")
    exchange = requester.stream(STREAM_BATCH_ITEMS)
    pieces, cancel = client.psi_process_stream(sid, exchange.request_bytes, exchange.request_pieces(), items)
    try:
        for piece in prefetch(pieces, depth=64):
            exchange.feed(piece)
    except BaseException:
        cancel()  # the peer stops working for us, and the reading thread ends
        raise
    if not requester.setup_last:
        outcome = requester.on_streamed(exchange)
        lap("blind+process+intersect")
        return outcome
    lap("blind+process")
    with closing(client.psi_setup_pieces(sid)) as setup:
        outcome = requester.on_streamed(exchange, setup)
    lap("setup+intersect")
    return outcome


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if not kinds:
        raise LocalProtocolError("choose at least one identifier kind")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise LocalProtocolError(f"unknown identifier kind(s): {', '.join(unknown)} (known: {', '.join(sorted(KINDS))})")
    return tuple(sorted(set(kinds)))


def _close_quietly(client: PeerClient, session_id: str, outcome: str) -> None:
    try:
        client.psi_close(session_id, outcome)
    except PsiShareError as exc:
        log.warning("could not close session %s at %s: %s", session_id, client.peer, exc)


def new_run_id(random_bytes: Callable[[int], bytes]) -> str:
    return uuid.UUID(bytes=random_bytes(16), version=4).hex
