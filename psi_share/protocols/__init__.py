"""Protocols as sans-IO state machines, and the registry that names them.

A protocol module holds pure state machines: bytes and small frozen
dataclasses go in, bytes and results come out. Sockets, SQLite, clocks and
randomness are passed in by the caller (the node), never reached for. Each
protocol registers a :class:`ProtocolSpec` saying what each party learns;
the README's disclosure table and ``psi-share node info`` are built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

#: Version of the node-to-node wire contract spoken by this software.
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    asks: str
    requester_learns: str
    responder_learns: str


_REGISTRY: dict[str, ProtocolSpec] = {}
PROTOCOLS = MappingProxyType(_REGISTRY)


def register_protocol(spec: ProtocolSpec) -> ProtocolSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"protocol {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


from . import psi  # noqa: E402,F401  (registers itself)
from . import intersection_sum  # noqa: E402,F401  (registers itself)
from . import federation_total  # noqa: E402,F401  (registers itself)
from . import cardinality  # noqa: E402,F401  (registers itself)

__all__ = ["PROTOCOLS", "PROTOCOL_VERSION", "ProtocolSpec", "register_protocol"]
