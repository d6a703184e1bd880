"""The bodies of the cardinality RPCs, served by ``NodeServicer`` through its
``_rpc`` decorator (which authenticates, records the request and turns errors
into statuses; see ``server.py``).

Thin, like every servicer method: decode, call the node's cardinality
responder (``responder.counts``), and return the function that sends the
reply through the egress. The count a peer receives is recorded as a
disclosure before the message that carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import RemoteProtocolError
from ..protocols import PROTOCOL_VERSION
from ..prompts.wire import from_message
from ..protocols.cardinality import CardinalityOpen
from ..v1 import node_pb2 as pb

if TYPE_CHECKING:
    from .server import NodeServicer, _Call

PROTOCOL = "cardinality"
_Answer = Callable[[], Any]


def prompt_params_of(request: pb.PsiOpenRequest | pb.CardinalityOpenRequest) -> dict[str, object] | None:
    """The prompt parameter set an open message carries (None: none sent)."""
    return from_message(request.prompt_params, request.HasField("prompt_params"))


def open_session(self: NodeServicer, request: pb.CardinalityOpenRequest, call: _Call) -> _Answer:
    kinds = {kv.kind: kv.version for kv in request.kinds}
    if len(kinds) != len(request.kinds):
        raise RemoteProtocolError("CardinalityOpen.kinds names a kind twice")
    open_ = CardinalityOpen(
        dataset=request.dataset, kinds=kinds, set_size=request.set_size, job_id=request.job_id,
        protocol_version=request.protocol_version,
        prompt_params=prompt_params_of(request),
    )
    opened = self._responder.counts.open(call.peer, open_)
    reply = pb.CardinalityOpenResponse(
        protocol_version=PROTOCOL_VERSION, session_id=opened.session_id, max_set_size=opened.max_set_size,
        session_ttl_seconds=opened.session_ttl_seconds, min_result=opened.min_result,
    )
    return lambda: self._egress.send(
        reply, peer=call.peer, protocol=PROTOCOL, step="opened", session_id=opened.session_id, job_id=request.job_id,
        parameters={"mode": "count", "requester_items": open_.set_size, "min_result": opened.min_result,
                    "kinds": sorted(open_.kinds), "curve": "P-256"},
    )


def exchange(self: NodeServicer, request_iterator: Iterator[pb.Chunk], call: _Call) -> _Answer:
    first = self._first_chunk(request_iterator, "CardinalityExchange", call, sid_first=True)
    peer, sid = call.peer, call.session_id
    counts = self._responder.counts
    limit = counts.request_limit(peer, sid)
    data = b"".join(self._stream_pieces(first, request_iterator, peer, PROTOCOL, "message-chunk", limit, counts.abort))
    reply = counts.exchange(peer, sid, data)
    if reply.disclosed is not None:
        self._egress.disclosed(peer=peer, protocol=PROTOCOL, session_id=sid, result=reply.disclosed)
    return lambda: self._send_aggregate_chunks(peer, sid, reply.step, reply.payload, reply.items, PROTOCOL)


def close_session(self: NodeServicer, request: pb.PsiCloseRequest, call: _Call) -> _Answer:
    self._responder.counts.close(call.peer, request.session_id, request.outcome[:200])
    reply = pb.PsiCloseResponse(protocol_version=PROTOCOL_VERSION)
    return lambda: self._egress.send(
        reply, peer=call.peer, protocol=PROTOCOL, step="closed", session_id=request.session_id,
    )
