"""The gRPC face of a node: a thin servicer, server creation, health, reflection.

Servicer methods only decode, call the :class:`Responder`, and encode; each
is declared with :func:`_rpc`, which authenticates the caller, records the
request, and turns every error into a status. Errors
become status codes in one place (:func:`_status_of`): a refusal keeps the
code the node chose; malformed or out-of-order input is INVALID_ARGUMENT or
FAILED_PRECONDITION; a version disagreement is FAILED_PRECONDITION. Anything
else is INTERNAL with a generic message (details go to our log, not to the
peer).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..errors import OutOfOrder, Refused, RemoteProtocolError, VersionMismatch
from ..protocols import PROTOCOL_VERSION
from ..protocols.intersection_sum import SumOpen, ValueHolder
from ..protocols.psi import Mode, PsiOpen
from ..prompts import wire as prompt_wire
from ..v1 import node_pb2 as pb
from ..v1 import node_pb2_grpc as pb_grpc
from . import cardinality_service, witness_service
from .chunks import MIN_CHUNK_BYTES, chunk_payloads, stream_chunks, to_chunks
from .egress import Egress
from .listen import ListenError, why_not_listening
from .liveness import Liveness, SilenceLimit
from .reflection import enable_reflection
from .limits import NODE_HEADER, CallGate, CallLimits, StandardServicesEgress, caller_label

log = logging.getLogger("psi_share.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PsiShareNode"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class PeerAuthenticator(Protocol):
    """Decides who is calling. Raises Refused('UNAUTHENTICATED', ...)."""

    def authenticate(self, context: grpc.ServicerContext) -> str: ...


class CertificateAuthenticator:
    """Mutual TLS: the caller is the node its client certificate names.

    gRPC has already checked, during the handshake, that the certificate
    chains to the federation CA and is within its validity period. This adds
    what gRPC Python does not do: the revocation list (re-read when its file
    changes), the certificate's shape (the name as CN and DNS SAN), a second
    expiry check against our own clock, and that the name is a known peer.
    Nothing the caller writes in a message or in metadata is consulted.
    """

    def __init__(self, known_peers, ca_cert, revocations,  # type: ignore[no-untyped-def]
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self._known_peers = known_peers
        self._ca = ca_cert
        self._revocations = revocations
        self._now = now
        # PEM -> its parsed, CA-checked certificate and name: every call is
        # authenticated (the gate and the RPC), and a flood of calls must not
        # cost a signature check each. Revocation, validity and membership
        # are still checked on every call.
        self._parsed: dict[bytes, tuple[Any, str]] = {}

    def authenticate(self, context: grpc.ServicerContext) -> str:
        from ..pki import PkiError, check_member_current

        pems = (context.auth_context() or {}).get("x509_pem_cert") or []
        if not pems:
            raise Refused("UNAUTHENTICATED", "the call presented no client certificate from the federation CA")
        parsed = self._parsed.get(pems[0])
        if parsed is None:
            parsed = self._parse(pems[0])
            if len(self._parsed) > 1024:  # certificates are few; bound it anyway
                self._parsed.clear()
            self._parsed[pems[0]] = parsed
        cert, name = parsed
        try:
            check_member_current(cert, name, self._revocations.is_revoked, self._now())
        except PkiError as exc:
            raise Refused("UNAUTHENTICATED", str(exc)) from None
        if name not in self._known_peers():
            raise Refused("UNAUTHENTICATED", f"node {name!r} is not a known peer of this node; its operator must "
                          f"add it ('psi-share peers add {name} ADDRESS')")
        return name

    def _parse(self, pem: bytes) -> tuple[Any, str]:
        from cryptography import x509

        from ..pki import PkiError, issued_member_name

        try:
            cert = x509.load_pem_x509_certificate(pem)
            name = issued_member_name(cert, self._ca)
        except (ValueError, TypeError, PkiError) as exc:
            raise Refused("UNAUTHENTICATED", f"client certificate refused: {exc}") from None
        return cert, name


class ClaimedNameAuthenticator:
    """Plaintext mode (``--insecure`` only): trusts the node name the caller
    states in metadata, if it names a known peer. Anyone on the network can
    claim any name: never used unless the operator asked for plaintext."""

    def __init__(self, known_peers) -> None:  # type: ignore[no-untyped-def]
        self._known_peers = known_peers

    def authenticate(self, context: grpc.ServicerContext) -> str:
        claimed = dict(context.invocation_metadata()).get(NODE_HEADER, "")
        if not claimed:
            raise Refused("UNAUTHENTICATED", f"call carries no {NODE_HEADER} metadata naming the calling node")
        if claimed not in self._known_peers():
            # The claimed name is the caller's text: never echoed back.
            raise Refused("UNAUTHENTICATED", f"the node named in the {NODE_HEADER} metadata is not a known peer of this node")
        return claimed


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, grpc.RpcError):  # the caller went away mid-stream
        log.info("peer cancelled or disconnected during a call")
        return grpc.StatusCode.CANCELLED, "the call was cancelled by the peer"
    if isinstance(exc, Refused):
        return grpc.StatusCode[exc.code], str(exc)
    if isinstance(exc, (VersionMismatch, OutOfOrder)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, RemoteProtocolError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.exception("internal error while serving a peer")
    return grpc.StatusCode.INTERNAL, "internal error on the responding node; its operator can see the log"


def _prompt_description(responder: object) -> dict[str, int | str] | None:
    """The responder's prompt parameter set (``PromptParams.describe``: the seed's id, never
    the seed), or None when its node has no ``[prompts]`` seed. Every caller that may ask
    NodeInfo learns it: it is public within the federation (PROTOCOL.md section 5)."""
    prompts = getattr(getattr(responder, "config", None), "prompts", None)
    if prompts is None or not prompts.enabled:
        return None
    described: dict[str, int | str] = prompts.params.describe()
    return described


@dataclass
class _Call:
    """Who is calling and about which session, as far as known (for the error status)."""

    peer: str = ""
    session_id: str = ""


_Answer = Callable[[], Any]


def _rpc(
    protocol: str,
    error_step: str,
    received: str | None = None,
    *,
    session: str | None = None,
    job: bool = False,
    version: str | None = None,
) -> Callable[[Callable[..., _Answer]], Callable[..., Any]]:
    """One way to serve an RPC: authenticate, record, call, map errors.

    The decorated body gets ``(self, request, call)`` with ``call.peer``
    authenticated, does its work and returns ``answer``: a function that
    builds the reply and sends it through the egress. Any error up to there
    becomes a status (recorded first, see :meth:`NodeServicer._abort`) for
    ``protocol``/``error_step``; ``answer`` runs after that, so a reply that
    cannot be recorded is never turned into a second message. For a unary
    request, ``received`` names the step it is recorded under (with the
    request's ``session`` field and, when ``job``, its ``job_id``), and
    ``version`` says whether its protocol_version is checked ``"before"`` or
    ``"after"`` it is recorded (None: the protocol core checks it). The
    method keeps ``rpc_steps = (protocol, error_step, received)``: the steps
    it records, which a test checks the audit registry describes.
    """

    def wrap(body: Callable[..., _Answer]) -> Callable[..., Any]:
        @functools.wraps(body)
        def method(self: NodeServicer, request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(session_id=getattr(request, session) if session else "")
            try:
                call.peer = self._auth.authenticate(context)
                if version == "before":
                    self._check_version(request.protocol_version)
                if received is not None:
                    self._egress.received(
                        request, peer=call.peer, protocol=protocol, step=received, session_id=call.session_id,
                        job_id=request.job_id if job else "",
                    )
                if version == "after":
                    self._check_version(request.protocol_version)
                answer = body(self, request, call)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                self._abort(context, exc, call.peer, protocol, error_step, call.session_id)
            reply = answer()
            if not isinstance(reply, types.GeneratorType):
                return reply
            return self._streamed(reply, context, call, protocol, error_step)

        method.rpc_steps = (protocol, error_step, received)  # type: ignore[attr-defined]  # what the egress records
        return method

    return wrap


class NodeServicer(pb_grpc.PsiShareNodeServicer):
    def __init__(self, responder, egress: Egress, authenticator: PeerAuthenticator) -> None:  # type: ignore[no-untyped-def]
        self._responder = responder
        self._egress = egress
        self._auth = authenticator

    def _abort(
        self, context: grpc.ServicerContext, exc: Exception, peer: str, protocol: str, step: str, session_id: str = ""
    ) -> None:
        """Send ``exc`` as a status; its text is recorded first, like every message."""
        code, message = _status_of(exc)
        self._egress.send_status(
            code.name, message, peer=peer or caller_label(context), protocol=protocol, step=step, session_id=session_id,
            reason=getattr(exc, "reason", ""),
        )
        context.abort(code, message)

    def _streamed(
        self, reply: Iterator[Any], context: grpc.ServicerContext, call: _Call, protocol: str, step: str
    ) -> Iterator[Any]:
        """A streamed reply whose remaining messages are still being computed
        (PsiProcess): an error on the way becomes a status as before the
        first message. Nothing already sent is taken back."""
        try:
            yield from reply
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            self._abort(context, exc, call.peer, protocol, step, call.session_id)

    def _parameters(self, peer: str, sid: str) -> dict[str, object]:
        parameters = getattr(self._responder, "audit_parameters", None)
        return parameters(peer, sid) if parameters else {}

    def _check_version(self, version: int) -> None:
        if version != PROTOCOL_VERSION:
            raise VersionMismatch(f"the request's protocol version is not supported (this node speaks {PROTOCOL_VERSION})")

    @_rpc("node", "info", "info-request", version="after")
    def NodeInfo(self, request: pb.NodeInfoRequest, call: _Call) -> _Answer:
        info = self._responder.node_info(call.peer)
        reply = pb.NodeInfoResponse(
            protocol_version=PROTOCOL_VERSION,
            node_name=info.node_name,
            software_version=info.software_version,
            openmined_psi_version=info.openmined_psi_version,
            canonicalization=[pb.KindVersion(kind=k, version=v) for k, v in sorted(info.canonicalization.items())],
            datasets=[pb.ExposedDataset(name=n, kinds=list(k)) for n, k in sorted(info.datasets.items())],
            protocols=list(info.protocols),
        )
        described = _prompt_description(self._responder)
        if described is not None:
            reply.prompt_params.CopyFrom(prompt_wire.to_message(described))
        return lambda: self._egress.send(reply, peer=call.peer, protocol="node", step="info")

    @_rpc("psi", "opened", "open", job=True)
    def PsiOpen(self, request: pb.PsiOpenRequest, call: _Call) -> _Answer:
        kinds = {kv.kind: kv.version for kv in request.kinds}
        if len(kinds) != len(request.kinds):
            raise RemoteProtocolError("PsiOpen.kinds names a kind twice")
        opened = self._responder.psi_open(
            call.peer,
            PsiOpen(
                dataset=request.dataset, kinds=kinds, set_size=request.set_size,
                mode=Mode.REVEAL if request.reveal_intersection else Mode.COUNT,
                job_id=request.job_id, prompt_params=cardinality_service.prompt_params_of(request),
                protocol_version=request.protocol_version, setup_buckets_version=request.setup_buckets_version,
            ),
        )
        reply = pb.PsiOpenResponse(
            protocol_version=PROTOCOL_VERSION,
            session_id=opened.session_id,
            false_positive_rate=opened.false_positive_rate,
            max_set_size=opened.max_set_size,
            openmined_psi_version=opened.openmined_psi_version,
            session_ttl_seconds=opened.session_ttl_seconds,
            min_result=opened.min_result,
            responder_set_size=opened.responder_set_size, setup_buckets_version=opened.setup_buckets_version,
            bucket_count=opened.bucket_count,
        )
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="psi", step="opened", session_id=opened.session_id, job_id=request.job_id,
            parameters=self._parameters(call.peer, opened.session_id)
            or {"false_positive_rate": opened.false_positive_rate, "mode": "reveal" if request.reveal_intersection else "count"},
        )

    @_rpc("psi", "setup", "setup-request", session="session_id", version="before")
    def PsiSetup(self, request: pb.PsiSetupRequest, call: _Call) -> _Answer:
        data = self._responder.psi_setup(call.peer, request.session_id)
        parameters = self._parameters(call.peer, request.session_id)
        disclosure = getattr(self._responder, "setup_disclosure", None)
        if disclosure:
            # What the requester can learn from our filter, on record before it leaves.
            self._egress.disclosed(
                peer=call.peer, protocol="psi", session_id=request.session_id,
                result=disclosure(call.peer, request.session_id),
            )
        return lambda: self._send_chunks(call.peer, request.session_id, "setup", data, parameters)

    def _first_chunk(self, chunks: Iterator[pb.Chunk], rpc: str, call: _Call, *, sid_first: bool) -> pb.Chunk:
        """The first chunk of a request stream, its version checked; names the session in ``call``."""
        first = next(chunks, None)
        if first is None:
            raise RemoteProtocolError(f"{rpc} stream carried no chunk")
        if sid_first:
            call.session_id = first.session_id
        self._check_version(first.protocol_version)
        call.session_id = first.session_id
        return first

    def _stream_pieces(
        self,
        first: pb.Chunk,
        rest: Iterator[pb.Chunk],
        peer: str,
        protocol: str,
        step: str,
        limit: int,
        abort: Callable[[str, str, Exception], None],
    ) -> Iterator[bytes]:
        """A request stream whose first chunk was already read, a payload at
        a time: every chunk recorded as received and checked
        (``chunk_payloads``) before it is handed on. A bad or broken stream
        ends its session through ``abort``: nothing half-received is kept."""
        sid = first.session_id

        def noted(chunks: Iterator[pb.Chunk]) -> Iterator[pb.Chunk]:
            for chunk in chunks:
                self._egress.received(chunk, peer=peer, protocol=protocol, step=step, session_id=sid)
                yield chunk

        try:
            yield from chunk_payloads(noted(itertools.chain([first], rest)), max_bytes=limit, session_id=sid,
                                      min_chunk_bytes=MIN_CHUNK_BYTES)
        except Exception as exc:
            abort(peer, sid, exc)
            raise

    @_rpc("psi", "response")
    def PsiProcess(self, request_iterator: Iterator[pb.Chunk], call: _Call) -> _Answer:
        first = self._first_chunk(request_iterator, "PsiProcess", call, sid_first=False)
        peer, sid = call.peer, call.session_id
        limit = self._responder.request_limit(peer, sid)
        pieces = self._stream_pieces(first, request_iterator, peer, "psi", "request-chunk", limit, self._responder.abort)
        total, replies = self._responder.psi_process(peer, sid, pieces)
        parameters = self._parameters(peer, sid)
        # Streamed: each batch of the response leaves as soon as it is computed, while
        # the request is still arriving (protocols/psi_stream.py).
        return lambda: self._send_chunks(peer, sid, "response", replies, parameters, total=total)

    @_rpc("psi", "closed", "close", session="session_id", version="before")
    def PsiClose(self, request: pb.PsiCloseRequest, call: _Call) -> _Answer:
        self._responder.psi_close(call.peer, request.session_id, request.outcome[:200])
        reply = pb.PsiCloseResponse(protocol_version=PROTOCOL_VERSION)
        return lambda: self._egress.send(reply, peer=call.peer, protocol="psi", step="closed", session_id=request.session_id)

    def _send_chunks(
        self, peer: str, sid: str, step: str, data: bytes | Iterable[bytes], parameters: dict[str, object],
        *, total: int | None = None,
    ) -> Iterator[pb.Chunk]:
        """``data``, or with ``total`` the pieces of a message of that length, as recorded chunks."""
        items = int(parameters.get(f"{step}_items", 0) or 0)  # type: ignore[call-overload]
        chunks = to_chunks(sid, data) if total is None else stream_chunks(sid, total, data)  # type: ignore[arg-type]
        for chunk in chunks:
            yield self._egress.send(
                chunk, peer=peer, protocol="psi", step=f"{step}-chunk", session_id=sid,
                items=items if chunk.index == 0 else 0, parameters=parameters,
            )


    def _send_aggregate_chunks(
        self, peer: str, sid: str, step: str, data: bytes, items: int, protocol: str = "intersection-sum"
    ) -> Iterator[pb.Chunk]:
        for chunk in to_chunks(sid, data):
            yield self._egress.send(
                chunk, peer=peer, protocol=protocol, step=f"{step}-chunk", session_id=sid,
                items=items if chunk.index == 0 else 0,
            )

    # -- cardinality (bodies in cardinality_service.py) ---------------------------------

    CardinalityOpen = _rpc("cardinality", "opened", "open", job=True, version="after")(cardinality_service.open_session)
    CardinalityExchange = _rpc("cardinality", "reply")(cardinality_service.exchange)
    CardinalityClose = _rpc("cardinality", "closed", "close", session="session_id", version="before")(
        cardinality_service.close_session
    )

    # -- intersection-sum ----------------------------------------------------

    @_rpc("intersection-sum", "opened", "open", job=True)
    def SumOpen(self, request: pb.SumOpenRequest, call: _Call) -> _Answer:
        holders = {pb.VALUE_HOLDER_REQUESTER: ValueHolder.REQUESTER, pb.VALUE_HOLDER_RESPONDER: ValueHolder.RESPONDER}
        if request.value_holder not in holders:
            raise RemoteProtocolError("SumOpen does not say who holds the values")
        if not request.HasField("kind"):
            raise RemoteProtocolError("SumOpen names no identifier kind")
        open_ = SumOpen(
            dataset=request.dataset, kind=request.kind.kind, kind_version=request.kind.version,
            set_size=request.set_size, value_holder=holders[request.value_holder], key_bits=request.key_bits,
            job_id=request.job_id, protocol_version=request.protocol_version,
        )
        opened = self._responder.sums.open(call.peer, open_)
        reply = pb.SumOpenResponse(
            protocol_version=PROTOCOL_VERSION, session_id=opened.session_id, max_set_size=opened.max_set_size,
            session_ttl_seconds=opened.session_ttl_seconds,
        )
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="intersection-sum", step="opened", session_id=opened.session_id,
            parameters={"value_holder": open_.value_holder.value, "key_bits": open_.key_bits, "kind": open_.kind},
        )

    @_rpc("intersection-sum", "reply")
    def SumExchange(self, request_iterator: Iterator[pb.Chunk], call: _Call) -> _Answer:
        first = self._first_chunk(request_iterator, "SumExchange", call, sid_first=True)
        peer, sid = call.peer, call.session_id
        sums = self._responder.sums
        limit = sums.request_limit(peer, sid)
        data = b"".join(self._stream_pieces(first, request_iterator, peer, "intersection-sum", "message-chunk", limit,
                                            sums.abort))
        reply = sums.exchange(peer, sid, data)
        if reply.disclosed is not None:
            self._egress.disclosed(peer=peer, protocol="intersection-sum", session_id=sid, result=reply.disclosed)
        return lambda: self._send_aggregate_chunks(peer, sid, reply.step, reply.payload, reply.items)

    @_rpc("intersection-sum", "closed", "close", session="session_id", version="before")
    def SumClose(self, request: pb.PsiCloseRequest, call: _Call) -> _Answer:
        self._responder.sums.close(call.peer, request.session_id, request.outcome[:200])
        reply = pb.PsiCloseResponse(protocol_version=PROTOCOL_VERSION)
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="intersection-sum", step="closed", session_id=request.session_id,
        )

    # -- federation total --------------------------------------------------------

    @_rpc("federation-total", "joined", "join", session="run_id", job=True, version="before")
    def FederationJoin(self, request: pb.FederationJoinRequest, call: _Call) -> _Answer:
        member_key = self._responder.federation.on_join(call.peer, request)
        reply = pb.FederationJoinResponse(protocol_version=PROTOCOL_VERSION, member_key=member_key)
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="federation-total", step="joined", session_id=request.run_id,
        )

    @_rpc("federation-total", "passed", "pass", session="run_id", job=True, version="before")
    def FederationPass(self, request: pb.FederationPassRequest, call: _Call) -> _Answer:
        final = self._responder.federation.on_pass(call.peer, request)
        reply = pb.FederationPassResponse(protocol_version=PROTOCOL_VERSION, final=final)
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="federation-total", step="passed", session_id=request.run_id, items=1,
        )

    @_rpc("federation-total", "released", "release", session="run_id", version="before")
    def FederationRelease(self, request: pb.FederationReleaseRequest, call: _Call) -> _Answer:
        self._responder.federation.on_release(call.peer, request)
        reply = pb.FederationReleaseResponse(protocol_version=PROTOCOL_VERSION)
        return lambda: self._egress.send(
            reply, peer=call.peer, protocol="federation-total", step="released", session_id=request.run_id,
        )

    # -- witnessing (bodies in witness_service.py) -----------------------------------

    WitnessHeads = _rpc("witness", "exchanged", "exchange", version="before")(witness_service.exchange)
    GetWitnessedHeads = _rpc("witness", "held", "query", version="before")(witness_service.held)


def _parsing_unary(behavior, cls):  # type: ignore[no-untyped-def]
    def handle(raw: bytes, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        try:
            request = cls.FromString(raw)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"malformed request: not a valid psi_share.v1.{cls.DESCRIPTOR.name} message")
        return behavior(request, context)

    return handle


def _parsing_stream(behavior, cls):  # type: ignore[no-untyped-def]
    def parsed(raws: Iterator[bytes]) -> Iterator:  # type: ignore[type-arg]
        for index, raw in enumerate(raws):
            try:
                yield cls.FromString(raw)
            except DecodeError:
                raise RemoteProtocolError(
                    f"malformed stream message {index}: not a valid psi_share.v1.{cls.DESCRIPTOR.name}"
                ) from None

    def handle(raws: Iterator[bytes], context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        return behavior(parsed(raws), context)

    return handle


_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_node_servicer(servicer: pb_grpc.PsiShareNodeServicer, server: grpc.Server) -> None:
    """Register every RPC of the service, as the descriptor lists them.

    Unlike the generated ``add_PsiShareNodeServicer_to_server``, requests
    arrive as bytes and are parsed here: a malformed message is answered
    with INVALID_ARGUMENT naming the message type (gRPC's own deserializer
    would answer INTERNAL), and RPCs added to the proto later are covered
    without touching this function.
    """
    service = pb.DESCRIPTOR.services_by_name["PsiShareNode"]
    handlers = {}
    for method in service.methods:
        request_cls = GetMessageClass(method.input_type)
        response_cls = GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name)
        wrap = _parsing_stream if method.client_streaming else _parsing_unary
        factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            wrap(behavior, request_cls), request_deserializer=None, response_serializer=response_cls.SerializeToString
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def create_server(
    responder,  # type: ignore[no-untyped-def]
    egress: Egress,
    authenticator: PeerAuthenticator,
    address: str,
    *,
    gate: CallGate | None = None,
    tls=None,  # type: ignore[no-untyped-def]  # psi_share.pki.NodeTls; None = plaintext
    liveness: Liveness = Liveness(),
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build (not start) a server bound to ``address``; returns it and its port.

    With ``tls`` the port requires a client certificate from the federation
    CA (mutual TLS); without it the port is plaintext (``--insecure`` only).
    Binding ``127.0.0.1:0`` picks a free port, as tests do. The port is
    never shared (no SO_REUSEPORT): a port in use raises :class:`ListenError`.
    ``liveness`` sets keepalive and how long a peer may stay silent
    (protos/PROTOCOL.md, "Timeouts and keepalive").
    Every call on
    the port, health and reflection included, passes ``gate`` first (by
    default one with the default :class:`~psi_share.transport.limits.CallLimits`;
    its watchdog is started and stopped by the caller): only authenticated
    members get in, and each within its share of the server's threads.
    """
    gate = gate or CallGate(authenticator, egress, CallLimits())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=gate.limits.threads, thread_name_prefix="psi-grpc"),
        interceptors=[gate, StandardServicesEgress(egress, authenticator),
                      SilenceLimit(liveness.peer_silence_seconds, SERVICE_NAME)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *liveness.server_options(),
        ],
    )
    add_node_servicer(NodeServicer(responder, egress, authenticator), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=True
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc raises RuntimeError when it cannot bind
        raise ListenError(f"cannot listen on {address}: {why_not_listening(address)}") from None
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer

