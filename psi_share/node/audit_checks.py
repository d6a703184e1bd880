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

_HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def register_step_checks(protocol: str, cls, check_message, step_of, steps) -> None:  # type: ignore[no-untyped-def]
    """Register the checks of a protocol whose messages are all one ``cls`` and travel
    in chunks: ``<step>-chunk`` for each of ``steps`` (sent), and the received
    ``message-chunk``/``reply-chunk``, which are recorded before their step is
    known (``step_of`` takes it from the message)."""

    def checker(step: str | None) -> Callable[[str, bytes], list[str]]:
        def check(recorded_step: str, payload: bytes) -> list[str]:
            parse_exact(cls, payload)
            check_message(step or step_of(payload), payload)
            return []

        return check

    for name in steps:
        register_message_check(protocol, f"{name}-chunk", checker(name))
    register_message_check(protocol, "message-chunk", checker(None))
    register_message_check(protocol, "reply-chunk", checker(None))


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


def _federation(step: str, payload: bytes) -> list[str]:
    types = {"pass": pb.FederationPassRequest, "passed": pb.FederationPassResponse, "release": pb.FederationReleaseRequest}
    m = parse_exact(types[step], payload)
    problems = []
    if step in ("pass", "release") and not _HEX_ID.match(m.run_id):
        problems.append("run_id is not a run id")
    if step == "pass" and (not NAME_PATTERN.match(m.metric) or not NAME_PATTERN.match(m.initiator)
                           or not all(NAME_PATTERN.match(r) for r in m.route)):
        problems.append("metric, initiator or route holds something other than plain names")
    federation_total.check_message(step, payload)
    return problems


register_step_checks("intersection-sum", pb.SumMessage, intersection_sum.check_message, intersection_sum.step_of,
                     intersection_sum.STEPS)
register_message_check("intersection-sum", "open", _sum_open)
register_message_check("intersection-sum", "opened", _sum_opened)
register_message_check("intersection-sum", "close", _sum_close)
register_message_check("intersection-sum", "closed", _parsed(pb.PsiCloseResponse))
for _step in ("pass", "passed", "release"):
    register_message_check("federation-total", _step, _federation)
register_message_check("federation-total", "released", _parsed(pb.FederationReleaseResponse))
