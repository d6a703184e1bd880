"""Audit message checks for the cardinality protocol, registered with
:mod:`psi_share.audit.messages` by (protocol, Egress step).

``psi-share audit scan`` reassembles chunked steps and calls these with the
exact bytes a node sent or received. The payload checks live with the
protocol (:func:`psi_share.protocols.cardinality.check_message`: points on
P-256 in ascending order, a withheld count that carries no count); this
module adds the strict parse (no unknown fields, through
``audit_checks.register_step_checks``) and the open/close envelopes. The
close messages are PSI's, so PSI's checks serve.
"""

from __future__ import annotations

import re

from ...audit.messages import _psi_close, _psi_closed, parse_exact, prompt_params_problems, register_message_check
from ...identifiers import KINDS
from ...names import NAME_PATTERN
from ...protocols import cardinality
from ...v1 import node_pb2 as pb
from ..audit_checks import register_step_checks

_HEX_ID = re.compile(r"^[0-9a-f]{32}\Z")
PROTOCOL = cardinality.SPEC.name


def _open(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.CardinalityOpenRequest, payload)
    problems = [] if NAME_PATTERN.match(m.dataset) else ["dataset is not a plain name"]
    problems += ["kinds names an unknown kind" for kv in m.kinds if kv.kind not in KINDS or not 1 <= kv.version <= 1000]
    problems += prompt_params_problems(m)
    if m.job_id and not _HEX_ID.match(m.job_id):
        problems.append("job_id is not a run id")
    return problems


def _opened(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.CardinalityOpenResponse, payload)
    return [] if _HEX_ID.match(m.session_id) else ["session_id is not a session id"]


#: What each cardinality step carries and what protects it (the report's table).
STEPS = {
    "queries": "the requester's items as P-256 points blinded under its key, sorted; that key times the generator",
    "session-set": "the responder's items blinded under a fresh session key, mixed with random decoys, sorted",
    "reblinded": "the session-set re-blinded under the requester's key, sorted",
    "count": "one number: the count released (after min_result, and noise when [privacy] is on) or 'withheld'",
}

register_step_checks(PROTOCOL, pb.CardinalityMessage, cardinality.check_message, cardinality.step_of, STEPS)
register_message_check(PROTOCOL, "open", _open, description="cardinality open, metadata: dataset name, kinds, the "
                                                            "requester's set size")
register_message_check(PROTOCOL, "opened", _opened, description="cardinality session opened, metadata: session id, "
                                                                "limits, minimum result")
register_message_check(PROTOCOL, "close", _psi_close, description="no content: the session id and an outcome word")
register_message_check(PROTOCOL, "closed", _psi_closed, description="no content")
