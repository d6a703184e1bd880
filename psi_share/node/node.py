"""A psi-share node: config, store, responder and requester wired together.

This is the documented Python API the CLI calls; a lab's own pipelines can
import it the same way::

    from psi_share import Node
    with Node.open("/srv/psi-share") as node:
        node.import_file("flagged", Path("flagged.csv"), ImportMode.REPLACE)
        outcome = node.match("lab-b", dataset="flagged", kinds=["email", "phone"])

Clocks and randomness are parameters (defaults: wall clock, ``secrets``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from ..crypto.openmined import OpenMinedEngine
from ..errors import NotFound, PsiShareError
from ..protocols.psi import Mode
from ..store import ImportMode, ImportSummary, Store, import_data_file
from ..store.db import JobRunPeerRecord, interrupt_responder_sessions
from ..transport.client import PeerClient
from ..transport.egress import Egress
from ..transport.server import CertificateAuthenticator, ClaimedNameAuthenticator, create_server
from .config import NodeConfig
from .home import NodeHome
from .jobs import JobRunResult, JobSpec, PeerResult
from .joblock import JobLock
from .retry import JobEvent, RetryPolicy, run_with_retries
from .requester import MatchOutcome, MatchRequest, new_run_id, run_match
from .responder import Responder

if TYPE_CHECKING:
    from .scheduler import JobScheduler

log = logging.getLogger("psi_share.node")


class RunningServer:
    """A started gRPC server; ``stop`` drains it gracefully."""

    def __init__(self, server: grpc.Server, port: int, health, responder: Responder,  # type: ignore[no-untyped-def]
                 *, reap_every: float | None = None) -> None:
        self.server = server
        self.port = port
        self._health = health
        self._responder = responder
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        if reap_every:
            self._reaper = threading.Thread(target=self._reap, args=(reap_every,), name="psi-reaper", daemon=True)
            self._reaper.start()

    def _reap(self, every: float) -> None:
        while not self._stopping.wait(every):
            try:
                self._responder.expire()
                self._responder.sums.expire()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the reaper must outlive a bad moment
                log.exception("expiring abandoned sessions failed")

    def stop(self, grace: float = 5.0) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get
        ``grace`` seconds to finish; sessions still open are recorded aborted."""
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        self._responder.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


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


