"""What each recorded message may hold: a registry keyed by (protocol, step).

``psi-share audit scan`` parses every transcript as the type its log entry
names and checks that it holds only what that type may hold. Each protocol
registers one check per wire step it sends::

    register_message_check("intersection-sum", "blinded-set-chunk", check,
                           description="the matcher's items hashed to P-256 and blinded ...")

``check(step, payload)`` returns (or yields) one line per problem, and
returns nothing when the message is fine; an exception it raises is
reported as a problem too. Register with ``wants_params=True`` to receive the
entry's recorded parameters as a third argument. A (protocol, step) that no
check is registered for is *reported*, never passed silently.

Every registration carries a ``description``: what the message is and what
protects its content. ``psi-share audit report`` reads it from here
(:func:`describe`) for every step it lists, so a step cannot be checked
without being described, nor described without being checked.

Chunked steps (the step name ends in ``-chunk`` and the payload is a
``psi_share.v1.Chunk``) are reassembled per session and step first: the
envelope of every chunk is checked here, and the check registered for the
step receives the joined bytes once, with the last chunk. Error statuses
(steps ending in ``-status``, made by the transport for every protocol)
are checked by one check here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from private_set_intersection.python import Request, Response, ServerSetup

from ..identifiers import KINDS
from ..names import CANARY_DATASET_PATTERN, NAME_PATTERN
from ..v1 import node_pb2 as pb

POINT_BYTES = 33
MAX_STATUS_TEXT = 2000
_HEX_ID = re.compile(r"^[0-9a-f]{32}\Z")
_VERSION_TEXT = re.compile(r"^[0-9A-Za-z.+\-]{1,32}\Z")
_PROTOCOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")


#: What every error status is (steps ending in ``-status``, for every protocol).
STATUS_DESCRIPTION = "error status: a gRPC code and its message text, which never quotes the peer's data"


@dataclass(frozen=True)
class _Registered:
    check: Callable[..., Iterable[str] | None]
    wants_params: bool
    description: str


_CHECKS: dict[tuple[str, str], _Registered] = {}


def register_message_check(
    protocol: str, step: str, check: Callable[..., Iterable[str] | None], *, description: str,
    wants_params: bool = False,
) -> None:
    """Register the check of one (protocol, step) and what the message is and what protects it."""
    if (protocol, step) in _CHECKS:
        raise ValueError(f"a message check for ({protocol}, {step}) is already registered")
    if not description.strip():
        raise ValueError(f"the message check for ({protocol}, {step}) must describe the message and its protection")
    _CHECKS[(protocol, step)] = _Registered(check, wants_params, description.strip())


def registered_steps() -> list[tuple[str, str]]:
    return sorted(_CHECKS)


def describe(protocol: str, step: str) -> str | None:
    """What the message of (protocol, step) is and what protects it; None if nobody registered it."""
    if step.endswith("-status"):
        return STATUS_DESCRIPTION
    registered = _CHECKS.get((protocol, step))
    return registered.description if registered else None


def check_message(protocol: str, step: str, payload: bytes, params: Mapping[str, Any] | None = None) -> list[str]:
    """Problems with one (reassembled) message; [] when it holds only what it may."""
    if step.endswith("-status"):
        return list(_check_status(payload))
    registered = _CHECKS.get((protocol, step))
    if registered is None:
        return [f"no message check is registered for ({protocol}, {step}): its content cannot be vouched for"]
    try:
        args = (step, payload, dict(params or {})) if registered.wants_params else (step, payload)
        return [str(p) for p in (registered.check(*args) or ())]
    except Exception as exc:  # noqa: BLE001 - a check that fails is a finding, not a crash
        return [f"does not parse as ({protocol}, {step}): {type(exc).__name__}: {exc}"]


# -- helpers --------------------------------------------------------------------


def parse_exact(cls: type[Message], payload: bytes) -> Message:
    """Parse ``payload`` as ``cls``; unknown fields anywhere are an error."""
    message = cls()
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None
    _no_unknown_fields(message, cls.DESCRIPTOR.full_name)
    return message


def _no_unknown_fields(message: Message, where: str) -> None:
    if len(UnknownFieldSet(message)):
        raise ValueError(f"{where} carries fields its type does not define")
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.label == field.LABEL_REPEATED else [value]
        for v in values:
            _no_unknown_fields(v, f"{where}.{field.name}")


def check_points(elements: Iterable[bytes], what: str) -> list[str]:
    """Every element must be a compressed point on P-256 (checked by cryptography)."""
    curve = ec.SECP256R1()
    problems = []
    for i, element in enumerate(elements):
        if len(element) != POINT_BYTES or element[0] not in (2, 3):
            problems.append(f"{what}[{i}] is not a 33-byte compressed point")
        else:
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(curve, element)
            except ValueError:
                problems.append(f"{what}[{i}] is not a point on P-256")
        if len(problems) >= 5:
            problems.append(f"{what}: further elements not checked")
            break
    return problems


def _name(value: str, what: str) -> list[str]:
    return [] if NAME_PATTERN.match(value) else [f"{what} is not a plain name"]


_SEED_ID = re.compile(r"^[0-9a-f]{16}\Z")
_SCHEME = re.compile(r"^[0-9A-Za-z./+\-]{1,64}\Z")


def prompt_params_problems(m: Message) -> list[str]:
    """An open message's prompt parameter set holds only numbers, a scheme name and a seed id."""
    if not m.HasField("prompt_params"):
        return []
    p = m.prompt_params
    problems = [] if _SEED_ID.match(p.seed_id) else ["prompt_params.seed_id is not a seed id"]
    return problems + ([] if _SCHEME.match(p.minhash) else ["prompt_params.minhash is not a scheme name"])


