"""Calling a peer node: one channel per peer, every request through the egress."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import grpc

from ..errors import ConfigError, PeerRefused, PeerUnavailable, RemoteProtocolError, UntrustedPeer
from ..protocols import PROTOCOL_VERSION
from ..protocols.intersection_sum import SumOpen, SumOpened, ValueHolder
from ..protocols.psi import PsiOpen, PsiOpened
from ..v1 import node_pb2 as pb
from ..v1 import node_pb2_grpc as pb_grpc
from .chunks import MIN_CHUNK_BYTES, from_chunks, to_chunks
from .egress import SESSION_ID, Egress
from .liveness import Liveness
from .server import MAX_MESSAGE_BYTES, NODE_HEADER

# CANCELLED: the peer is shutting down (or dropped the call); retrying later is the fix.
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


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
    ) -> None:
        self.peer = peer
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

    def __exit__(self, *exc: object) -> None:
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
            tls = self._tls
            host, _, port = self.address.rpartition(":")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cadata=tls.ca_pem.decode())
            ctx.load_cert_chain(str(tls.cert_path), str(tls.key_path))
            ctx.set_alpn_protocols(["h2"])
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=min(self._timeout, 15)) as raw:
                    with ctx.wrap_socket(raw, server_hostname=self.peer) as conn:
                        der = conn.getpeercert(binary_form=True)
            except ssl.SSLCertVerificationError as exc:
                raise UntrustedPeer(self.peer, f"the server at {self.address} presents no federation certificate "
                                    f"naming {self.peer} ({exc.verify_message})") from None
            except (OSError, ValueError) as exc:
                raise PeerUnavailable(self.peer, f"{self.address}: {exc}") from None
            from cryptography import x509

            serial = x509.load_der_x509_certificate(der).serial_number
            if tls.crl is not None and tls.crl.is_revoked(serial):
                raise UntrustedPeer(self.peer, f"the server at {self.address} presents certificate {serial:x}, "
                                    "which the federation CA has revoked")
            self._checked.set()

    def _check_session_id(self, sid: str) -> None:
        """A session id from the peer is echoed in every later message: it must be an id, nothing else."""
        if not SESSION_ID.match(sid):
            raise RemoteProtocolError(f"peer {self.peer} opened a session without a valid id "
                                      "(letters, digits, '-' or '_', 1 to 64 characters)")

    def _send(self, message, step: str, session_id: str = "", **kw):  # type: ignore[no-untyped-def]
        self.check_server_certificate()
        return self._egress.send(message, peer=self.peer, protocol=kw.pop("protocol", "psi"), step=step, session_id=session_id, **kw)

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
        request = self._send(
            pb.PsiOpenRequest(
                protocol_version=open_.protocol_version,
                dataset=open_.dataset,
                kinds=[pb.KindVersion(kind=k, version=v) for k, v in sorted(open_.kinds.items())],
                set_size=open_.set_size,
                reveal_intersection=open_.mode.reveal,
                job_id=open_.job_id,
            ),
            "open",
            items=open_.set_size,
            job_id=open_.job_id,
            parameters={"mode": open_.mode.value, "set_size": open_.set_size, "curve": "P-256"},
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
        }
        # The responder learns our set size (and which kinds we match on).
        self._egress.disclosed(
            peer=self.peer, protocol="psi", session_id=reply.session_id, job_id=open_.job_id,
            result={"learns": "our set size", "requester_set_size": open_.set_size, "kinds": sorted(open_.kinds)},
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
        )

    def psi_process(self, session_id: str, request: bytes, items: int) -> bytes:
        def outgoing() -> Iterator[pb.Chunk]:
            for chunk in to_chunks(session_id, request):
                yield self._send(
                    chunk, "request-chunk", session_id, items=items if chunk.index == 0 else 0,
                    parameters=self._session_parameters.get(session_id, {}),
                )

        try:
            replies = self._stub.PsiProcess(outgoing(), metadata=self._metadata, timeout=self._timeout)
            return self._receive(replies, session_id, "response-chunk")
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def psi_setup(self, session_id: str) -> bytes:
        request = self._send(
            pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=session_id), "setup-request", session_id,
            parameters=self._session_parameters.get(session_id, {}),
        )
        try:
            replies = self._stub.PsiSetup(request, metadata=self._metadata, timeout=self._timeout)
            return self._receive(replies, session_id, "setup-chunk")
        except grpc.RpcError as exc:
            raise self._error(exc) from None

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
        def noted() -> Iterator[pb.Chunk]:
            for chunk in replies:
                self._egress.received(chunk, peer=self.peer, protocol=protocol, step=step, session_id=session_id)
                yield chunk

        sid, data = from_chunks(noted(), max_bytes=self._max_reply, session_id=session_id,
                                min_chunk_bytes=MIN_CHUNK_BYTES)
        if sid != session_id:
            raise RemoteProtocolError("peer answered for another session")
        return data

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
        if disclosed is not None:
            self._egress.disclosed(peer=self.peer, protocol="intersection-sum", session_id=session_id, result=disclosed)

        def outgoing() -> Iterator[pb.Chunk]:
            for chunk in to_chunks(session_id, payload):
                yield self._send(chunk, f"{step}-chunk", session_id, protocol="intersection-sum",
                                 items=items if chunk.index == 0 else 0)

        try:
            replies = self._stub.SumExchange(outgoing(), metadata=self._metadata, timeout=self._timeout)
            return self._receive(replies, session_id, "reply-chunk", protocol="intersection-sum")
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def sum_close(self, session_id: str, outcome: str) -> None:
        request = self._send(
            pb.PsiCloseRequest(protocol_version=PROTOCOL_VERSION, session_id=session_id, outcome=outcome),
            "close", session_id, protocol="intersection-sum",
        )
        try:
            self._stub.SumClose(request, metadata=self._metadata, timeout=30)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- federation total ------------------------------------------------------

    def federation_pass(self, request: pb.FederationPassRequest) -> tuple[bytes, int]:
        """Hand the running ciphertext to this peer; returns (final ciphertext, contributors)."""
        request = self._send(
            request, "pass", request.run_id, protocol="federation-total", items=1, job_id=request.job_id,
            parameters={"metric": request.metric, "contributors": request.contributors,
                        "route_length": len(request.route), "min_contributors": request.min_contributors,
                        "key_bits": (len(request.public_key) - 1) * 8},
        )
        try:
            reply = self._stub.FederationPass(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        self._egress.received(reply, peer=self.peer, protocol="federation-total", step="passed", session_id=request.run_id)
        return reply.ciphertext, reply.contributors

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
