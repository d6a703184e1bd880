"""What crosses the node's boundary: the events every egress recorder sees.

The transport reports each message it sends or receives as a
:class:`WireEvent` and each result a peer learns from us as a
:class:`Disclosure`; recorders (the compliance audit log among them)
implement :class:`Recorder`. These types sit at the ground floor so that the
audit, below the transport, can record them without importing the transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class WireEvent:
    """One message that crossed (or is about to cross) the node's boundary."""

    direction: str  # "sent" or "received"
    peer: str
    protocol: str  # e.g. "psi", "node"
    step: str  # e.g. "open", "response-chunk"
    session_id: str
    byte_length: int
    sha256: str
    items: int = 0
    job_id: str = ""
    parameters: Mapping[str, object] = field(default_factory=dict)
    # The exact bytes, for recorders that keep transcripts. Never logged.
    payload: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class Disclosure:
    """A result a peer received from us (a count, a sum, a total, matches).

    Recorded when the result is handed to the peer, so the compliance
    ledger shows every figure each peer learned from this node.
    """

    peer: str
    protocol: str
    session_id: str
    result: Mapping[str, object]  # e.g. {"intersection_size": 12, "sum": 3400}
    job_id: str = ""


class Recorder(Protocol):
    def record(self, event: WireEvent) -> None: ...

    def record_disclosure(self, disclosure: Disclosure) -> None: ...


__all__ = ["Disclosure", "Recorder", "WireEvent"]