def _kinds(kinds: Iterable[pb.KindVersion], what: str) -> list[str]:
    return [f"{what} names an unknown kind" for kv in kinds if kv.kind not in KINDS or not 1 <= kv.version <= 1000]


# -- node -----------------------------------------------------------------------


def _node_info_request(step: str, payload: bytes) -> list[str]:
    parse_exact(pb.NodeInfoRequest, payload)
    return []


def _node_info(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.NodeInfoResponse, payload)
    problems = _name(m.node_name, "node_name") + _kinds(m.canonicalization, "canonicalization")
    for text in (m.software_version, m.openmined_psi_version):
        if not _VERSION_TEXT.match(text):
            problems.append("a version field holds more than a version")
    for ds in m.datasets:
        problems += _name(ds.name, "datasets.name")
        problems += ["datasets.kinds names an unknown kind" for k in ds.kinds if k not in KINDS]
    problems += ["protocols holds a non-name" for p in m.protocols if not _PROTOCOL_NAME.match(p)]
    return problems


# -- psi ------------------------------------------------------------------------


def _psi_open(step: str, payload: bytes, params: Mapping[str, Any]) -> list[str]:
    m = parse_exact(pb.PsiOpenRequest, payload)
    # A canary session (peers check) names _canary.<dataset>[.<items>]: still only a name and a number.
    dataset = [] if CANARY_DATASET_PATTERN.fullmatch(m.dataset) else _name(m.dataset, "dataset")
    problems = dataset + _kinds(m.kinds, "kinds") + prompt_params_problems(m)
    if m.job_id and not _HEX_ID.match(m.job_id):
        problems.append("job_id is not a run id")
    if "set_size" in params and int(params["set_size"]) != m.set_size:
        problems.append("set_size differs from the logged set size")
    return problems


def _psi_opened(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.PsiOpenResponse, payload)
    problems = [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]
    if not 0 < m.false_positive_rate < 1 or math.isnan(m.false_positive_rate):
        problems.append("false_positive_rate is out of range")
    if not _VERSION_TEXT.match(m.openmined_psi_version):
        problems.append("openmined_psi_version holds more than a version")
    return problems


