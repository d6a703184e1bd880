"""Fair share of the federation port: who may hold how many calls, for how long.

gRPC Python's sync server runs every call on a thread of one pool, and a
call whose request is a stream holds its thread from the moment it starts,
whether or not the caller ever sends anything. A member that opens idle
streams can take every thread, and then nobody else is served. This module
puts a gate in front of every method on the port (ours, health and
reflection alike), as the outermost server interceptor:

1. **Who.** The caller is authenticated (mutual TLS, CRL, known peer) before
   anything else; a revoked, unknown or non-member caller is refused with
   UNAUTHENTICATED on *every* service, health and reflection included.
2. **How often.** Each peer has a token bucket: ``calls_per_second``
   sustained, ``call_burst`` at once; beyond it RESOURCE_EXHAUSTED.
3. **How many at once.** Each peer may have ``calls_per_peer`` calls in
   progress; beyond it RESOURCE_EXHAUSTED at once, before the call blocks on
   its stream. The pool has ``threads`` threads (``[server] threads``), so a
   peer's calls never take more than its share of them.
4. **How long.** A watchdog thread cancels a call whose request stream
   brings nothing for ``stream_idle_seconds`` while the handler waits for it,
   and any call older than ``call_max_seconds`` (a never-ending
   ``Health.Watch``, a reader that never reads).

Refusals at the gate are status texts on the wire, so they are recorded in
the audit log like every message; a flood of identical refusals must not
become a flood of log entries, though. :class:`RefusalLog` records the first
refusal of each window (``refusal_log_window_seconds``) per caller, call and
text in full, before it is sent; identical ones that follow within the
window are counted and recorded as one entry with ``repeats`` when the
window ends. What a caller learns from the gate: that it is refused, and
which of its own limits it hit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from ..errors import Refused

log = logging.getLogger("psi_share.limits")


@dataclass(frozen=True)
class CallLimits:
    """The ``[server]`` limits on calls (see README, "Configuration")."""

    threads: int = 64  # the federation port's worker threads
    calls_per_peer: int = 8  # calls one peer may have in progress
    calls_per_second: float = 20.0  # sustained call rate per peer
    call_burst: int = 100  # calls a peer may make at once after a quiet spell
    stream_idle_seconds: float = 60.0  # a request stream bringing nothing this long is cut
    call_max_seconds: float = 1800.0  # any call is cut after this
    refusal_log_window_seconds: float = 10.0  # identical gate refusals within it: one entry + a count


class Authenticator(Protocol):
    def authenticate(self, context: grpc.ServicerContext) -> str: ...


class StatusSink(Protocol):
    """Where a refusal's text is recorded before it is sent (the egress)."""

    def send_status(self, code: str, details: str, *, peer: str, protocol: str, step: str,
                    session_id: str = "", repeats: int = 0) -> None: ...


# -- who is calling, for the record -------------------------------------------

NODE_HEADER = "psi-share-node"


