"""gRPC transport: servicer, peer client, chunking, and the single egress point.

The transport only adapts: it turns protobuf messages into the protocol
core's dataclasses and bytes, calls plain Python (the node's
:class:`~psi_share.node.psi.responder.Responder`), and maps errors to gRPC status
codes. Every message this node sends to a peer passes through
:class:`~psi_share.transport.egress.Egress`.
"""
