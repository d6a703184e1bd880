"""Running a job: this node's side of it, one peer at a time, through the Node API.

A job is a client of the node: it takes the job's lock, records the run in
the node's history, and calls :meth:`Node.match`, :meth:`Node.intersection_sum`
or :meth:`Node.federation_total` for each other participant, retrying a peer
that cannot be reached (``[jobs]`` backoff). What each peer learns is what
those one-peer operations reveal; a job adds only the record of which peers
matched which of our actors (:func:`~psi_share.jobs.history.run_attribution`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from ..errors import PsiShareError
from ..node.node import Node
from ..node.psi.requester import new_run_id
from ..store import JobRunPeerRecord
from .history import run_attribution
from .lock import JobLock
from .retry import JobEvent, RetryPolicy, run_with_retries
from .spec import JobRunResult, JobSpec, PeerResult

log = logging.getLogger("psi_share.node")


@dataclasses.dataclass(frozen=True)
class _SumAsMatch:
    """An intersection-sum outcome in the shape run_with_retries records."""

    session_id: str
    count: int
    matched_actors: None = None


def _with_on_peer(
    on_event: Callable[[JobEvent], None] | None, on_peer: Callable[[PeerResult], None] | None
) -> Callable[[JobEvent], None] | None:
    """Call ``on_peer`` as each peer finishes (after its retries), besides ``on_event``."""
    if on_peer is None:
        return on_event

    def both(event: JobEvent) -> None:
        if on_event is not None:
            on_event(event)
        if event.kind == "done" and event.result is not None:
            on_peer(event.result)

    return both


def run_job(
    node: Node,
    job: JobSpec,
    on_peer: Callable[[PeerResult], None] | None = None,
    *,
    triggered_by: str = "manual",
    scheduled_for: float | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    cancel: threading.Event | None = None,
    lock: JobLock | None = None,
) -> JobRunResult:
    """Run this node's side of ``job``: match against every other participant.

    Holds the job's lock for the whole run (taken here unless the caller
    passes one it holds): a second run of the same job raises
    :class:`~psi_share.errors.JobBusy` instead of overlapping. A peer that
    cannot be reached is retried with backoff (``[jobs]`` settings) and
    then recorded as failed with its reason; the run is then "partial"
    (or "failed" when no peer succeeded), never "ok". ``cancel`` (set on
    shutdown) ends the backoff waits early.
    """
    if job.protocol != "psi":
        return _run_aggregate_job(
            node, job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for, lock=lock,
        )
    if node.config.name not in job.participants:
        raise PsiShareError(f"job {job.name!r} does not list this node ({node.config.name}) as a participant")
    peers = job.peers_for(node.config.name)
    for p in peers:
        node.store.peer(p)  # every participant must be a known peer before anything starts
    node.store.dataset(job.dataset)
    if lock is None:
        with job_lock(node, job.name) as held:
            return run_job(
                node, job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for,
                on_event=on_event, cancel=cancel, lock=held,
            )
    node.store.mark_interrupted_runs(job.name, now=node.clock())
    run_id = new_run_id(node.random_bytes)
    started_at = node.clock()
    node.store.start_job_run(
        run_id, job.name, job.parameters(), now=started_at, triggered_by=triggered_by, scheduled_for=scheduled_for,
    )
    if job.transcripts and node.audit is not None:
        node.audit.keep_transcripts_for(run_id)  # (a run id is never reused)
    try:
        by_peer = run_with_retries(
            peers,
            lambda peer: node.match(
                peer, dataset=job.dataset, peer_dataset=job.peer_dataset, kinds=job.kinds,
                mode=job.mode, job_run_id=run_id,
            ),
            policy=RetryPolicy.from_config(node.config.jobs),
            on_event=_with_on_peer(on_event, on_peer), cancel=cancel,
        )
    finally:
        if node.audit is not None:
            node.audit.stop_transcripts_for(run_id)
    results: list[PeerResult] = []
    for peer in peers:
        result = by_peer[peer]
        if result.status != "ok":
            log.warning("job %s: match with %s failed: %s", job.name, peer, result.error)
        node.store.record_job_run_peer(JobRunPeerRecord(
            run_id, peer, result.status, result.attempts, result.session_id, result.count,
            result.matched_actors, result.seconds, result.error,
        ))
        results.append(result)
    failed = [r for r in results if r.status != "ok"]
    status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
    error = "; ".join(f"{r.peer}: {r.error}" for r in failed)
    finished_at = node.clock()
    node.store.finish_job_run(run_id, status, now=finished_at, error=error)
    return JobRunResult(
        run_id, job.name, status, tuple(results), run_attribution(node.store, run_id), mode=job.mode.value,
        started_at=started_at, finished_at=finished_at, triggered_by=triggered_by,
    )


def job_lock(node: Node, job_name: str) -> JobLock:
    """Take ``job_name``'s lock now (raises JobBusy when a run holds it)."""
    return JobLock.acquire(node.home.path, job_name, now=node.clock())


