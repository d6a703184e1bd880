"""A psi-share node: config, store, responder and requester wired together.

This is the documented Python API the CLI calls; a lab's own pipelines can
import it the same way::

    from psi_share import Node
    with Node.open("/srv/psi-share") as node:
        node.import_file("flagged", Path("flagged.csv"), ImportMode.REPLACE)
        outcome = node.match("lab-b", dataset="flagged", kinds=["email", "phone"])

A node runs one-peer operations (match, intersection-sum, one federation
total) and serves peers; jobs (several peers, schedules, history) are a
client of this API in :mod:`psi_share.jobs`. Clocks and randomness are
parameters (defaults: wall clock, ``secrets``).
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

import grpc

from ..crypto.openmined import OpenMinedEngine
from ..errors import LocalProtocolError, NotFound, PsiShareError
from ..names import NAME_PATTERN
from ..privacy import NoiseSampler
from ..protocols.psi import Mode
from ..store import ImportMode, ImportSummary, Store, import_data_file
from ..store.db import interrupt_responder_sessions
from ..transport.client import PeerClient
from ..transport.egress import Egress
from ..transport.limits import CallGate
from ..transport.probes import create_health_listener
from ..transport.server import CertificateAuthenticator, ClaimedNameAuthenticator, create_server
from .config import NodeConfig
from .home import NodeHome
from .metrics import MetricsEndpoint, NodeMetrics
from .psi.requester import MatchOutcome, MatchRequest, run_match
from .psi.responder import Responder
from .witness import Witness

log = logging.getLogger("psi_share.node")


class RunningServer:
    """A started gRPC server; ``stop`` drains it gracefully.

    ``health_port`` and ``metrics_port`` are the local health listener's and
    the metrics endpoint's ports (None when off).
    """

    def __init__(self, server: grpc.Server, port: int, health, responder: Responder,  # type: ignore[no-untyped-def]
                 *, reap_every: float | None = None, gate: CallGate | None = None,
                 health_server: tuple[grpc.Server, int] | None = None, metrics: MetricsEndpoint | None = None) -> None:
        self.server = server
        self.port = port
        self.gate = gate
        self._health_server = health_server[0] if health_server else None
        self.health_port = health_server[1] if health_server else None
        self._metrics = metrics
        self.metrics_port = metrics.port if metrics else None
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
                self._responder.counts.expire()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the reaper must outlive a bad moment
                log.exception("expiring abandoned sessions failed")

    def stop(self, grace: float = 5.0) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get
        ``grace`` seconds to finish; sessions still open are recorded aborted."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.gate is not None:
            self.gate.stop()  # and records the counts of refusal floods still open
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        if self._metrics is not None:
            self._metrics.stop()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        self._responder.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


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
        # Noise for released figures ([privacy]); None: OpenDP's exact samplers. Tests inject their own.
        self.noise_sampler: NoiseSampler | None = None
        workers = config.matching.workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="psi-blind")
        self._setup_executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="psi-setup")
        self.engine = OpenMinedEngine(self._executor, workers, runner=self._runner(config))
        self.responder = Responder(
            config=config, store=store, engine=self.engine, setup_executor=self._setup_executor,
            clock=clock, random_bytes=random_bytes,
        )
        self._closed = threading.Event()
        # Plaintext only when asked for explicitly (argument or [tls] insecure).
        self.insecure = config.tls.insecure if insecure is None else insecure
        self._tls = None
        self.metrics = NodeMetrics(config.name, store, clock=clock)
        self.audit = self._open_audit()
        self.egress.add_recorder(self.metrics)
        self._init_aggregates()
        # Signed audit heads exchanged after every session (both sides; see node/witness.py).
        self.witness = Witness(name=config.name, store=store, audit_log=self.audit.log if self.audit else None,
                               tls=lambda: self.tls, clock=clock)
        self.responder.witness = self.witness  # type: ignore[attr-defined]  # the servicer reaches it there

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
        self.egress.add_recorder(self.metrics.timed(recorder))  # the append latency is a metric
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

    @staticmethod
    def _runner(config: NodeConfig):  # type: ignore[no-untyped-def]
        """``[engine]``: None for the local worker pool, else the Dask runner
        (imported only then: ``psi-share[dask]`` is optional)."""
        if config.engine.kind != "dask":
            return None
        from ..crypto.cluster import DaskRunner

        log.info("engine: Dask scheduler %s", config.engine.scheduler)
        return DaskRunner(config.engine.scheduler)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._close_aggregates()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._setup_executor.shutdown(wait=True, cancel_futures=True)
        getattr(self.engine.runner, "close", lambda: None)()
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

    def import_prompts(self, dataset: str, path: Path, mode: ImportMode | None, *, rejects: Path | None = None,
                       benign: Path | None = None):  # type: ignore[no-untyped-def]
        """Import a prompt file (JSONL) as band items of kind ``prompt``, after the
        exclusions, deduplication and the cap of ``[prompts]`` (node/prompts/importer.py)."""
        from .prompts.importer import import_prompt_file

        summary = import_prompt_file(self.store, dataset, path, config=self.config.prompts, home=self.home.path,
                                     mode=mode, now=self.clock(), rejects=rejects, benign=benign)
        r = summary.report
        log.info("imported prompts %s into dataset %s: %d prompts, %d refused, %d removed as benign, "
                 "%d clusters in %d chains, %d band items", path.name, dataset, r.prompts, summary.rejected,
                 r.excluded_prompts, r.clusters, summary.chains, r.items)
        return summary

    # -- peers -------------------------------------------------------------

    def peer_client(self, peer: str, *, timeout: float = 600.0) -> PeerClient:
        record = self.store.peer(peer)
        self._warn_insecure(f"calling peer {peer}")
        return PeerClient(
            peer, record.address, local_name=self.config.name, egress=self.egress, timeout=timeout,
            tls=self.tls, insecure=self.insecure, liveness=self.config.transport,
            after_session=self.witness.exchange,
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
        """Match with ``peer``: which of our items it holds (``REVEAL``, OpenMined
        PSI), or only how many (``COUNT``: the cardinality protocol, in which the
        peer counts and releases nothing but the count)."""
        self.store.dataset(dataset)  # NotFound before we contact anyone
        _check_peer_dataset(peer_dataset or dataset)
        # Prompt band items mean something only under the same parameters: the
        # responder checks ours (ConfigError here when [prompts] is off).
        prompt_params = self.config.prompts.params.describe() if "prompt" in kinds else None
        request = MatchRequest(peer, dataset, peer_dataset or dataset, tuple(kinds), mode, job_run_id, prompt_params)
        if mode is Mode.COUNT:  # counts only: the responder counts (protocol "cardinality")
            from .counts.requester import run_count

            with self.peer_client(peer) as client, self.keyring.busy():
                return run_count(request, store=self.store, client=client, prepared=self.prepared_sums,
                                 engine=self.ec_engine, clock=self.clock, max_set_size=self.config.matching.max_set_size)
        with self.peer_client(peer) as client:
            return run_match(
                request,
                store=self.store, client=client, engine=self.engine, clock=self.clock,
                random_bytes=self.random_bytes, max_set_size=self.config.matching.max_set_size,
            )

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
        # One silence limit: the gate's watchdog is the backstop of [transport] peer_silence_seconds
        # (the SilenceLimit interceptor cuts first, with DEADLINE_EXCEEDED naming the limit).
        silence = self.config.transport.peer_silence_seconds
        limits = dataclasses.replace(self.config.server.limits, stream_idle_seconds=silence + max(1.0, silence / 10))
        gate = CallGate(auth, self.egress, limits, events=self.metrics)
        server, port, health = create_server(self.responder, self.egress, auth, address or self.config.listen,
                                             gate=gate, tls=tls, liveness=self.config.transport)
        interrupted = interrupt_responder_sessions(self.store, now=self.clock())
        if interrupted:
            log.warning("%d session(s) were still open when this node last stopped; recorded as interrupted", interrupted)
        server.start()
        gate.start()
        self.metrics.calls_in_progress = gate.calls.active
        log.info("node %s serving on port %d", self.config.name, port)
        health_server, metrics = self._local_listeners(health)
        # Prepared at start: only what some peer's policy may ask for (a count-only
        # session-set of 2M items is minutes of both cores; nobody may need it).
        granted = self.responder.policy.datasets_granted
        if prepare:
            self.responder.prepare_exposed(granted("psi"))
            self.responder.counts.prepare_exposed(granted("cardinality"))  # type: ignore[attr-defined]
        if self.store.has_amounts():  # only a node that can hold values needs the pool
            self.ec_engine.warm_up()
            self.keyring.start_filling()
            if prepare:
                self.prepared_sums.prepare_valued(granted("intersection-sum"))
        reap_every = min(30.0, max(0.5, self.config.sessions.ttl_seconds / 4))
        return RunningServer(server, port, health, self.responder, reap_every=reap_every, gate=gate,
                             health_server=health_server, metrics=metrics)

    def _local_listeners(self, health):  # type: ignore[no-untyped-def]
        """The loopback health listener and the metrics endpoint, when configured."""
        cfg = self.config.server
        health_server = None
        if cfg.health_listen:
            health_server = create_health_listener(health, cfg.health_listen)
            health_server[0].start()
            log.info("health (plaintext, local probes only) on port %d", health_server[1])
        m = self.metrics
        m.open_sessions = lambda: {"psi": self.responder.open_by_peer(),
                                   "intersection-sum": self.responder.sums.open_by_peer(),  # type: ignore[attr-defined]
                                   "cardinality": self.responder.counts.open_by_peer()}  # type: ignore[attr-defined]
        m.budget_limits = lambda peer: (self.responder.policy.for_peer(peer).sessions_per_day,
                                        self.responder.policy.for_peer(peer).items_per_day)
        if self.config.privacy.enabled:  # today's epsilon per peer, from the ledger in the store
            m.epsilon_source = self._epsilon_today
        return health_server, (m.serve(cfg.metrics_listen) if cfg.metrics_listen else None)

    def _epsilon_today(self) -> dict[str, float]:
        from ..privacy import spending, utc_day

        spent: dict[str, float] = {}
        for s in spending(self.store, day=utc_day(self.clock())):
            spent[s.peer] = spent.get(s.peer, 0.0) + float(s.epsilon)
        return spent

    # -- Paillier aggregates (intersection-sum, federation totals) -----------

    def _init_aggregates(self) -> None:
        """The EC worker processes, the Paillier keyring and pool, prepared
        blinded sets, and the responders of both aggregate protocols."""
        from ..crypto.ec import EcEngine
        from .counts.responder import CountResponder
        from .federation import FederationService
        from .federation.credentials import load_credentials
        from .sums.keyring import PaillierKeyring, PreparedSums
        from .sums.responder import SumResponder

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
            sampler=lambda: self.noise_sampler,
        )
        self.responder.counts = CountResponder(  # type: ignore[attr-defined]
            config=self.config, store=self.store, policy=self.responder.policy, prepared=self.prepared_sums,
            engine=self.ec_engine, clock=self.clock, random_bytes=self.random_bytes,
            sampler=lambda: self.noise_sampler,
        )
        # Routes, member keys and finals are signed with the node's federation certificate's key.
        # DP: psi_share/privacy/ wires its per-figure noise here (FederationService's figure_noise).
        self.federation = FederationService(
            config=self.config, store=self.store, policy=self.responder.policy,
            peer_client=self.peer_client, credentials=lambda: load_credentials(self.tls, self.clock),
            clock=self.clock, random_bytes=self.random_bytes,
        )
        if self.config.privacy.enabled:  # each member adds its share of the total's noise
            from .federation.figures import distributed_noise
            self.federation.set_figure_noise(distributed_noise(
                self.config.privacy, self.store, self.config.name, lambda: self.noise_sampler, self.clock))
        self.responder.federation = self.federation  # type: ignore[attr-defined]
        # The pool fills in idle time only: never while a session is open here.
        self.keyring.is_idle = lambda: (self.responder.sums.open_count()  # type: ignore[attr-defined]
                                        + self.responder.counts.open_count() == 0)  # type: ignore[attr-defined]

    def _close_aggregates(self) -> None:
        self.responder.sums.shutdown()  # type: ignore[attr-defined]
        self.responder.counts.shutdown()  # type: ignore[attr-defined]
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
        from .sums.requester import SumRequest, run_intersection_sum
        from .sums.responder import value_holder_of

        self.store.dataset(dataset)
        _check_peer_dataset(peer_dataset or dataset)
        request = SumRequest(
            peer, dataset, peer_dataset or dataset, kind, value_holder_of(value_holder),
            key_bits or self.config.paillier.key_bits, job_run_id,
        )
        with self.peer_client(peer) as client, self.keyring.busy():
            return run_intersection_sum(
                request, store=self.store, client=client, prepared=self.prepared_sums, keyring=self.keyring,
                engine=self.ec_engine, clock=self.clock, random_bytes=self.random_bytes,
                max_set_size=self.config.matching.max_set_size, own_name=self.config.name,
                privacy=self.config.privacy, sampler=self.noise_sampler,
            )

    def federation_total(self, metric: str, participants: Sequence[str], *, min_contributors: int | None = None,
                         job_run_id: str | None = None):  # type: ignore[no-untyped-def]
        """Run a federation total as its initiator; returns a FederationOutcome."""
        return self.federation.run_total(metric, participants, min_contributors=min_contributors, job_run_id=job_run_id)




def _check_peer_dataset(name: str) -> None:
    """A peer dataset name leaves the node: refuse anything but a name, before any contact.

    The message never repeats the value (it may be an identifier typed by mistake).
    """
    if not NAME_PATTERN.match(name):
        raise LocalProtocolError(
            "--peer-dataset (peer_dataset) is not a dataset name: use lowercase letters, digits, '-' or '_', "
            "starting with a letter (at most 63 characters); nothing was sent"
        )
