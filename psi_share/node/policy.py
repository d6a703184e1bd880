"""What a peer may ask of this node: the single place policy is decided.

Every protocol's responder builds an :class:`AccessRequest` when a peer opens
a session and calls :meth:`Policy.check` before doing any work. A refusal is a
:class:`~psi_share.errors.Refused` carrying the gRPC status the peer sees and
a message its operator can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import NotFound, Refused, VersionMismatch
from ..identifiers import KINDS
from ..store import Store
from .config import NodeConfig


@dataclass(frozen=True)
class AccessRequest:
    """One session a peer asks to open, as far as policy is concerned."""

    protocol: str  # a name from psi_share.protocols.PROTOCOLS
    dataset: str  # our dataset the peer wants to match against
    kinds: Mapping[str, int] = field(default_factory=dict)  # kind -> canonicalization version
    set_size: int = 0  # items the peer will send
    reveal: bool = False  # whether the peer would learn which items match


class Policy:
    def __init__(self, config: NodeConfig, store: Store) -> None:
        self.config = config
        self._store = store

    def check(self, peer: str, request: AccessRequest) -> None:
        """Raise :class:`Refused` (or :class:`VersionMismatch`) unless
        ``peer`` may open ``request``."""
        name = self.config.name
        exposure = self.config.exposure
        if request.dataset not in exposure.datasets:
            raise Refused("NOT_FOUND", f"no dataset {request.dataset!r} is exposed to peers by {name}")
        try:
            self._store.dataset(request.dataset)
        except NotFound:
            raise Refused("NOT_FOUND", f"dataset {request.dataset!r} of {name} holds no data yet") from None
        allowed = set(self.config.exposed_kinds())
        for kind, version in sorted(request.kinds.items()):
            if kind not in KINDS:
                raise VersionMismatch(f"identifier kind {kind!r} is unknown to {name}")
            if version != KINDS[kind].version:
                raise VersionMismatch(
                    f"kind {kind}: requester canonicalizes with version {version}, "
                    f"{name} with version {KINDS[kind].version}; both sides must upgrade to the same version"
                )
            if kind not in allowed:
                raise Refused("PERMISSION_DENIED", f"{name} does not expose identifier kind {kind!r}")
        if request.reveal and not exposure.reveal:
            raise Refused("PERMISSION_DENIED", f"{name} answers count-only sessions only; ask with --count")
        if request.set_size > self.config.matching.max_set_size:
            raise Refused(
                "INVALID_ARGUMENT",
                f"set of {request.set_size} items exceeds {name}'s limit of {self.config.matching.max_set_size}",
            )
