"""Calling a peer node: one channel per peer, every request through the egress."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator

import grpc
from cryptography import x509

from ..errors import ConfigError, PeerRefused, PeerUnavailable, RemoteProtocolError, UntrustedPeer
from ..names import CANARY_DATASET_PATTERN
from ..prompts import wire as prompt_wire
from ..protocols import PROTOCOL_VERSION
from ..protocols.cardinality import CardinalityOpen, CardinalityOpened
from ..protocols.intersection_sum import SumOpen, SumOpened, ValueHolder
from ..protocols.psi import PsiOpen, PsiOpened
from ..v1 import node_pb2 as pb
from ..v1 import node_pb2_grpc as pb_grpc
from .chunks import MIN_CHUNK_BYTES, chunk_payloads, stream_chunks, to_chunks
from .egress import SESSION_ID, Egress
from .liveness import Liveness
from .server import MAX_MESSAGE_BYTES, NODE_HEADER

# CANCELLED: the peer is shutting down (or dropped the call); retrying later is the fix.
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
# Calls that are no session: they never trigger the after-session hook.
_NOT_SESSIONS = frozenset({"node", "witness"})


class PeerClient:
    """A connection to one peer, speaking as ``local_name``.

    ``max_reply_bytes`` bounds how much a peer may send back in one
    reassembled message (a filter or a response).

    With ``tls`` (:class:`psi_share.pki.NodeTls`) the connection is mutual
    TLS: we present our certificate, and the server must present one from
    the federation CA that names ``peer`` (gRPC checks the DNS SAN against
    ``ssl_target_name_override``); before the first call the server's
    certificate is also checked against our revocation list. Plaintext needs
    ``insecure=True``; neither is an error.

    ``liveness`` sets keepalive and how long the peer may stay silent before
    the connection is given up (protos/PROTOCOL.md, "Timeouts and keepalive");
    ``timeout`` is the deadline of each long call (streams, federation hops).

    ``after_session(client)`` runs when a ``with`` block that carried a
    protocol session (any request but NodeInfo and the witness calls) ends
    without an error: the node hands the peer its signed audit head there,
    for every protocol alike.
    """

    def __init__(
        self,
        peer: str,
        address: str,
        *,
        local_name: str,
        egress: Egress,
        timeout: float = 600.0,
        max_reply_bytes: int = 1 << 31,
        tls=None,  # type: ignore[no-untyped-def]
        insecure: bool = False,
        liveness: Liveness = Liveness(),
        after_session: Callable[[PeerClient], None] | None = None,
    ) -> None:
        self.peer = peer
        self._after_session = after_session
        self._protocols: set[str] = set()  # protocols of the requests sent through this client
        self.address = address
        self._egress = egress
        self._timeout = timeout
        self._max_reply = max_reply_bytes
        self._tls = tls
        self._checked = threading.Event() if tls is not None else None
        self._check_lock = threading.Lock()
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *liveness.client_options(),
        ]
        if tls is not None:
            self._metadata: tuple[tuple[str, str], ...] = ()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
            )
            options.append(("grpc.ssl_target_name_override", peer))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        elif insecure:
            self._metadata = ((NODE_HEADER, local_name),)
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            raise ConfigError(f"no TLS material to reach peer {peer}: install this node's certificate "
                              "('psi-share pki install DIR') or, for a test on one machine, use --insecure")
        self._stub = pb_grpc.PsiShareNodeStub(self._channel)
        # session id -> the parameters bounding what the peer learns from us
        # in that session (recorded with every message we send in it).
        self._session_parameters: dict[str, dict[str, object]] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None and self._after_session is not None and self._protocols - _NOT_SESSIONS:
                self._after_session(self)
        finally:
            self.close()

    def _error(self, exc: grpc.RpcError) -> Exception:
        code = exc.code()
        if code in _UNAVAILABLE:
            return PeerUnavailable(self.peer, f"{self.address}: {code.name}: {exc.details()}")
        return PeerRefused(self.peer, code.name, exc.details() or "")

    def check_server_certificate(self) -> None:
        """Check the certificate the peer's server presents against our CRL.

        gRPC Python verifies the chain, the validity period and the name, but
        offers no revocation hook on the client side; this opens one TLS
        connection of its own (same CA, same name check, our client
        certificate) and refuses a revoked server before anything is sent.
        """
        if self._checked is None or self._checked.is_set():
            return
        with self._check_lock:
            if self._checked.is_set():
                return
            serial = self.server_certificate().serial_number
            if self._tls.crl is not None and self._tls.crl.is_revoked(serial):
                raise UntrustedPeer(self.peer, f"the server at {self.address} presents certificate {serial:x}, "
                                    "which the federation CA has revoked")
            self._checked.set()

    def server_certificate(self, *, verify: bool = True) -> x509.Certificate:
        """The certificate the peer's server presents, from one TLS connection
        of our own (our client certificate, ALPN h2; no message is sent).

        With ``verify`` the TLS library checks that it chains to the
        federation CA and names the peer (UntrustedPeer otherwise); without,
        it is returned as presented, for a diagnosis that checks each of
        those itself (``peers check``). PeerUnavailable when nothing answers.
        """
        tls = self._tls
        if tls is None:
            raise ConfigError(f"no TLS material to reach peer {self.peer}: plaintext has no certificates")
        host, _, port = self.address.rpartition(":")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=tls.ca_pem.decode())
        ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
        ctx.set_alpn_protocols(["h2"])
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(self._timeout, 15)) as raw:
                with ctx.wrap_socket(raw, server_hostname=self.peer) as conn:
                    der = conn.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            raise UntrustedPeer(self.peer, f"the server at {self.address} presents no federation certificate "
                                f"naming {self.peer} ({exc.verify_message})") from None
        except (OSError, ValueError) as exc:
            raise PeerUnavailable(self.peer, f"{self.address}: {exc}") from None
        if not der:
            raise UntrustedPeer(self.peer, f"the server at {self.address} presents no certificate")
        return x509.load_der_x509_certificate(der)

    def _check_session_id(self, sid: str) -> None:
        """A session id from the peer is echoed in every later message: it must be an id, nothing else."""
        if not SESSION_ID.match(sid):
            raise RemoteProtocolError(f"peer {self.peer} opened a session without a valid id "
                                      "(letters, digits, '-' or '_', 1 to 64 characters)")

    def _send(self, message, step: str, session_id: str = "", **kw):  # type: ignore[no-untyped-def]
        self.check_server_certificate()
        protocol = kw.pop("protocol", "psi")
        self._protocols.add(protocol)
        return self._egress.send(message, peer=self.peer, protocol=protocol, step=step, session_id=session_id, **kw)

    def wait_ready(self, timeout: float) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise PeerUnavailable(self.peer, f"{self.address}: not reachable within {timeout:g}s") from None

    def node_info(self) -> pb.NodeInfoResponse:
        request = self._send(pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION), "info-request", protocol="node")
        try:
            reply = self._stub.NodeInfo(request, metadata=self._metadata, timeout=min(self._timeout, 30))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="node", step="info")
        return reply

    def psi_open(self, open_: PsiOpen) -> PsiOpened:
        # A canary (peers check) sends synthetic items only: its records say so.
        canary = CANARY_DATASET_PATTERN.fullmatch(open_.dataset) is not None
        request = self._send(
            pb.PsiOpenRequest(
                protocol_version=open_.protocol_version,
                dataset=open_.dataset,
                kinds=[pb.KindVersion(kind=k, version=v) for k, v in sorted(open_.kinds.items())],
                set_size=open_.set_size,
                reveal_intersection=open_.mode.reveal,
                job_id=open_.job_id,
                setup_buckets_version=open_.setup_buckets_version,
                prompt_params=prompt_wire.to_message(open_.prompt_params),
            ),
            "open",
            items=open_.set_size,
            job_id=open_.job_id,
            parameters={"mode": open_.mode.value, "set_size": open_.set_size, "curve": "P-256",
                        **({"canary": True} if canary else {})},
        )
        try:
            reply = self._stub.PsiOpen(request, metadata=self._metadata, timeout=min(self._timeout, 60))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(
            reply, peer=self.peer, protocol="psi", step="opened", session_id=reply.session_id, job_id=open_.job_id
        )
        self._check_session_id(reply.session_id)
        self._session_parameters[reply.session_id] = {
            "mode": open_.mode.value, "set_size": open_.set_size, "curve": "P-256",
            "false_positive_rate": reply.false_positive_rate, "dataset": open_.dataset,
            **({"canary": True} if canary else {}),
        }
        # The responder learns our set size (and which kinds we match on).
        self._egress.disclosed(
            peer=self.peer, protocol="psi", session_id=reply.session_id, job_id=open_.job_id,
            result={"learns": "our canary set size (synthetic items)" if canary else "our set size",
                    "requester_set_size": open_.set_size, "kinds": sorted(open_.kinds),
                    **({"canary": True} if canary else {})},
        )
        return PsiOpened(
            session_id=reply.session_id,
            false_positive_rate=reply.false_positive_rate,
            max_set_size=reply.max_set_size,
            openmined_psi_version=reply.openmined_psi_version,
            session_ttl_seconds=reply.session_ttl_seconds,
            protocol_version=reply.protocol_version,
            min_result=reply.min_result,
            responder_set_size=reply.responder_set_size,
            setup_buckets_version=reply.setup_buckets_version,
            bucket_count=reply.bucket_count,
        )

    def psi_process(self, session_id: str, request: bytes, items: int) -> bytes:
        replies, _ = self.psi_process_stream(session_id, len(request), [request], items)
        return b"".join(replies)

    def psi_process_stream(
        self, session_id: str, total: int, pieces: Iterable[bytes], items: int
    ) -> tuple[Iterator[bytes], Callable[[], None]]:
        """Send a Request of ``total`` bytes as its ``pieces`` are produced;
        return the Response's payloads, a chunk at a time as they arrive (each
        chunk recorded and checked first), and a function that cancels the
        call (safe from any thread: the consumer of the payloads may be on
        another). The two directions overlap. An error producing the pieces
        is raised as itself, not as the call's."""
        failure: list[Exception] = []

        def outgoing() -> Iterator[pb.Chunk]:
            try:
                for chunk in stream_chunks(session_id, total, pieces):
                    yield self._send(
                        chunk, "request-chunk", session_id, items=items if chunk.index == 0 else 0,
                        parameters=self._session_parameters.get(session_id, {}),
                    )
            except Exception as exc:  # ours; not GeneratorExit, which is gRPC closing a failed call's requests
                failure.append(exc)
                raise

        replies = self._stub.PsiProcess(outgoing(), metadata=self._metadata, timeout=self._timeout)

        def received() -> Iterator[bytes]:
            try:
                yield from self._payloads(replies, session_id, "response-chunk")
            except grpc.RpcError as exc:
                if failure:
                    raise failure[0] from None
                raise self._error(exc) from None
            finally:
                replies.cancel()  # a no-op once the call ended; stops the peer when we gave up midway

        return received(), replies.cancel

    def psi_setup(self, session_id: str) -> bytes:
        return b"".join(self.psi_setup_pieces(session_id))

    def psi_setup_pieces(self, session_id: str) -> Iterator[bytes]:
        """The responder's setup, a chunk's payload at a time as they arrive
        (each chunk recorded and checked first): a bucketed setup is read
        bucket by bucket, never whole. Closing the iterator early cancels
        the call."""
        request = self._send(
            pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=session_id), "setup-request", session_id,
            parameters=self._session_parameters.get(session_id, {}),
        )
        try:
            replies = self._stub.PsiSetup(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        try:
            yield from self._payloads(replies, session_id, "setup-chunk")
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            replies.cancel()  # a no-op once the call ended; stops the peer when we gave up midway

    def psi_close(self, session_id: str, outcome: str) -> None:
        request = self._send(
            pb.PsiCloseRequest(protocol_version=PROTOCOL_VERSION, session_id=session_id, outcome=outcome), "close", session_id,
            parameters=self._session_parameters.pop(session_id, {}),
        )
        try:
            reply = self._stub.PsiClose(request, metadata=self._metadata, timeout=30)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="psi", step="closed", session_id=session_id)

    def _receive(self, replies: Iterator[pb.Chunk], session_id: str, step: str, protocol: str = "psi") -> bytes:
        return b"".join(self._payloads(replies, session_id, step, protocol))

    def _payloads(self, replies: Iterator[pb.Chunk], session_id: str, step: str, protocol: str = "psi") -> Iterator[bytes]:
        """The payloads of one reply stream, each chunk recorded as received
        and checked (``chunk_payloads``: order, this session, the limits)."""
        def noted() -> Iterator[pb.Chunk]:
            for chunk in replies:
                self._egress.received(chunk, peer=self.peer, protocol=protocol, step=step, session_id=session_id)
                yield chunk

        return chunk_payloads(noted(), max_bytes=self._max_reply, session_id=session_id, min_chunk_bytes=MIN_CHUNK_BYTES)

    # -- intersection-sum ----------------------------------------------------

    def sum_open(self, open_: SumOpen) -> SumOpened:
        holder = pb.VALUE_HOLDER_REQUESTER if open_.value_holder is ValueHolder.REQUESTER else pb.VALUE_HOLDER_RESPONDER
        request = self._send(
            pb.SumOpenRequest(
                protocol_version=open_.protocol_version, dataset=open_.dataset,
                kind=pb.KindVersion(kind=open_.kind, version=open_.kind_version), set_size=open_.set_size,
                value_holder=holder, key_bits=open_.key_bits, job_id=open_.job_id,
            ),
            "open", protocol="intersection-sum", items=open_.set_size, job_id=open_.job_id,
            parameters={"kind": open_.kind, "set_size": open_.set_size, "value_holder": open_.value_holder.value,
                        "key_bits": open_.key_bits},
        )
        try:
            reply = self._stub.SumOpen(request, metadata=self._metadata, timeout=min(self._timeout, 600))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(
            reply, peer=self.peer, protocol="intersection-sum", step="opened", session_id=reply.session_id,
            job_id=open_.job_id,
        )
        self._check_session_id(reply.session_id)
        if reply.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError("peer opened an intersection-sum session with another protocol version")
        return SumOpened(session_id=reply.session_id, max_set_size=reply.max_set_size,
                         session_ttl_seconds=reply.session_ttl_seconds, protocol_version=reply.protocol_version)

    def sum_exchange(
        self, session_id: str, payload: bytes, step: str, *, items: int = 0, disclosed: dict | None = None
    ) -> bytes:
        """Send one protocol message (chunked); return the peer's next one."""
        return self._exchange(self._stub.SumExchange, "intersection-sum", session_id, payload, step, items, disclosed)

    def _exchange(
        self, rpc, protocol: str, session_id: str, payload: bytes, step: str, items: int,  # type: ignore[no-untyped-def]
        disclosed: dict | None,
    ) -> bytes:
        """One message each way over a chunk stream RPC (SumExchange, CardinalityExchange)."""
        if disclosed is not None:
            self._egress.disclosed(peer=self.peer, protocol=protocol, session_id=session_id, result=disclosed)

        def outgoing() -> Iterator[pb.Chunk]:
            for chunk in to_chunks(session_id, payload):
                yield self._send(chunk, f"{step}-chunk", session_id, protocol=protocol,
                                 items=items if chunk.index == 0 else 0)

        try:
            replies = rpc(outgoing(), metadata=self._metadata, timeout=self._timeout)
            return self._receive(replies, session_id, "reply-chunk", protocol=protocol)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def sum_close(self, session_id: str, outcome: str) -> None:
        self._close(self._stub.SumClose, "intersection-sum", session_id, outcome)

    def _close(self, rpc, protocol: str, session_id: str, outcome: str) -> None:  # type: ignore[no-untyped-def]
        request = self._send(
            pb.PsiCloseRequest(protocol_version=PROTOCOL_VERSION, session_id=session_id, outcome=outcome),
            "close", session_id, protocol=protocol,
        )
        try:
            rpc(request, metadata=self._metadata, timeout=30)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- cardinality ---------------------------------------------------------------

    def cardinality_open(self, open_: CardinalityOpen) -> CardinalityOpened:
        request = self._send(
            pb.CardinalityOpenRequest(
                protocol_version=open_.protocol_version, dataset=open_.dataset,
                kinds=[pb.KindVersion(kind=k, version=v) for k, v in sorted(open_.kinds.items())],
                set_size=open_.set_size, job_id=open_.job_id,
                prompt_params=prompt_wire.to_message(open_.prompt_params),
            ),
            "open", protocol="cardinality", items=open_.set_size, job_id=open_.job_id,
            parameters={"mode": "count", "set_size": open_.set_size, "curve": "P-256"},
        )
        try:
            reply = self._stub.CardinalityOpen(request, metadata=self._metadata, timeout=min(self._timeout, 600))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(
            reply, peer=self.peer, protocol="cardinality", step="opened", session_id=reply.session_id,
            job_id=open_.job_id,
        )
        if reply.protocol_version != PROTOCOL_VERSION or not reply.session_id:
            raise RemoteProtocolError("peer opened a cardinality session without an id or with another version")
        # The responder learns our set size and the exact count; one running
        # modified software can also test items it guesses against our set.
        self._egress.disclosed(
            peer=self.peer, protocol="cardinality", session_id=reply.session_id, job_id=open_.job_id,
            result={"learns": "our set size and the intersection size (modified software: also whether our set "
                    "holds items it guesses)", "requester_set_size": open_.set_size, "kinds": sorted(open_.kinds)},
        )
        return CardinalityOpened(
            session_id=reply.session_id, max_set_size=reply.max_set_size,
            session_ttl_seconds=reply.session_ttl_seconds, min_result=reply.min_result,
            protocol_version=reply.protocol_version,
        )

    def cardinality_exchange(self, session_id: str, payload: bytes, step: str, *, items: int = 0) -> bytes:
        """Send one cardinality message (chunked); return the peer's next one."""
        return self._exchange(self._stub.CardinalityExchange, "cardinality", session_id, payload, step, items, None)

    def cardinality_close(self, session_id: str, outcome: str) -> None:
        self._close(self._stub.CardinalityClose, "cardinality", session_id, outcome)

    # -- federation total ------------------------------------------------------

    def federation_join(self, request: pb.FederationJoinRequest, parameters: dict[str, object]) -> pb.FederationJoinResponse:
        """Ask this peer to join a signed route; returns its signed mask key."""
        request = self._send(request, "join", request.run_id, protocol="federation-total", job_id=request.job_id,
                             parameters=parameters)
        try:
            reply = self._stub.FederationJoin(request, metadata=self._metadata, timeout=min(self._timeout, 60))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="federation-total", step="joined", session_id=request.run_id)
        return reply

    def federation_pass(self, request: pb.FederationPassRequest, parameters: dict[str, object]) -> pb.FederationPassResponse:
        """Hand the running ciphertext to this peer, our next hop; returns the
        last member's signed final, relayed back up the chain of calls."""
        request = self._send(request, "pass", request.run_id, protocol="federation-total", items=1,
                             job_id=request.job_id, parameters=parameters)
        try:
            reply = self._stub.FederationPass(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="federation-total", step="passed", session_id=request.run_id)
        return reply

    def federation_release(self, run_id: str, metric: str, contributors: int, total: bytes, value: int) -> None:
        self._egress.disclosed(
            peer=self.peer, protocol="federation-total", session_id=run_id,
            result={"metric": metric, "total": value, "contributors": contributors},
        )
        request = self._send(
            pb.FederationReleaseRequest(protocol_version=PROTOCOL_VERSION, run_id=run_id, metric=metric,
                                        contributors=contributors, total=total),
            "release", run_id, protocol="federation-total", parameters={"metric": metric, "contributors": contributors},
        )
        try:
            self._stub.FederationRelease(request, metadata=self._metadata, timeout=min(self._timeout, 60))
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- witnessing (audit metadata) ---------------------------------------------

    def witness_heads(self, request: pb.WitnessHeadsRequest) -> pb.WitnessHeadsResponse:
        """Hand the peer our signed audit head; returns its own."""
        request = self._send(request, "exchange", protocol="witness", parameters={"count": request.head.count})
        try:
            reply = self._stub.WitnessHeads(request, metadata=self._metadata, timeout=min(self._timeout, 30))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="witness", step="exchanged")
        return reply

    def witnessed_heads(self) -> pb.GetWitnessedHeadsResponse:
        """The signed heads of our own audit log this peer holds."""
        request = self._send(pb.GetWitnessedHeadsRequest(protocol_version=PROTOCOL_VERSION), "query", protocol="witness")
        try:
            reply = self._stub.GetWitnessedHeads(request, metadata=self._metadata, timeout=min(self._timeout, 60))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="witness", step="held", items=len(reply.heads))
        return reply
