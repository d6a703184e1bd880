"""Federation totals on a node: the initiator's run and each contributor's part.

See :mod:`psi_share.protocols.federation_total` for the protocol and who
learns what.
"""

from .service import FederationOutcome, FederationService

__all__ = ["FederationOutcome", "FederationService"]