def _session_only(cls: type[Message]) -> Callable[[str, bytes], list[str]]:
    def check(step: str, payload: bytes) -> list[str]:
        m = parse_exact(cls, payload)
        return [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]  # type: ignore[attr-defined]

    return check


def _psi_close(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.PsiCloseRequest, payload)
    problems = [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]
    if m.outcome not in ("done", "failed", ""):
        problems.append("outcome holds free text")
    return problems


def _psi_closed(step: str, payload: bytes) -> list[str]:
    parse_exact(pb.PsiCloseResponse, payload)
    return []


def _psi_buckets(step: str, payload: bytes, params: Mapping[str, Any]) -> list[str]:
    """A PsiBucketedSetup: as many buckets as the log says, sizes adding up
    to our items, every bucket a well-formed ServerSetup of its size."""
    m = parse_exact(pb.PsiBucketedSetup, payload)
    buckets, items = int(params["setup_buckets"]), params.get("setup_items")
    if len(m.bucket_sizes) != buckets or len(m.setups) != buckets:
        return [f"bucketed setup holds {len(m.setups)} buckets, the log says {buckets}"]
    if items is not None and sum(m.bucket_sizes) != int(items):
        return [f"bucket sizes add up to {sum(m.bucket_sizes)}, the log says {items} items"]
    problems = []
    for index, (size, data) in enumerate(zip(m.bucket_sizes, m.setups)):
        inner = {**params, "setup_buckets": 1, "setup_items": size}
        problems += [f"bucket {index}: {p}" for p in _psi_setup(step, data, inner)]
    return problems


def _psi_request(step: str, payload: bytes, params: Mapping[str, Any]) -> list[str]:
    m = parse_exact(Request, payload)
    problems = check_points(m.encrypted_elements, "Request.encrypted_elements")
    if "set_size" in params and len(m.encrypted_elements) != int(params["set_size"]):
        problems.append(f"holds {len(m.encrypted_elements)} elements, the log says {params['set_size']}")
    if len(set(m.encrypted_elements)) != len(m.encrypted_elements):
        problems.append("holds duplicate elements")
    return problems


def _psi_response(step: str, payload: bytes, params: Mapping[str, Any]) -> list[str]:
    m = parse_exact(Response, payload)
    problems = check_points(m.encrypted_elements, "Response.encrypted_elements")
    expected = params.get("requester_items")
    if expected is not None and len(m.encrypted_elements) != int(expected):
        problems.append(f"holds {len(m.encrypted_elements)} elements for a request of {expected}")
    return problems


def _psi_setup(step: str, payload: bytes, params: Mapping[str, Any]) -> list[str]:
    if int(params.get("setup_buckets", 1)) > 1:
        return _psi_buckets(step, payload, params)
    m = parse_exact(ServerSetup, payload)
    kind = m.WhichOneof("data_structure")
    items = params.get("setup_items")
    if kind is None:
        return ["ServerSetup holds no filter"]
    if kind == "raw":
        problems = check_points(m.raw.encrypted_elements, "ServerSetup.raw.encrypted_elements")
        if items is not None and len(m.raw.encrypted_elements) != int(items):
            problems.append(f"raw setup holds {len(m.raw.encrypted_elements)} points, the log says {items} items")
        return problems
    if kind == "gcs":
        g = m.gcs
        if g.hash_range < 1 or not 0 <= g.div <= 62:
            return ["GCS parameters are out of range"]
        if items is not None:
            # Golomb-Rice: per item div remainder bits plus a unary quotient;
            # the quotients sum to at most hash_range / 2^div.
            bound = int(items) * (g.div + 1) + (g.hash_range >> g.div) + 64
            if len(g.bits) * 8 > bound:
                return [f"GCS filter has {len(g.bits) * 8} bits, more than {int(items)} items can take ({bound})"]
        return []
    b = m.bloom_filter
    if not b.bits or not 1 <= b.num_hash_functions <= 256:
        return ["Bloom filter parameters are out of range"]
    return []


