"""What an operator watches: a Prometheus endpoint for one node.

``[server] metrics_listen`` (off by default) serves ``/metrics`` in the
Prometheus text format. Everything is about traffic and load, never about
data: peer names, protocols, statuses, counts, bytes and seconds; no dataset
content, no identifier, no session result.

=============================================  ======================================================
metric                                         what
=============================================  ======================================================
``psi_share_sessions{protocol,peer,role,       sessions recorded in the store, by how they ended
outcome}``                                     (``open``, ``done``, ``failed``, ``expired``, ...)
``psi_share_session_seconds{...}``             summary (``_sum``, ``_count``) of finished sessions' durations
``psi_share_open_sessions{protocol,peer}``     responder sessions open now
``psi_share_messages_total{peer,protocol,      messages sent and received
direction}``
``psi_share_bytes_total{peer,protocol,         their serialized bytes
direction}``
``psi_share_refusals_total{peer,status,        error statuses sent: by the RPCs (``where="rpc"``) or the
where,reason}``                                call gate (``where="gate"``, reason unauthenticated / rate /
                                               concurrency), floods counted one by one
``psi_share_calls_in_progress{peer}``          calls a peer has in progress on the federation port
``psi_share_calls_cut_total{peer,reason}``     calls the watchdog cancelled (idle stream, too long)
``psi_share_budget_sessions_used{peer}``       today's (UTC) budget use, and its limits
``psi_share_budget_items_used{peer}``          (``..._limit``), per peer
``psi_share_epsilon_used{peer}``               differential-privacy epsilon spent today, per peer: a hook
                                               (:attr:`NodeMetrics.epsilon_source`) for the DP ledger;
                                               absent until one is set
``psi_share_audit_append_seconds``             histogram: time to append (and fsync) one audit entry
=============================================  ======================================================
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from ..events import Disclosure, Recorder, WireEvent
from ..store import Store
from ..store.db import session_stats, usage

log = logging.getLogger("psi_share.metrics")

PREFIX = "psi_share"


class TimedRecorder:
    """Wraps a recorder (the audit log) and observes how long each append takes."""

    def __init__(self, inner: Recorder, histogram: Histogram) -> None:
        self.inner = inner
        self._histogram = histogram

    def record(self, event: WireEvent) -> None:
        started = time.perf_counter()
        self.inner.record(event)
        self._histogram.observe(time.perf_counter() - started)

    def record_disclosure(self, disclosure: Disclosure) -> None:
        started = time.perf_counter()
        self.inner.record_disclosure(disclosure)
        self._histogram.observe(time.perf_counter() - started)


class NodeMetrics:
    """The node's metrics registry: counters fed by the egress and the call
    gate, gauges read from the store and the session tables when scraped."""

    def __init__(self, node: str, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(f"{PREFIX}_messages", "Messages sent to and received from peers",
                                ["peer", "protocol", "direction"], registry=r)
        self.bytes = Counter(f"{PREFIX}_bytes", "Serialized bytes of the messages sent and received",
                             ["peer", "protocol", "direction"], registry=r)
        self.refusals = Counter(f"{PREFIX}_refusals", "Error statuses sent to callers",
                                ["peer", "status", "where", "reason"], registry=r)
        self.cuts = Counter(f"{PREFIX}_calls_cut", "Calls the watchdog cancelled", ["peer", "reason"], registry=r)
        self.audit_append = Histogram(
            f"{PREFIX}_audit_append_seconds", "Time to append (and fsync) one audit log entry", registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        #: Hook for the differential-privacy ledger: a function returning
        #: today's epsilon spent per peer. None: the gauge has no samples.
        self.epsilon_source: Callable[[], Mapping[str, float]] | None = None
        #: Per-peer daily limits, (sessions, items), for the budget gauges.
        self.budget_limits: Callable[[str], tuple[int, int]] | None = None
        #: Set by the serving node: open sessions per protocol and peer, calls in progress per peer.
        self.open_sessions: Callable[[], Mapping[str, Mapping[str, int]]] | None = None
        self.calls_in_progress: Callable[[], Mapping[str, int]] | None = None
        r.register(_StoreCollector(self, store, clock))

    # -- the egress: every message ---------------------------------------------

    def record(self, event: WireEvent) -> None:
        self.messages.labels(event.peer, event.protocol, event.direction).inc()
        self.bytes.labels(event.peer, event.protocol, event.direction).inc(event.byte_length)
        status = event.parameters.get("status") if event.step.endswith("-status") else None
        if status and not event.step.endswith("-gate-status"):  # the gate reports its own, repeats included
            self.refusals.labels(event.peer, str(status), "rpc", "").inc()

    def record_disclosure(self, disclosure: Disclosure) -> None:
        pass  # results are in the store's sessions; nothing about them is exported

    def timed(self, recorder: Recorder) -> TimedRecorder:
        return TimedRecorder(recorder, self.audit_append)

    # -- the call gate ---------------------------------------------------------------

    def refused(self, peer: str, code: str, reason: str) -> None:
        self.refusals.labels(peer, code, "gate", reason).inc()

    def cut(self, peer: str, reason: str) -> None:
        self.cuts.labels(peer, reason).inc()

    # -- the endpoint ----------------------------------------------------------------------

    def serve(self, address: str) -> MetricsEndpoint:
        """Serve ``/metrics`` on ``address`` (HOST:PORT; port 0 picks one)."""
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        httpd, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
        endpoint = MetricsEndpoint(httpd, thread)
        log.info("metrics endpoint on port %d (http://%s:%d/metrics)", endpoint.port, host, endpoint.port)
        return endpoint


class MetricsEndpoint:
    def __init__(self, httpd: Any, thread: Any) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _StoreCollector(Collector):
    """Gauges computed at scrape time from the store and the live tables."""

    def __init__(self, metrics: NodeMetrics, store: Store, clock: Callable[[], float]) -> None:
        self._m = metrics
        self._store = store
        self._clock = clock

    def describe(self) -> list:  # type: ignore[type-arg]
        return []  # samples depend on the store: never checked at registration

    def collect(self):  # type: ignore[no-untyped-def]
        m = self._m
        sessions = GaugeMetricFamily(f"{PREFIX}_sessions", "Sessions recorded, by protocol, peer, role and outcome",
                                     labels=["protocol", "peer", "role", "outcome"])
        seconds = SummaryMetricFamily(f"{PREFIX}_session_seconds", "Durations of finished sessions",
                                      labels=["protocol", "peer", "role"])
        durations: dict[tuple[str, str, str], list[float]] = {}
        for protocol, peer, role, status, count, total in session_stats(self._store):
            sessions.add_metric([protocol, peer, role, status], count)
            if status not in ("open", "running"):
                d = durations.setdefault((protocol, peer, role), [0.0, 0.0])
                d[0] += count
                d[1] += total
        for labels, (count, total) in sorted(durations.items()):
            seconds.add_metric(list(labels), count_value=count, sum_value=total)
        yield sessions
        yield seconds
        day = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc).strftime("%Y-%m-%d")
        used_s = GaugeMetricFamily(f"{PREFIX}_budget_sessions_used", "Sessions charged today (UTC)", labels=["peer"])
        used_i = GaugeMetricFamily(f"{PREFIX}_budget_items_used", "Items charged today (UTC)", labels=["peer"])
        lim_s = GaugeMetricFamily(f"{PREFIX}_budget_sessions_limit", "sessions_per_day of the peer", labels=["peer"])
        lim_i = GaugeMetricFamily(f"{PREFIX}_budget_items_limit", "items_per_day of the peer", labels=["peer"])
        for peer, (s, i) in usage(self._store, day).items():
            used_s.add_metric([peer], s)
            used_i.add_metric([peer], i)
            if m.budget_limits is not None:
                max_s, max_i = m.budget_limits(peer)
                lim_s.add_metric([peer], max_s)
                lim_i.add_metric([peer], max_i)
        yield from (used_s, used_i, lim_s, lim_i)
        epsilon = GaugeMetricFamily(f"{PREFIX}_epsilon_used", "Differential-privacy epsilon spent today (UTC)",
                                    labels=["peer"])
        if m.epsilon_source is not None:
            for peer, value in sorted(m.epsilon_source().items()):
                epsilon.add_metric([peer], value)
        yield epsilon
        open_ = GaugeMetricFamily(f"{PREFIX}_open_sessions", "Responder sessions open now", labels=["protocol", "peer"])
        if m.open_sessions is not None:
            for protocol, per_peer in sorted(m.open_sessions().items()):
                for peer, count in sorted(per_peer.items()):
                    open_.add_metric([protocol, peer], count)
        yield open_
        calls = GaugeMetricFamily(f"{PREFIX}_calls_in_progress", "Calls in progress on the federation port",
                                  labels=["peer"])
        if m.calls_in_progress is not None:
            for peer, count in sorted(m.calls_in_progress().items()):
                calls.add_metric([peer], count)
        yield calls
