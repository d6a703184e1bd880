"""How long a peer may be silent, and how a silent or dead one is cut.

A slow peer must never lose its call: OpenMined's JavaScript client, single
threaded, spends tens of seconds building a request during which it cannot
read its socket, so it acknowledges nothing. gRPC's defaults cut exactly
such a peer: a server (keepalive 2 h, hence finite) waits only one minute
for the acknowledgement of any HTTP/2 PING it sends (its BDP probes too)
and of any SETTINGS frame, then closes the connection ("ping timeout"),
and every call on it fails. Measured here: a client frozen right after its
first request chunks was cut 60.4 s into its silence, the server's BDP ping
still unacknowledged.

The contract (protos/PROTOCOL.md, "Timeouts and keepalive") therefore sets
every limit from two numbers, ``[transport]`` in the node's config:

* ``peer_silence_seconds`` (S): the longest a peer may stay silent (send
  nothing and acknowledge nothing) in the middle of a call. Transport
  acknowledgement timeouts are 2 S, so no transport limit ever cuts a peer
  silent for less than S. The node itself cuts a request stream that brings
  no chunk for S with DEADLINE_EXCEEDED naming the limit
  (:class:`SilenceLimit`): slow but progressing is kept, silent is cut, and
  the peer reads why once it wakes up.
* ``keepalive_seconds`` (K): after K of quiet on a connection, each side
  sends a keepalive PING to find out whether the other is still there; a
  dead peer is found within K + 2 S.

Nothing here decides policy; it bounds how long a peer can hold a call,
a thread and a connection while saying nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ..errors import Refused

#: Client pings closer together than this (without data in between) are
#: "strikes"; the server closes the connection after gRPC's default of two
#: strikes (GOAWAY ENHANCE_YOUR_CALM "too_many_pings"). Peers must keep their
#: keepalive interval at or above it.
MIN_PING_INTERVAL_SECONDS = 10


@dataclass(frozen=True)
class Liveness:
    """The ``[transport]`` limits and the gRPC channel options derived from them."""

    peer_silence_seconds: float = 600.0
    keepalive_seconds: float = 60.0

    @property
    def ack_timeout_ms(self) -> int:
        """How long either side waits for a PING or SETTINGS acknowledgement."""
        return int(2 * self.peer_silence_seconds * 1000)

    def _common(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", int(self.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", self.ack_timeout_ms),
            # Any other PING (BDP probes) and SETTINGS changes: gRPC's default
            # of one minute is what cut single-threaded clients.
            ("grpc.http2.ping_timeout_ms", self.ack_timeout_ms),
            ("grpc.http2.settings_timeout", self.ack_timeout_ms),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        """Options for a node's server (see the table in protos/PROTOCOL.md)."""
        accept_every = int(min(MIN_PING_INTERVAL_SECONDS, self.keepalive_seconds) * 1000)
        return self._common() + [
            # Ping idle connections too, and accept clients' pings on them at
            # the documented rate instead of gRPC's "one per two hours".
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", accept_every),
            # A connection without calls is closed (gracefully, GOAWAY) after
            # 2 S: longer than any silence the contract allows between calls.
            ("grpc.max_connection_idle_ms", self.ack_timeout_ms),
            # Never share the port with another process: a second node on a
            # busy port must fail to start, not split the connections.
            ("grpc.so_reuseport", 0),
        ]

    def client_options(self) -> list[tuple[str, int]]:
        """Options for a node's channel to a peer."""
        return self._common() + [
            # Our channels live for one session: no pings without a call, but
            # keep pinging through a long answer (gRPC stops after 2 by default).
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
        ]


class PeerSilent(Refused):
    """A peer sent nothing on a request stream for longer than the contract allows."""

    def __init__(self, seconds: float, what: str) -> None:
        super().__init__(
            "DEADLINE_EXCEEDED",
            f"no {what} arrived for {seconds:g} s, the longest a peer may stay silent in a call "
            "([transport] peer_silence_seconds of this node; see protos/PROTOCOL.md); the call is cut",
        )


class SilenceLimit(grpc.ServerInterceptor):
    """Cuts a request stream of ``service`` that brings nothing for ``seconds``.

    The handler reads requests through :func:`watched`: a reader thread
    takes them from gRPC and hands them over one at a time (never more than
    one ahead, so a fast sender gains nothing); the handler waits at most
    ``seconds`` for each. On silence it gets :class:`PeerSilent`, which the
    servicer answers as it answers every refusal (its session, if the
    stream named one, fails with that reason).
    """

    def __init__(self, seconds: float, service: str) -> None:
        self._seconds = seconds
        self._prefix = f"/{service}/"

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = continuation(details)
        if handler is None or not handler.request_streaming or not details.method.startswith(self._prefix):
            return handler
        seconds = self._seconds
        kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.stream_stream:
            inner_ss = handler.stream_stream
            return grpc.stream_stream_rpc_method_handler(
                lambda it, ctx: inner_ss(watched(it, seconds, alive=ctx.is_active), ctx), **kw)
        inner_su = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(
            lambda it, ctx: inner_su(watched(it, seconds, alive=ctx.is_active), ctx), **kw)


_END = object()
_POLL_SECONDS = 0.5  # how often a waiting reader or handler looks whether its call is still on


def watched(
    requests: Iterator[Any], seconds: float, what: str = "chunk", alive: Callable[[], bool] = lambda: True
) -> Iterator[Any]:
    """Yield ``requests``, raising :class:`PeerSilent` when one takes longer than ``seconds``.

    ``alive`` (the call's ``is_active``) ends the reader, and the wait for
    the next request, once the call is over however it ended: a handler that
    stopped reading midway (a streamed request refused at a bad element)
    leaves no thread holding a chunk it can never hand over.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    abandoned = threading.Event()

    def put(item: Any) -> bool:
        while not abandoned.is_set() and alive():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for request in requests:
                if not put(request):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the handler thread, raised there
            put(exc)

    # The reader ends when the call does: gRPC's iterator raises or stops
    # once the handler has answered, and put() gives up once we are gone.
    threading.Thread(target=read, name="psi-stream-reader", daemon=True).start()
    try:
        while True:
            deadline = time.monotonic() + seconds
            while True:
                try:
                    item = handoff.get(timeout=min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                    break
                except queue.Empty:
                    if not alive():
                        return  # the call is over: nobody reads what would follow
                    if time.monotonic() >= deadline:
                        raise PeerSilent(seconds, what) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandoned.set()
