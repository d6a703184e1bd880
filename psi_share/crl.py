"""The revocation list a node enforces, and CRL numbers that only go up.

The federation CA numbers every CRL it signs (the X.509 CRL number
extension, RFC 5280 section 5.2.3): 1 at ``pki init-ca``, one more at each
``pki revoke`` and ``pki refresh-crl``. A node re-reads its ``crl.pem``
whenever the file changes, so a new CRL dropped in place takes effect
without a restart -- but it never goes back. A CRL with a lower number than
the one in force, or without a number once a numbered one is in force, is
refused: an older CRL, genuine and signed by the CA, would re-admit every
certificate revoked since. The refusal is logged as a warning naming both
numbers, and the CRL in force stays in force.

The node keeps a copy of the CRL in force in its home (``tls/``
:data:`CRL_IN_FORCE`), so that a restart keeps it too: a node started with
an older ``crl.pem`` enforces the copy and says so. Someone who can delete
that copy *and* replace ``crl.pem`` can still roll back across a restart;
a running node keeps what it enforces in memory whatever happens on disk.
A missing, unreadable or unsigned ``crl.pem`` never opens the door either:
the CRL in force stays (and a node cannot start without a CRL at all).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import PkiError

CRL_IN_FORCE = "crl-in-force.pem"

log = logging.getLogger(__name__)


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    """The CRL's number, or None when it carries no CRL number extension."""
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def load_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    """Load a CRL and check that the federation CA signed it."""
    return _checked_crl(_read(path), path, ca_cert)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: no such revocation list") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot be read: {exc.strerror}") from None


def _checked_crl(data: bytes, path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM revocation list: {exc}") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"{path}: revocation list is not signed by the federation CA")
    return crl


class RevocationList:
    """The CRL a node enforces: ``path`` re-read whenever it changes on disk,
    never for one with a lower CRL number than the one in force.

    ``in_force``: where the node keeps a copy of the CRL in force (``None``:
    in memory only, e.g. while checking a 'pki issue' output).
    """

    def __init__(self, path: Path, ca_cert: x509.Certificate, *, in_force: Path | None = None) -> None:
        self.path = path
        self._ca = ca_cert
        self._in_force = in_force
        self._seen: bytes | None = None  # the content of ``path`` last taken into account
        self._revoked: frozenset[int] = frozenset()
        self.number: int | None = None  # the CRL number in force (None: none seen yet, or an unnumbered CRL)
        self.next_update: dt.datetime | None = None
        self.refused = ""  # why the CRL at ``path`` is not the one in force ("" when it is)
        self._failed = ""  # the last load error logged, to log each only once
        # One reload at a time, and no answer while one runs: a handshake that saw the new file
        # as already read ("_seen") must not answer from the revoked set the reload is replacing
        # (a revoked member's call got through that gap while 40 arrived at once).
        self._lock = threading.RLock()
        self._enforce_kept_copy()
        self.reload()

    def reload(self) -> None:
        """Take ``path`` into account if its content changed since the last read.

        Raises PkiError when it is missing, unreadable or not signed by the
        CA; logs a warning when its CRL number is refused. Either way the CRL
        in force stays in force.
        """
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        # The bytes, not the mtime, tell a change: two CRLs copied within one
        # clock tick can share an mtime and a size. A CRL is a few KiB.
        data = _read(self.path)
        if data == self._seen:
            return
        crl = _checked_crl(data, self.path, self._ca)
        self._seen = data  # a refused file is not considered again until it changes
        why = self._goes_back(crl)
        if why:
            self.refused = f"{self.path}: {why}"
            log.warning("%s; CRL number %s stays in force", self.refused, self.number)
            return
        self.refused = ""
        self._enforce(crl)
        self._keep(crl)

    def is_revoked(self, serial: int) -> bool:
        with self._lock:
            try:
                self._reload()
            except PkiError as exc:
                # A CRL that became unreadable or unsigned must not open the door:
                # keep enforcing the one in force.
                if str(exc) != self._failed:
                    log.warning("%s; CRL number %s stays in force", exc, self.number)
                    self._failed = str(exc)
            return serial in self._revoked

    def stale(self, now: dt.datetime) -> bool:
        return self.next_update is not None and now > self.next_update

    def _goes_back(self, crl: x509.CertificateRevocationList) -> str:
        """Why ``crl`` may not replace the CRL in force ("" if it may)."""
        new = crl_number(crl)
        if self.number is None:
            return ""  # nothing numbered in force yet
        if new is None:
            return (f"refused a revocation list without a CRL number: this node already enforces CRL number "
                    f"{self.number}, and an unnumbered list could be older")
        if new < self.number:
            return (f"refused CRL number {new}: this node already enforces CRL number {self.number}, and CRL "
                    "numbers only go up (an older list would re-admit certificates revoked since)")
        return ""

    def _enforce(self, crl: x509.CertificateRevocationList) -> None:
        self._revoked = frozenset(r.serial_number for r in crl)
        self.number = crl_number(crl)
        self.next_update = crl.next_update_utc

    def _enforce_kept_copy(self) -> None:
        """Start from the copy of the CRL in force a previous run kept, if it is the CA's."""
        if self._in_force is None or not self._in_force.exists():
            return
        try:
            self._enforce(load_crl(self._in_force, self._ca))
        except PkiError as exc:
            log.warning("%s; ignored: the CRL number this node enforced before is not known", exc)

    def _keep(self, crl: x509.CertificateRevocationList) -> None:
        if self._in_force is None:
            return
        pem = crl.public_bytes(serialization.Encoding.PEM)
        try:
            if self._in_force.exists() and self._in_force.read_bytes() == pem:
                return
            tmp = self._in_force.with_name(f"{self._in_force.name}.{os.getpid()}.tmp")
            tmp.write_bytes(pem)
            os.replace(tmp, self._in_force)
        except OSError as exc:
            log.warning("cannot keep a copy of the CRL in force in %s (%s): after a restart this node would not "
                        "know it enforced CRL number %s", self._in_force, exc, self.number)
