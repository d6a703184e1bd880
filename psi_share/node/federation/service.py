"""Federation totals on a node: both roles behind one object.

See :mod:`psi_share.protocols.federation_total` for the protocol and who
learns what. The initiator's run is :mod:`.initiator`; a member's join,
pass and release are :mod:`.contributor`; the figure each adds (the DP seam)
and the differencing rule are :mod:`.figures`. A member adds the figure it
holds for the run's metric (``psi-share federation figure METRIC VALUE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...store import Store
from ...transport.client import PeerClient
from ...v1 import node_pb2 as pb
from ..config import NodeConfig
from ..policy import Policy
from .context import FederationContext
from .contributor import FederationMember
from .credentials import Credentials
from .figures import FigureNoise, exact_figure
from .initiator import FederationOutcome, FederationRunner, TotalRequest

__all__ = ["FederationOutcome", "FederationService"]


class FederationService:
    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        policy: Policy,
        peer_client: Callable[[str], PeerClient],
        credentials: Callable[[], Credentials],
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        figure_noise: FigureNoise = exact_figure,  # DP: psi_share/privacy/ plugs its per-figure noise in here
    ) -> None:
        self.config = config
        self._ctx = FederationContext(config, store, policy, peer_client, credentials, clock, random_bytes, figure_noise)
        self.member = FederationMember(self._ctx)
        self.runner = FederationRunner(self._ctx)

    def set_figure_noise(self, noise: FigureNoise) -> None:
        """The DP seam: every figure this node contributes from now on, as initiator
        or member, passes through ``noise`` before it is masked and encrypted."""
        self._ctx.figure_noise = noise

    # -- member (served) --------------------------------------------------------

    def on_join(self, peer: str, message: pb.FederationJoinRequest) -> pb.FederationSigned:
        return self.member.on_join(peer, message)

    def on_pass(self, peer: str, message: pb.FederationPassRequest) -> pb.FederationSigned:
        return self.member.on_pass(peer, message)

    def on_release(self, peer: str, message: pb.FederationReleaseRequest) -> None:
        self.member.on_release(peer, message)

    # -- initiator -----------------------------------------------------------------

    def run_total(
        self,
        metric: str,
        participants: Sequence[str],
        *,
        min_contributors: int | None = None,
        key_bits: int | None = None,
        job_run_id: str | None = None,
    ) -> FederationOutcome:
        return self.runner.run(TotalRequest(metric, tuple(participants), min_contributors, key_bits, job_run_id))
