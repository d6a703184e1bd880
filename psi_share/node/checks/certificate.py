"""The ``tls`` check: what the certificate a peer's server presents is worth.

The certificate is taken from a TLS connection of our own without the TLS
library's verdict (:meth:`PeerClient.server_certificate` with
``verify=False``), so that each property is checked and named here on its
own: it is signed by the federation CA, it names the peer (CN and DNS SAN),
it is within its validity on our clock (a warning when it ends within
:data:`EXPIRY_WARNING_DAYS`), and our revocation list does not revoke it.
Every real call still goes through gRPC's own verification and the
client's revocation check; this only says precisely what is wrong.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from ...errors import PkiError
from ...pki import node_name_of
from .report import FAIL, OK, WARN, PeerReport

EXPIRY_WARNING_DAYS = 30


def check_certificate(report: PeerReport, cert: x509.Certificate, *, ca: x509.Certificate | None,
                      crl, now: dt.datetime) -> bool:  # type: ignore[no-untyped-def]
    """Add the ``tls`` finding for ``cert``; False when the peer cannot be trusted."""
    peer, where = report.peer, f"the server at {report.address}"
    serial = format(cert.serial_number, "x")
    facts = {"serial": serial, "subject": cert.subject.rfc4514_string(),
             "not_after": cert.not_valid_after_utc.isoformat()}
    problem = _untrusted(cert, peer, ca)
    if problem:
        report.add("tls", FAIL, f"{where} presents no federation certificate naming {peer}: {problem}", **facts)
        return False
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        report.add("tls", FAIL, f"{where} presents certificate {serial}, outside its validity "
                   f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}) on our clock", **facts)
        return False
    if crl is not None and crl.is_revoked(cert.serial_number):
        report.add("tls", FAIL, f"{where} presents certificate {serial}, which the federation CA has revoked "
                   "(our revocation list)", **facts)
        return False
    left = cert.not_valid_after_utc - now
    summary = (f"certificate {serial} from the federation CA names {peer}, not revoked, "
               f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    if left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        report.add("tls", WARN, f"{summary}: it expires in {left.days} days; {peer} needs a new one from the CA",
                   **facts, expires_in_days=left.days)
    else:
        report.add("tls", OK, summary, **facts, expires_in_days=left.days)
    return True


def _untrusted(cert: x509.Certificate, peer: str, ca: x509.Certificate | None) -> str:
    """Why ``cert`` is not the federation's certificate for ``peer`` ('' when it is)."""
    if ca is None:
        return "this node has no federation CA certificate to check it against"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - ValueError, TypeError, InvalidSignature: all mean "not ours"
        return f"it is not signed by the federation CA (its issuer: {cert.issuer.rfc4514_string()})"
    try:
        named = node_name_of(cert)
    except PkiError as exc:
        return str(exc)
    if named != peer:
        return f"it names {named!r}: the address of {peer} reaches another member's node"
    return ""
