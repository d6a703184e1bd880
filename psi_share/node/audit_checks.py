"""Audit message checks for the Paillier protocols, registered with
:mod:`psi_share.audit.messages` by (protocol, Egress step).

``psi-share audit scan`` reassembles chunked steps and calls these with the
exact bytes a node sent; each returns the problems it finds ([] when the
message holds only what its step may hold: points on P-256, ciphertexts in
range and invertible, counts and names in bounds). The payload checks
themselves live with the protocols (``intersection_sum.check_message``,
``federation_total.check_message``); this module adds the strict parse (no
unknown fields) and the open/close envelopes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..audit.messages import parse_exact, register_message_check
from ..crypto.paillier import KEY_BITS
from ..identifiers import KINDS
from ..names import NAME_PATTERN
from ..protocols import federation_total, intersection_sum
from ..v1 import node_pb2 as pb

_HEX_ID = re.compile(r"^[0-9a-f]{32}\Z")


def register_step_checks(protocol: str, cls, check_message, step_of, steps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Register the checks of a protocol whose messages are all one ``cls`` and travel
    in chunks: ``<step>-chunk`` for each of ``steps`` (sent; the value describes what
    the step carries and what protects it, for the report), and the received
    ``message-chunk``/``reply-chunk``, which are recorded before their step is
    known (``step_of`` takes it from the message)."""

    def checker(step: str | None) -> Callable[[str, bytes], list[str]]:
        def check(recorded_step: str, payload: bytes) -> list[str]:
            parse_exact(cls, payload)
            check_message(step or step_of(payload), payload)
            return []

        return check

    for name, description in steps.items():
        register_message_check(protocol, f"{name}-chunk", checker(name), description=description)
    for step, sender in (("message-chunk", "requester"), ("reply-chunk", "responder")):
        register_message_check(protocol, step, checker(None),
                               description=f"a {protocol} message from the {sender}, recorded before its step is read "
                                           "from it: one of the steps above")


def _sum_open(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.SumOpenRequest, payload)
    problems = []
    if not NAME_PATTERN.match(m.dataset):
        problems.append("dataset is not a plain name")
    if m.kind.kind not in KINDS or not 1 <= m.kind.version <= 1000:
        problems.append("kind is not a known identifier kind")
    if m.key_bits not in KEY_BITS:
        problems.append(f"key_bits {m.key_bits} is not an allowed key size")
    if m.value_holder not in (pb.VALUE_HOLDER_REQUESTER, pb.VALUE_HOLDER_RESPONDER):
        problems.append("value_holder is unspecified")
    if m.job_id and not _HEX_ID.match(m.job_id):
        problems.append("job_id is not a run id")
    return problems


def _sum_opened(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.SumOpenResponse, payload)
    return [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]


def _sum_close(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.PsiCloseRequest, payload)
    problems = [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]
    if m.outcome not in ("done", "failed", ""):
        problems.append("outcome holds free text")
    return problems


def _parsed(cls) -> Callable[[str, bytes], list[str]]:  # type: ignore[no-untyped-def]
    def check(step: str, payload: bytes) -> list[str]:
        parse_exact(cls, payload)
        return []

    return check


_FEDERATION_TYPES = {
    "join": pb.FederationJoinRequest, "joined": pb.FederationJoinResponse, "pass": pb.FederationPassRequest,
    "passed": pb.FederationPassResponse, "release": pb.FederationReleaseRequest,
}


def _federation(step: str, payload: bytes) -> list[str]:
    m = parse_exact(_FEDERATION_TYPES[step], payload)
    problems = []
    if step in ("join", "pass", "release") and not _HEX_ID.match(m.run_id):
        problems.append("run_id is not a run id")
    if step in ("join", "pass"):
        route = pb.FederationRoute.FromString(m.signed_route.body)
        if not NAME_PATTERN.match(route.metric) or not all(NAME_PATTERN.match(r) for r in route.members):
            problems.append("the route's metric or members hold something other than plain names")
    if step == "release" and not NAME_PATTERN.match(m.metric):
        problems.append("metric is not a plain name")
    federation_total.check_message(step, payload)
    return problems


#: What each intersection-sum step carries and what protects it (README, "Intersection-sum").
SUM_STEPS = {
    "start": "control message: no content (the matcher may begin)",
    "blinded-set": "the matcher's items hashed to P-256 and blinded with its secret scalar, shuffled "
                   "(32-byte x coordinates)",
    "double-blinded": "the value holder's Paillier public key with its proof that the modulus is well formed, the "
                      "matcher's points blinded again (shuffled), and its own blinded items, each with the Paillier "
                      "encryption of its amount",
    "encrypted-sum": "the intersection size and one re-randomized Paillier ciphertext of the sum, which only the "
                     "value holder can decrypt",
    "sum": "the intersection size and the decrypted sum (clipped and noised when [privacy] is on): the session's "
           "result, disclosed to the peer",
    "ack": "control message: no content (the matcher received the sum)",
}
FEDERATION_STEPS = {
    "join": "a federation total's route, signed by its initiator: run id, metric name, the members in order, k, "
            "the initiator's fresh Paillier public key, issue and expiry times",
    "joined": "a member's signed X25519 key for the run's pairwise masks",
    "pass": "one hop of a federation total: the signed route, every member's signed mask key, and the running "
            "total under the initiator's Paillier key, masked (each figure noised first when [privacy] is on)",
    "passed": "the last member's signed final: the masked total's ciphertext, which only the initiator can decrypt",
    "release": "the decrypted total and its contributor count, released to a member (a disclosure)",
}

register_step_checks("intersection-sum", pb.SumMessage, intersection_sum.check_message, intersection_sum.step_of,
                     SUM_STEPS)
register_message_check("intersection-sum", "open", _sum_open,
                       description="intersection-sum open, metadata: dataset name, kind, the requester's set size, "
                                   "who holds the values, Paillier key size")
register_message_check("intersection-sum", "opened", _sum_opened,
                       description="intersection-sum session opened, metadata: session id and limits")
register_message_check("intersection-sum", "close", _sum_close, description="no content: the session id and an outcome word")
register_message_check("intersection-sum", "closed", _parsed(pb.PsiCloseResponse), description="no content")
for _step in _FEDERATION_TYPES:
    register_message_check("federation-total", _step, _federation, description=FEDERATION_STEPS[_step])
register_message_check("federation-total", "released", _parsed(pb.FederationReleaseResponse), description="no content")