def caller_label(context: grpc.ServicerContext) -> str:
    """Who a refused call came from, marked unauthenticated: under mutual TLS
    the name in its certificate (the handshake checked the chain), otherwise
    the name it claimed in metadata; printable, at most 64 characters."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    claimed = names[0].decode("utf-8", "replace") if names else dict(context.invocation_metadata() or ()).get(NODE_HEADER, "")
    cleaned = "".join(ch for ch in str(claimed)[:64] if ch.isprintable())
    return f"unauthenticated:{cleaned or '-'}"


_SERVICES = {
    "psi_share.v1.PsiShareNode": "node",
    "grpc.health.v1.Health": "grpc-health",
    "grpc.reflection.v1alpha.ServerReflection": "grpc-reflection",
    "grpc.reflection.v1.ServerReflection": "grpc-reflection",
}


def protocol_of(method: str) -> tuple[str, str]:
    """(protocol, RPC name) of a full method path, for the audit record."""
    service, _, name = method.lstrip("/").rpartition("/")
    return _SERVICES.get(service, "grpc"), name or "-"


# -- rate and concurrency per peer ------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class PeerCalls:
    """Per-peer admission: a token bucket and a count of calls in progress."""

    def __init__(self, limits: CallLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._active: dict[str, int] = {}

    def admit(self, peer: str) -> None:
        """Count one more call of ``peer`` in progress, or refuse (RESOURCE_EXHAUSTED)."""
        lim = self._limits
        now = self._clock()
        with self._lock:
            if self._active.get(peer, 0) >= lim.calls_per_peer:
                raise Refused("RESOURCE_EXHAUSTED", f"{peer} already has {lim.calls_per_peer} calls in progress "
                              "here, its limit ([server] calls_per_peer); finish or cancel one first")
            bucket = self._buckets.setdefault(peer, _Bucket(float(lim.call_burst), now))
            bucket.tokens = min(float(lim.call_burst), bucket.tokens + (now - bucket.stamp) * lim.calls_per_second)
            bucket.stamp = now
            if bucket.tokens < 1:
                raise Refused("RESOURCE_EXHAUSTED", f"{peer} calls faster than {lim.calls_per_second:g} per second "
                              f"(burst {lim.call_burst}), its limit ([server] calls_per_second); slow down")
            bucket.tokens -= 1
            self._active[peer] = self._active.get(peer, 0) + 1

    def release(self, peer: str) -> None:
        with self._lock:
            left = self._active.get(peer, 0) - 1
            if left > 0:
                self._active[peer] = left
            else:
                self._active.pop(peer, None)

    def active(self) -> dict[str, int]:
        """Calls in progress per peer (for metrics)."""
        with self._lock:
            return dict(self._active)


# -- refusals on record, floods counted ---------------------------------------------


@dataclass
class _Window:
    key: tuple[str, str, str, str, str]  # peer, protocol, step, code, text
    until: float
    repeats: int = 0


class RefusalLog:
    """Records gate refusals: the first of a window in full, the rest as a count."""

    MAX_WINDOWS = 10_000  # bounded even if callers' labels were unbounded (plaintext mode)

    def __init__(self, sink: StatusSink, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str, str, str], _Window] = {}

    def refuse(self, peer: str, protocol: str, step: str, code: str, text: str) -> None:
        """Record that ``code: text`` is about to be sent to ``peer`` (before it is)."""
        key = (peer, protocol, step, code, text)
        now = self._clock()
        with self._lock:
            current = self._windows.get(key)
            if current is not None and now < current.until:
                current.repeats += 1  # the same bytes as the entry that opened the window
                return
            ended = self._take_ended(now) if len(self._windows) < self.MAX_WINDOWS else self._take_all()
            self._windows[key] = _Window(key, now + self._window)
        self._flush(ended)
        self._sink.send_status(code, text, peer=peer, protocol=protocol, step=step)

    def flush(self, *, everything: bool = False) -> None:
        """Record the counts of windows that ended (all of them at shutdown)."""
        with self._lock:
            ended = self._take_all() if everything else self._take_ended(self._clock())
        self._flush(ended)

    def _take_ended(self, now: float) -> list[_Window]:
        ended = [w for w in self._windows.values() if w.until <= now]
        for w in ended:
            del self._windows[w.key]
        return ended

    def _take_all(self) -> list[_Window]:
        ended, self._windows = list(self._windows.values()), {}
        return ended

    def _flush(self, windows: list[_Window]) -> None:
        for w in windows:
            if w.repeats:
                peer, protocol, step, code, text = w.key
                self._sink.send_status(code, text, peer=peer, protocol=protocol, step=step, repeats=w.repeats)


# -- how long ---------------------------------------------------------------------------


@dataclass
class WatchedCall:
    """One admitted call, as the watchdog sees it."""

    peer: str
    method: str
    context: grpc.ServicerContext
    started: float
    last_progress: float
    waiting: bool = False  # the handler is blocked on the next request message
    cut: str = ""  # why the watchdog cancelled it ("" while it runs)
    messages: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def requests(self, iterator: Iterator[Any], clock: Callable[[], float]) -> Iterator[Any]:
        """``iterator``, noting progress and when the handler waits for it."""
        while True:
            self.waiting = True
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.waiting = False
                self.last_progress = clock()
            self.messages += 1
            yield item


class Watchdog:
    """Cancels calls that make no progress or last too long (one thread for all)."""

    def __init__(self, limits: CallLimits, *, clock: Callable[[], float] = time.monotonic,
                 on_cut: Callable[[WatchedCall], None] | None = None, tick: float | None = None) -> None:
        self._limits = limits
        self._clock = clock
        self._on_cut = on_cut
        self._tick = tick or max(0.05, min(1.0, limits.stream_idle_seconds / 4, limits.call_max_seconds / 4))
        self._lock = threading.Lock()
        self._calls: set[int] = set()
        self._by_id: dict[int, WatchedCall] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.also: list[Callable[[], None]] = []  # periodic chores sharing the thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="psi-call-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def watch(self, peer: str, method: str, context: grpc.ServicerContext) -> WatchedCall:
        now = self._clock()
        call = WatchedCall(peer, method, context, now, now)
        with self._lock:
            self._by_id[id(call)] = call
        return call

    def done(self, call: WatchedCall) -> None:
        with self._lock:
            self._by_id.pop(id(call), None)

    def check(self) -> None:
        """Cancel every call past its limits (the thread calls this each tick)."""
        now = self._clock()
        lim = self._limits
        with self._lock:
            calls = list(self._by_id.values())
        for call in calls:
            if call.cut:
                continue
            if call.waiting and now - call.last_progress > lim.stream_idle_seconds:
                call.cut = f"its request stream brought nothing for {lim.stream_idle_seconds:g} s"
            elif now - call.started > lim.call_max_seconds:
                call.cut = f"it lasted longer than {lim.call_max_seconds:g} s"
            else:
                continue
            log.warning("cut a %s call of %s: %s ([server] limits)", call.method, call.peer, call.cut)
            if self._on_cut is not None:
                self._on_cut(call)
            call.context.cancel()  # the handler's next read raises; the peer sees CANCELLED

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.check()
                for chore in self.also:
                    chore()
            except Exception:  # noqa: BLE001 - the watchdog must outlive a bad moment
                log.exception("call watchdog failed a round")


# -- the gate ---------------------------------------------------------------------------------


class GateEvents(Protocol):
    """What the gate reports (metrics); every method is optional to act on."""

    def refused(self, peer: str, code: str, reason: str) -> None: ...

    def cut(self, peer: str, reason: str) -> None: ...


class CallGate(grpc.ServerInterceptor):
    """Authenticate, rate-limit, cap and watch every call on the federation port."""

    def __init__(self, authenticator: Authenticator, sink: StatusSink, limits: CallLimits, *,
                 events: GateEvents | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._auth = authenticator
        self.limits = limits
        self.calls = PeerCalls(limits, clock)
        self.refusals = RefusalLog(sink, limits.refusal_log_window_seconds, clock)
        self._events = events
        self._clock = clock
        self.watchdog = Watchdog(limits, clock=clock, on_cut=self._cut)
        self.watchdog.also.append(self.refusals.flush)

    def start(self) -> None:
        self.watchdog.start()

    def stop(self) -> None:
        self.watchdog.stop()
        self.refusals.flush(everything=True)

    def _cut(self, call: WatchedCall) -> None:
        if self._events is not None:
            self._events.cut(call.peer, "idle" if call.waiting else "too long")

    def _admit(self, context: grpc.ServicerContext, method: str) -> WatchedCall:
        protocol, name = protocol_of(method)
        try:
            peer = self._auth.authenticate(context)
        except Refused as exc:
            self._refuse(context, caller_label(context), protocol, name, exc, "unauthenticated")
        try:
            self.calls.admit(peer)
        except Refused as exc:
            self._refuse(context, peer, protocol, name, exc, "rate" if "per second" in str(exc) else "concurrency")
        return self.watchdog.watch(peer, method, context)

    def _refuse(self, context: grpc.ServicerContext, peer: str, protocol: str, name: str, exc: Refused,
                reason: str) -> None:
        text = str(exc)
        self.refusals.refuse(peer, protocol, f"{name}-gate", exc.code, text)
        if self._events is not None:
            self._events.refused(peer, exc.code, reason)
        context.abort(grpc.StatusCode[exc.code], text)

    def _release(self, call: WatchedCall) -> None:
        self.watchdog.done(call)
        self.calls.release(call.peer)

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        clock = self._clock

        def unary_response(inner, streaming_request: bool):  # type: ignore[no-untyped-def]
            def run(request, context):  # type: ignore[no-untyped-def]
                call = self._admit(context, method)
                try:
                    if streaming_request:
                        request = call.requests(iter(request), clock)
                    return inner(request, context)
                finally:
                    self._release(call)
            return run

        def stream_response(inner, streaming_request: bool):  # type: ignore[no-untyped-def]
            def run(request, context):  # type: ignore[no-untyped-def]
                call = self._admit(context, method)
                try:
                    if streaming_request:
                        request = call.requests(iter(request), clock)
                    yield from inner(request, context)
                finally:
                    self._release(call)
            return run

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary, False), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary, True), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream, False), **kw)
        return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream, True), **kw)