class Node:
    def __init__(
        self,
        home: NodeHome,
        config: NodeConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        egress: Egress | None = None,
        insecure: bool | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.store = store
        self.clock = clock
        self.random_bytes = random_bytes
        self.egress = egress or Egress()
        workers = config.matching.workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="psi-blind")
        self._setup_executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="psi-setup")
        self.engine = OpenMinedEngine(self._executor, workers)
        self.responder = Responder(
            config=config, store=store, engine=self.engine, setup_executor=self._setup_executor,
            clock=clock, random_bytes=random_bytes,
        )
        self._closed = threading.Event()
        # Plaintext only when asked for explicitly (argument or [tls] insecure).
        self.insecure = config.tls.insecure if insecure is None else insecure
        self._tls = None
        self.audit = self._open_audit()
        self._init_aggregates()

    def _open_audit(self):  # type: ignore[no-untyped-def]
        """The compliance audit recorder on this node's egress (None when disabled)."""
        if not self.config.audit.enabled:
            log.warning("[audit] enabled = false: messages to peers are NOT recorded in the audit log")
            return None
        from ..audit.log import AuditLog
        from ..audit.recorder import AuditRecorder

        log_ = AuditLog(
            self.home.audit_path, node=self.config.name, key=self.home.audit_key(),
            checkpoint_every=self.config.audit.checkpoint_every,
            transcript_max_bytes=self.config.audit.transcript_max_bytes,
        )
        recorder = AuditRecorder(log_, transcripts=self.config.audit.transcripts)
        self.egress.add_recorder(recorder)
        return recorder

    @property
    def tls(self):  # type: ignore[no-untyped-def]
        """This node's checked TLS material (loaded on first use); None when insecure."""
        if self.insecure:
            return None
        if self._tls is None:
            self._tls = self.home.load_tls(self.config)
        return self._tls

    def _warn_insecure(self, what: str) -> None:
        if self.insecure:
            log.warning(
                "INSECURE: %s in plaintext WITHOUT authentication; anyone on the network can read the "
                "traffic and claim to be any peer. Never use --insecure outside a test on one machine.", what,
            )

    @classmethod
    def open(cls, path: Path | str, **kwargs) -> Node:  # type: ignore[no-untyped-def]
        home = NodeHome(Path(path))
        config = home.load_config()
        return cls(home, config, Store(home.store_path), **kwargs)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._close_aggregates()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._setup_executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        if self.audit is not None:
            self.audit.log.close()  # a signed checkpoint over everything this node recorded

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data --------------------------------------------------------------

    def import_file(
        self, dataset: str, path: Path, mode: ImportMode | None, *, rejects: Path | None = None
    ) -> ImportSummary:
        """Import a CSV/TSV/JSONL file: all or nothing, or with ``rejects``
        the valid rows, the refused ones listed in that file (store/importer.py).

        ``mode`` must be given when the dataset already holds actors; None
        then raises rather than guessing between replacing and appending.
        """
        summary = import_data_file(
            self.store, dataset, path, ctx=self.config.canonicalization, mode=mode, now=self.clock(), rejects=rejects
        )
        log.info("imported %s into dataset %s: %d rows, %d refused, %d identifiers added",
                 path.name, dataset, summary.rows, summary.rejected, summary.identifiers_added)
        return summary

    # -- peers -------------------------------------------------------------

    def peer_client(self, peer: str, *, timeout: float = 600.0) -> PeerClient:
        record = self.store.peer(peer)
        self._warn_insecure(f"calling peer {peer}")
        return PeerClient(
            peer, record.address, local_name=self.config.name, egress=self.egress, timeout=timeout,
            tls=self.tls, insecure=self.insecure,
        )

    # -- matching ----------------------------------------------------------

    def match(
        self,
        peer: str,
        *,
        dataset: str = "flagged",
        peer_dataset: str | None = None,
        kinds: Sequence[str],
        mode: Mode = Mode.REVEAL,
        job_run_id: str | None = None,
    ) -> MatchOutcome:
        self.store.dataset(dataset)  # NotFound before we contact anyone
        with self.peer_client(peer) as client:
            return run_match(
                MatchRequest(peer, dataset, peer_dataset or dataset, tuple(kinds), mode, job_run_id),
                store=self.store, client=client, engine=self.engine, clock=self.clock,
                random_bytes=self.random_bytes, max_set_size=self.config.matching.max_set_size,
            )

    def run_job(
        self,
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
            return self._run_aggregate_job(
                job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for, lock=lock,
            )
        if self.config.name not in job.participants:
            raise PsiShareError(f"job {job.name!r} does not list this node ({self.config.name}) as a participant")
        peers = job.peers_for(self.config.name)
        for p in peers:
            self.store.peer(p)  # every participant must be a known peer before anything starts
        self.store.dataset(job.dataset)
        if lock is None:
            with self.job_lock(job.name) as held:
                return self.run_job(
                    job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for,
                    on_event=on_event, cancel=cancel, lock=held,
                )
        self.store.mark_interrupted_runs(job.name, now=self.clock())
        run_id = new_run_id(self.random_bytes)
        started_at = self.clock()
        self.store.start_job_run(
            run_id, job.name, job.parameters(), now=started_at, triggered_by=triggered_by, scheduled_for=scheduled_for,
        )
        if job.transcripts and self.audit is not None:
            self.audit.keep_transcripts_for(run_id)  # (a run id is never reused)
        try:
            by_peer = run_with_retries(
                peers,
                lambda peer: self.match(
                    peer, dataset=job.dataset, peer_dataset=job.peer_dataset, kinds=job.kinds,
                    mode=job.mode, job_run_id=run_id,
                ),
                policy=RetryPolicy.from_config(self.config.jobs),
                on_event=_with_on_peer(on_event, on_peer), cancel=cancel,
            )
        finally:
            if self.audit is not None:
                self.audit.stop_transcripts_for(run_id)
        results: list[PeerResult] = []
        for peer in peers:
            result = by_peer[peer]
            if result.status != "ok":
                log.warning("job %s: match with %s failed: %s", job.name, peer, result.error)
            self.store.record_job_run_peer(JobRunPeerRecord(
                run_id, peer, result.status, result.attempts, result.session_id, result.count,
                result.matched_actors, result.seconds, result.error,
            ))
            results.append(result)
        failed = [r for r in results if r.status != "ok"]
        status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
        error = "; ".join(f"{r.peer}: {r.error}" for r in failed)
        finished_at = self.clock()
        self.store.finish_job_run(run_id, status, now=finished_at, error=error)
        return JobRunResult(
            run_id, job.name, status, tuple(results), self.attribution(run_id), mode=job.mode.value,
            started_at=started_at, finished_at=finished_at, triggered_by=triggered_by,
        )

    def job_lock(self, job_name: str) -> JobLock:
        """Take ``job_name``'s lock now (raises JobBusy when a run holds it)."""
        return JobLock.acquire(self.home.path, job_name, now=self.clock())

    def attribution(self, run_id: str) -> dict[str, tuple[str, ...]]:
        """actor_id -> the peers that matched it in one job run."""
        sessions = [s.id for s in self.store.sessions(job_run_id=run_id) if s.role == "requester" and s.status == "done"]
        by_actor: dict[str, set[str]] = {}
        for m in self.store.matches(sessions):
            by_actor.setdefault(m.actor_id, set()).add(m.peer)
        return {a: tuple(sorted(p)) for a, p in sorted(by_actor.items())}

    # -- scheduled jobs (periodic jobs) -------------------------------------

    def start_scheduler(self, *, on_result: Callable[[JobRunResult], None] | None = None) -> JobScheduler | None:
        """Start running the scheduled job files of ``[jobs] scheduled``; None when there are none."""
        from .scheduler import JobScheduler, find_scheduled_jobs

        jobs = find_scheduled_jobs(self.home.path, self.config.jobs.scheduled)
        if not jobs:
            return None
        scheduler = JobScheduler(self, jobs, on_result=on_result)
        scheduler.start()
        return scheduler

    # -- serving -----------------------------------------------------------

    def serve(self, address: str | None = None, *, prepare: bool = True) -> RunningServer:
        """Start serving peers (returns at once); prepare exposed filters in the background."""
        known = lambda: {p.name for p in self.store.peers()}  # noqa: E731
        tls = self.tls
        if tls is None:
            self._warn_insecure("serving peers")
            auth = ClaimedNameAuthenticator(known)
        else:
            auth = CertificateAuthenticator(known, tls.ca_cert, tls.crl)
            if tls.crl is not None and tls.crl.stale(dt.datetime.now(dt.timezone.utc)):
                log.warning("the revocation list %s is past its next update (%s): ask the federation CA for a "
                            "fresh one; revocations made since are not known here", tls.crl.path, tls.crl.next_update)
        server, port, health = create_server(self.responder, self.egress, auth, address or self.config.listen, tls=tls)
        interrupted = interrupt_responder_sessions(self.store, now=self.clock())
        if interrupted:
            log.warning("%d session(s) were still open when this node last stopped; recorded as interrupted", interrupted)
        server.start()
        log.info("node %s serving on port %d", self.config.name, port)
        if prepare:
            self.responder.prepare_exposed()
        if self.store.has_amounts():  # only a node that can hold values needs the pool
            self.ec_engine.warm_up()
            self.keyring.start_filling()
            if prepare:
                self.prepared_sums.prepare_valued(self.config.exposure.datasets)
        reap_every = min(30.0, max(0.5, self.config.sessions.ttl_seconds / 4))
        return RunningServer(server, port, health, self.responder, reap_every=reap_every)

    # -- Paillier aggregates (intersection-sum, federation totals) -----------

    def _init_aggregates(self) -> None:
        """The EC worker processes, the Paillier keyring and pool, prepared
        blinded sets, and the responders of both aggregate protocols."""
        from ..crypto.ec import EcEngine
        from .aggregates import PaillierKeyring, PreparedSums
        from .federation import FederationService
        from .sum_sessions import SumResponder

        self.ec_engine = EcEngine(self.config.matching.workers)
        self.keyring = PaillierKeyring(
            self.config, clock=self.clock, random_bytes=self.random_bytes, executor=self.ec_engine.executor,
        )
        self._sum_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sum-prepare")
        self.prepared_sums = PreparedSums(
            store=self.store, engine=self.ec_engine, executor=self._sum_executor, clock=self.clock,
            random_bytes=self.random_bytes, lifetime=self.config.sessions.setup_lifetime_seconds,
        )
        # The servicer reaches both through the responder (responder.sums / .federation).
        self.responder.sums = SumResponder(  # type: ignore[attr-defined]
            config=self.config, store=self.store, policy=self.responder.policy, prepared=self.prepared_sums,
            keyring=self.keyring, engine=self.ec_engine, clock=self.clock, random_bytes=self.random_bytes,
        )
        self.federation = FederationService(
            config=self.config, store=self.store, policy=self.responder.policy,
            peer_client=self.peer_client, clock=self.clock, random_bytes=self.random_bytes,
        )
        self.responder.federation = self.federation  # type: ignore[attr-defined]
        # The pool fills in idle time only: never while a session is open here.
        self.keyring.is_idle = lambda: self.responder.sums.open_count() == 0  # type: ignore[attr-defined]

    def _run_aggregate_job(
        self,
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
        if self.config.name not in job.participants:
            raise PsiShareError(f"job {job.name!r} does not list this node ({self.config.name}) as a participant")
        peers = job.peers_for(self.config.name)
        for p in peers:
            self.store.peer(p)
        if lock is None:  # never two runs of one job at once, as for PSI jobs
            with self.job_lock(job.name) as held:
                return self._run_aggregate_job(
                    job, on_peer, triggered_by=triggered_by, scheduled_for=scheduled_for, lock=held,
                )
        self.store.mark_interrupted_runs(job.name, now=self.clock())
        run_id = new_run_id(self.random_bytes)
        self.store.start_job_run(
            run_id, job.name, job.parameters(), now=self.clock(), triggered_by=triggered_by, scheduled_for=scheduled_for,
        )
        if job.transcripts and self.audit is not None:
            self.audit.keep_transcripts_for(run_id)
        try:
            result = self._run_aggregate_job_steps(job, run_id, peers, on_peer)
            return dataclasses.replace(result, triggered_by=triggered_by)
        finally:
            if job.transcripts and self.audit is not None:
                self.audit.stop_transcripts_for(run_id)

    def _run_aggregate_job_steps(
        self, job: JobSpec, run_id: str, peers: tuple[str, ...], on_peer: Callable[[PeerResult], None] | None
    ) -> JobRunResult:
        if job.protocol == "federation-total":
            started = time.perf_counter()
            try:
                outcome = self.federation_total(job.metric, job.participants, min_contributors=job.min_contributors,
                                                job_run_id=run_id)
            except PsiShareError as exc:
                self.store.finish_job_run(run_id, "failed", now=self.clock(), error=str(exc))
                failed = PeerResult(",".join(peers), "failed", None, None, None, time.perf_counter() - started, str(exc))
                return JobRunResult(run_id, job.name, "failed", (failed,), protocol=job.protocol)
            self.store.finish_job_run(run_id, "ok", now=self.clock())
            result = PeerResult(",".join(peers), "ok", outcome.run_id, outcome.contributors, None,
                                time.perf_counter() - started, total=outcome.total)
            return JobRunResult(run_id, job.name, "ok", (result,), protocol=job.protocol,
                                federation_total=outcome.total, contributors=outcome.contributors)
        self.store.dataset(job.dataset)
        sums: dict[str, int] = {}

        def one(peer: str):  # type: ignore[no-untyped-def]
            o = self.intersection_sum(
                peer, dataset=job.dataset, peer_dataset=job.peer_dataset, kind=job.kinds[0],
                value_holder=job.value_holder, key_bits=job.key_bits or None, job_run_id=run_id,
            )
            sums[peer] = o.sum
            # run_with_retries records what a match reports; the sum is added below.
            return _SumAsMatch(o.session_id, o.intersection_size)

        by_peer = run_with_retries(
            peers, one, policy=RetryPolicy.from_config(self.config.jobs), on_event=_with_on_peer(None, on_peer),
        )
        results: list[PeerResult] = []
        for peer in peers:
            result = dataclasses.replace(by_peer[peer], total=sums.get(peer))
            if result.status != "ok":
                log.warning("job %s: intersection-sum with %s failed: %s", job.name, peer, result.error)
            self.store.record_job_run_peer(JobRunPeerRecord(
                run_id, peer, result.status, result.attempts, result.session_id, result.count, None,
                result.seconds, result.error,
            ))
            results.append(result)
        failed = [r for r in results if r.status != "ok"]
        status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
        self.store.finish_job_run(run_id, status, now=self.clock(), error="; ".join(f"{r.peer}: {r.error}" for r in failed))
        return JobRunResult(run_id, job.name, status, tuple(results), protocol=job.protocol)

    def _close_aggregates(self) -> None:
        self.responder.sums.shutdown()  # type: ignore[attr-defined]
        self.keyring.close()
        self._sum_executor.shutdown(wait=True, cancel_futures=True)
        self.ec_engine.close()

    def prepare_sum(self, dataset: str, kind: str) -> None:
        """Blind ``dataset``'s items of ``kind`` now (otherwise the first session does)."""
        self.prepared_sums.get(dataset, kind).result()

    def intersection_sum(
        self,
        peer: str,
        *,
        dataset: str,
        kind: str,
        value_holder: str = "responder",
        peer_dataset: str | None = None,
        key_bits: int | None = None,
        job_run_id: str | None = None,
    ):  # type: ignore[no-untyped-def]
        """Intersection-sum with ``peer`` on one identifier kind; returns a SumOutcome."""
        from .sum_requester import SumRequest, run_intersection_sum
        from .sum_sessions import value_holder_of

        self.store.dataset(dataset)
        request = SumRequest(
            peer, dataset, peer_dataset or dataset, kind, value_holder_of(value_holder),
            key_bits or self.config.paillier.key_bits, job_run_id,
        )
        with self.peer_client(peer) as client, self.keyring.busy():
            return run_intersection_sum(
                request, store=self.store, client=client, prepared=self.prepared_sums, keyring=self.keyring,
                engine=self.ec_engine, clock=self.clock, random_bytes=self.random_bytes,
                max_set_size=self.config.matching.max_set_size,
            )

    def federation_total(self, metric: str, participants: Sequence[str], *, min_contributors: int | None = None,
                         job_run_id: str | None = None):  # type: ignore[no-untyped-def]
        """Run a federation total as its initiator; returns a FederationOutcome."""
        return self.federation.run_total(metric, participants, min_contributors=min_contributors, job_run_id=job_run_id)


