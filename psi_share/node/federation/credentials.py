"""What a node signs and checks federation statements with: its federation
certificate and key (the TLS ones), the federation CA and its revocation list.

A federation total's route, member keys and final are signed with the
ECDSA P-256 key of the node's certificate, so that every member can check
every statement against the federation CA, as it checks a TLS peer. With
``--insecure`` there is no certificate, so there are no federation totals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ...errors import ConfigError, Refused
from ...protocols.federation_route import RouteRejected, Signer, Trust

# The status a member answers with, by refusal reason (RouteRejected.reason).
REFUSAL_CODES = {
    "unsigned-route": "FAILED_PRECONDITION",
    "route-version": "FAILED_PRECONDITION",
    "malformed": "INVALID_ARGUMENT",
    "not-a-member": "INVALID_ARGUMENT",
    "duplicate-member": "INVALID_ARGUMENT",
    "signature": "PERMISSION_DENIED",
    "certificate": "PERMISSION_DENIED",
    "not-initiator": "PERMISSION_DENIED",
    "previous-hop": "PERMISSION_DENIED",
    "member-keys": "PERMISSION_DENIED",
    "final": "PERMISSION_DENIED",
    "too-few-members": "FAILED_PRECONDITION",
    "unknown-member": "FAILED_PRECONDITION",
    "expired": "FAILED_PRECONDITION",
    "replay": "FAILED_PRECONDITION",
    "not-joined": "FAILED_PRECONDITION",
    "difference": "FAILED_PRECONDITION",
}


def refusal(exc: RouteRejected) -> Refused:
    """The status a member sends for ``exc``, carrying its reason to the audit log."""
    return Refused(REFUSAL_CODES.get(exc.reason, "INVALID_ARGUMENT"), str(exc), reason=exc.reason)


@dataclass(frozen=True)
class Credentials:
    signer: Signer
    trust: Trust


def load_credentials(tls, clock: Callable[[], float]) -> Credentials:  # type: ignore[no-untyped-def]
    """Credentials from a node's :class:`~psi_share.pki.NodeTls` (already checked to fit together)."""
    if tls is None:
        raise ConfigError("federation totals sign their routes with this node's federation certificate, which "
                          "--insecure does not use: run them with TLS")
    key = serialization.load_pem_private_key(tls.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{tls.key_path}: not an elliptic-curve key")
    certificate = x509.load_pem_x509_certificate(tls.cert_pem).public_bytes(serialization.Encoding.DER)
    revocations = tls.crl
    return Credentials(
        Signer(tls.name, key, certificate),
        Trust(tls.ca_cert, revocations.is_revoked if revocations is not None else (lambda serial: False), clock),
    )
