"""The bodies of the witness RPCs, served by ``NodeServicer`` through its
``_rpc`` decorator (which authenticates the caller, records the request and
turns errors into statuses; see ``server.py``).

Thin, like every servicer method: the node's witness (``responder.witness``,
:class:`psi_share.node.witness.Witness`) checks and stores, and the reply
goes out through the egress. What crosses is audit metadata (signed heads of
audit logs, certificates binding audit keys), never customer data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..v1 import node_pb2 as pb

if TYPE_CHECKING:
    from .server import NodeServicer, _Call

PROTOCOL = "witness"
_Answer = Callable[[], Any]


def exchange(self: NodeServicer, request: pb.WitnessHeadsRequest, call: _Call) -> _Answer:
    """The caller's head is checked and stored; our head, taken after that, goes back."""
    reply = self._responder.witness.exchange_heads(call.peer, request)
    return lambda: self._egress.send(reply, peer=call.peer, protocol=PROTOCOL, step="exchanged",
                                     parameters={"count": reply.head.count})


def held(self: NodeServicer, request: pb.GetWitnessedHeadsRequest, call: _Call) -> _Answer:
    """The heads of the caller's own log we hold (the caller is the node its certificate names)."""
    reply = self._responder.witness.held_for(call.peer)
    return lambda: self._egress.send(reply, peer=call.peer, protocol=PROTOCOL, step="held", items=len(reply.heads))