def _check_status(payload: bytes) -> list[str]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return ["status text is not UTF-8"]
    code, sep, _ = text.partition(": ")
    problems = [] if sep and code.isupper() and code.replace("_", "").isalpha() else ["status does not start with a gRPC code"]
    if len(text) > MAX_STATUS_TEXT or not text.isprintable():
        problems.append("status text is too long or holds control characters")
    return problems


def check_chunk_envelope(payload: bytes, session: str, expected_index: int) -> tuple[list[str], Any]:
    """Check one Chunk's envelope; return problems and the parsed chunk."""
    try:
        chunk = parse_exact(pb.Chunk, payload)
    except ValueError as exc:
        return [str(exc)], None
    problems = []
    if chunk.session_id != session:
        problems.append("chunk names another session than its log entry")
    if chunk.index != expected_index:
        problems.append(f"chunk index {chunk.index} where {expected_index} was expected")
    if chunk.index and chunk.total_bytes:
        problems.append("total_bytes set on a chunk other than the first")
    return problems, chunk


def _parsed_as(cls: type[Message]) -> Callable[[str, bytes], list[str]]:
    def check(step: str, payload: bytes) -> list[str]:
        parse_exact(cls, payload)
        return []

    return check


def _standard_services() -> None:
    """gRPC health and reflection: status enums and the public wire contract's descriptors."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    for step in ("Check", "Watch"):
        register_message_check("grpc-health", step, _parsed_as(health_pb2.HealthCheckResponse),
                               description="gRPC health status (an enum): no data")
        register_message_check("grpc-health", f"{step}-request", _parsed_as(health_pb2.HealthCheckRequest),
                               description="gRPC health request from an unauthenticated caller: a service name")
    register_message_check("grpc-reflection", "ServerReflectionInfo", _parsed_as(reflection_pb2.ServerReflectionResponse),
                           description="server reflection: the public wire contract's descriptors (proto files)")
    register_message_check("grpc-reflection", "ServerReflectionInfo-request",
                           _parsed_as(reflection_pb2.ServerReflectionRequest),
                           description="server reflection request from an unauthenticated caller: a service or file name")


_standard_services()
# The checks of the other protocols register themselves from the layer above
# (psi_share.node.audit_checks, imported with the node package, which
# psi_share itself imports): the audit never imports upward.
register_message_check("node", "info-request", _node_info_request,
                       description="NodeInfo request: the protocol version only")
register_message_check("node", "info", _node_info,
                       description="NodeInfo reply, metadata: the node's name, software and canonicalization versions, "
                                   "the dataset names and kinds exposed to this peer")
register_message_check("psi", "open", _psi_open, wants_params=True,
                       description="PSI open, metadata: dataset name, kinds, the requester's set size (which the "
                                   "responder learns), reveal or count")
register_message_check("psi", "opened", _psi_opened,
                       description="PSI session opened, metadata: session id, false-positive bound, limits, minimum result")
register_message_check("psi", "setup-request", _session_only(pb.PsiSetupRequest),
                       description="no content: the session id")
register_message_check("psi", "close", _psi_close, description="no content: the session id and an outcome word")
register_message_check("psi", "closed", _psi_closed, description="no content")
register_message_check("psi", "request-chunk", _psi_request, wants_params=True,
                       description="the requester's items as P-256 points blinded under a fresh session key "
                                   "(ECDH; OpenMined Request)")
register_message_check("psi", "response-chunk", _psi_response, wants_params=True,
                       description="the requester's blinded points, blinded again under the responder's key "
                                   "(OpenMined Response; sorted when count-only)")
register_message_check("psi", "setup-chunk", _psi_setup, wants_params=True,
                       description="a filter of the responder's items blinded under its key (OpenMined ServerSetup: "
                                   "GCS or raw points, false-positive bound as logged)")