def _run_aggregate_job(
    node: Node,
    job: JobSpec,
    on_peer: Callable[[PeerResult], None] | None,
    *,
    triggered_by: str = "manual",
    scheduled_for: float | None = None,
    lock: JobLock | None = None,
) -> JobRunResult:
    """An intersection-sum job (one session per other participant) or a
    federation-total job (this node initiates one total). Locked, recorded
    and schedulable exactly like a PSI job."""
    if node.config.name not in job.participants:
        raise PsiShareError(f"job {job.name!r} does not list this node ({node.config.name}) as a participant")
    peers = job.peers_for(node.config.name)
    for p in peers:
        node.store.peer(p)
    if lock is None:  # never two runs of one job at once, as for PSI jobs
        with job_lock(node, job.name) as held:
            return _run_aggregate_job(
                node, job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for, lock=held,
            )
    node.store.mark_interrupted_runs(job.name, now=node.clock())
    run_id = new_run_id(node.random_bytes)
    node.store.start_job_run(
        run_id, job.name, job.parameters(), now=node.clock(), triggered_by=triggered_by, scheduled_for=scheduled_for,
    )
    if job.transcripts and node.audit is not None:
        node.audit.keep_transcripts_for(run_id)
    try:
        result = _run_aggregate_job_steps(node, job, run_id, peers, on_peer)
        return dataclasses.replace(result, triggered_by=triggered_by)
    finally:
        if job.transcripts and node.audit is not None:
            node.audit.stop_transcripts_for(run_id)


def _run_aggregate_job_steps(
    node: Node, job: JobSpec, run_id: str, peers: tuple[str, ...], on_peer: Callable[[PeerResult], None] | None
) -> JobRunResult:
    if job.protocol == "federation-total":
        started = time.perf_counter()
        try:
            outcome = node.federation_total(job.metric, job.participants, min_contributors=job.min_contributors,
                                            job_run_id=run_id)
        except PsiShareError as exc:
            node.store.finish_job_run(run_id, "failed", now=node.clock(), error=str(exc))
            failed = PeerResult(",".join(peers), "failed", None, None, None, time.perf_counter() - started, str(exc))
            return JobRunResult(run_id, job.name, "failed", (failed,), protocol=job.protocol)
        node.store.finish_job_run(run_id, "ok", now=node.clock())
        result = PeerResult(",".join(peers), "ok", outcome.run_id, outcome.contributors, None,
                            time.perf_counter() - started, total=outcome.total)
        return JobRunResult(run_id, job.name, "ok", (result,), protocol=job.protocol,
                            federation_total=outcome.total, contributors=outcome.contributors)
    node.store.dataset(job.dataset)
    sums: dict[str, int] = {}

    def one(peer: str):  # type: ignore[no-untyped-def]
        o = node.intersection_sum(
            peer, dataset=job.dataset, peer_dataset=job.peer_dataset, kind=job.kinds[0],
            value_holder=job.value_holder, key_bits=job.key_bits or None, job_run_id=run_id,
        )
        sums[peer] = o.sum
        # run_with_retries records what a match reports; the sum is added below.
        return _SumAsMatch(o.session_id, o.intersection_size)

    by_peer = run_with_retries(
        peers, one, policy=RetryPolicy.from_config(node.config.jobs), on_event=_with_on_peer(None, on_peer),
    )
    results: list[PeerResult] = []
    for peer in peers:
        result = dataclasses.replace(by_peer[peer], total=sums.get(peer))
        if result.status != "ok":
            log.warning("job %s: intersection-sum with %s failed: %s", job.name, peer, result.error)
        node.store.record_job_run_peer(JobRunPeerRecord(
            run_id, peer, result.status, result.attempts, result.session_id, result.count, None,
            result.seconds, result.error,
        ))
        results.append(result)
    failed = [r for r in results if r.status != "ok"]
    status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
    node.store.finish_job_run(run_id, status, now=node.clock(), error="; ".join(f"{r.peer}: {r.error}" for r in failed))
    return JobRunResult(run_id, job.name, status, tuple(results), protocol=job.protocol)
