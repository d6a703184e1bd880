"""What both roles of federation totals use on a node, wired once by the node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...errors import NotFound
from ...store import Store
from ...transport.client import PeerClient
from ..config import NodeConfig
from ..policy import Policy
from .credentials import Credentials
from .figures import FigureNoise, exact_figure


@dataclass
class FederationContext:
    config: NodeConfig
    store: Store
    policy: Policy
    peer_client: Callable[[str], PeerClient]
    credentials: Callable[[], Credentials]  # the node's federation key and certificate, the CA, the CRL
    clock: Callable[[], float]
    random_bytes: Callable[[int], bytes]
    figure_noise: FigureNoise = exact_figure  # the DP seam (figures.py)

    def is_known(self, name: str) -> bool:
        """Whether ``name`` is one of our peers (a route may name only those)."""
        try:
            self.store.peer(name)
        except NotFound:
            return False
        return True
