"""Checks this node runs against its peers: ``psi-share peers check``.

``check_peers(node, ["lab-b"])`` returns one :class:`PeerReport` per peer
(connect, TLS, access, identity, versions, grants and canary PSI sessions on
synthetic items); :func:`exit_code` turns reports into the command's exit
code. See :mod:`.peer` for the order of the checks.
"""

from .canary import DEFAULT_SIZES
from .peer import check_peer, check_peers
from .report import EXIT_CHECK_FAILED, EXIT_UNREACHABLE, FAIL, OK, SKIPPED, WARN, Finding, PeerReport, exit_code

__all__ = [
    "DEFAULT_SIZES",
    "EXIT_CHECK_FAILED",
    "EXIT_UNREACHABLE",
    "FAIL",
    "OK",
    "SKIPPED",
    "WARN",
    "Finding",
    "PeerReport",
    "check_peer",
    "check_peers",
    "exit_code",
]
