"""The federation's PKI: its certificate authority, node certificates, revocation.

Who holds what
--------------
* The **federation CA** (one directory, kept by whoever the labs' forum
  chooses): ``ca.key`` (mode 0600, never leaves that directory), ``ca.crt``
  (public, every node trusts it), ``crl.pem`` (the signed revocation list
  every node loads, numbered 1, 2, 3, ... as it is re-signed) and
  ``issued/`` (a copy of every certificate issued, so that ``revoke NAME``
  knows the serial numbers).
* A **node** holds, in ``HOME/tls/``: ``ca.crt``, ``crl.pem``, its own
  ``node.crt`` and ``node.key`` (0600), and ``crl-in-force.pem``: the CRL it
  enforces, which only a CRL with a number at least as high replaces
  (:mod:`psi_share.crl`).

A node certificate names the lab in its subject common name *and* as a DNS
subject alternative name (so that a client can insist that the server it
reached is the peer it meant: gRPC checks the DNS name against
``ssl_target_name_override``), plus SANs for the node's network addresses.
Its identity is that name and nothing else: what a peer writes in a message
never identifies it.

Keys are ECDSA P-256. Private keys are written with mode 0600 through
:func:`write_private` and never logged; nothing here prints key material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .crl import RevocationList, crl_number, load_crl
from .errors import ConfigError, PkiError

NODE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")

CA_KEY, CA_CERT, CRL_FILE, ISSUED_DIR = "ca.key", "ca.crt", "crl.pem", "issued"
NODE_KEY, NODE_CERT = "node.key", "node.crt"

DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 365
DEFAULT_CRL_DAYS = 30


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key: created 0600 (never world-readable, not even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: no such {what}") from None
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM {what}: {exc}") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"{path}: no such private key") from None
    except (ValueError, TypeError):
        # The exception text could quote key bytes: say only what is wrong.
        raise PkiError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an elliptic-curve private key")
    if path.stat().st_mode & 0o077:
        raise PkiError(f"{path}: private key is readable by group or others; chmod 600 it")
    return key


def node_name_of(cert: x509.Certificate) -> str:
    """The node a certificate names: its common name, which must also be a DNS SAN."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError("certificate has no single subject common name naming a node")
    name = str(names[0].value)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError(f"certificate for {name!r} has no subject alternative names") from None
    if name not in sans.get_values_for_type(x509.DNSName):
        raise PkiError(f"certificate for {name!r} does not carry its name as a DNS subject alternative name")
    return name


def issued_member_name(cert: x509.Certificate, ca_cert: x509.Certificate) -> str:
    """The node ``cert`` names, once shown to be issued by the federation CA with
    the name as CN and DNS SAN. What does not change with time (a caller may cache
    it per certificate); :func:`check_member_current` is the rest. Raises PkiError."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError("certificate is not signed by this federation's CA") from None
    return node_name_of(cert)


def check_member_current(cert: x509.Certificate, name: str, is_revoked: Callable[[int], bool], now: dt.datetime) -> None:
    """``cert`` of node ``name`` is within its validity at ``now`` (our clock) and
    not revoked. Raises PkiError."""
    serial = format(cert.serial_number, "x")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(f"certificate {serial} of node {name} is outside its validity period "
                       f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
                       "ask the federation CA for a new one")
    if is_revoked(cert.serial_number):
        raise PkiError(f"certificate {serial} of node {name} is revoked by the federation CA")


def check_member_certificate(cert: x509.Certificate, ca_cert: x509.Certificate,
                             is_revoked: Callable[[int], bool], now: dt.datetime) -> str:
    """The federation member ``cert`` names, once it is shown to be one.

    Checks what gRPC's handshake checks and what it does not: issued by the
    federation CA, the name as CN and DNS SAN, valid at ``now`` (our clock),
    not revoked. Used for certificates carried inside messages (a federation
    total's signed statements); TLS callers get the same two checks, the
    first cached. Raises PkiError.
    """
    name = issued_member_name(cert, ca_cert)
    check_member_current(cert, name, is_revoked, now)
    return name


def describe(cert: x509.Certificate) -> dict[str, object]:
    """Public facts about a certificate (for people; never key material)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san_list = [str(v) for v in sans.get_values_for_type(x509.DNSName)] + [
            str(v) for v in sans.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        san_list = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sans": san_list,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


# -- the CA ------------------------------------------------------------------


@dataclass(frozen=True)
class FederationCA:
    """A CA directory on disk (see the module docstring)."""

    path: Path

    @property
    def cert_path(self) -> Path:
        return self.path / CA_CERT

    @property
    def key_path(self) -> Path:
        return self.path / CA_KEY

    @property
    def crl_path(self) -> Path:
        return self.path / CRL_FILE

    @property
    def issued_path(self) -> Path:
        return self.path / ISSUED_DIR

    def certificate(self) -> x509.Certificate:
        if not self.cert_path.exists():
            raise PkiError(f"{self.path} is not a federation CA (no {CA_CERT}); create one with 'psi-share pki init-ca'")
        return load_certificate(self.cert_path, "CA certificate")

    def _key(self) -> ec.EllipticCurvePrivateKey:
        return load_private_key(self.key_path)

    def issued(self) -> list[x509.Certificate]:
        if not self.issued_path.is_dir():
            return []
        return [load_certificate(p) for p in sorted(self.issued_path.glob("*.crt"))]

    def revoked_serials(self) -> dict[int, dt.datetime]:
        crl = load_crl(self.crl_path, self.certificate())
        return {r.serial_number: r.revocation_date_utc for r in crl}


def init_ca(path: Path, name: str, *, days: int = DEFAULT_CA_DAYS, crl_days: int = DEFAULT_CRL_DAYS,
            now: Callable[[], dt.datetime] = _now) -> FederationCA:
    """Create a federation CA in ``path`` (refuses to overwrite one)."""
    ca = FederationCA(path)
    if ca.key_path.exists() or ca.cert_path.exists():
        raise PkiError(f"{path} already holds a CA ({CA_KEY} or {CA_CERT} exists); refusing to overwrite it")
    if days < 1 or crl_days < 1:
        raise PkiError("validity must be at least one day")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "psi-share federation")])
    start = now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(ca.key_path, _key_pem(key))
    _write_public(ca.cert_path, _pem(cert))
    ca.issued_path.mkdir(exist_ok=True)
    _write_crl(ca, cert, key, [], crl_days, now)
    return ca


def _split_addresses(addresses: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in addresses:
        host = address.strip()
        if host.startswith("[") and "]" in host:  # [v6]:port
            host = host[1:host.index("]")]
        elif host.count(":") == 1:  # host:port
            host = host.split(":")[0]
        if not host:
            raise PkiError(f"address {address!r} names no host")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if NODE_NAME.match(host):
            # A one-label DNS name looks like a node name, and a node name is
            # an identity: only the node's own name may appear that way.
            raise PkiError(f"address {host!r} is a single DNS label, which could name another node; "
                           "give a fully qualified name or an IP address")
        if not re.match(r"^[A-Za-z0-9.-]+$", host):
            raise PkiError(f"address {address!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


@dataclass(frozen=True)
class IssuedNode:
    name: str
    serial: str
    directory: Path
    not_after: dt.datetime


def issue_node(ca: FederationCA, name: str, out: Path, *, addresses: Sequence[str] = (),
               days: int = DEFAULT_NODE_DAYS, now: Callable[[], dt.datetime] = _now) -> IssuedNode:
    """Issue a certificate (and a fresh key) for node ``name`` into directory ``out``.

    ``out`` receives ``node.key`` (0600), ``node.crt``, ``ca.crt`` and
    ``crl.pem``: everything a node home's ``tls/`` folder needs
    (``psi-share init NAME --tls-from OUT`` installs it).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _node_certificate(ca, name, key.public_key(), addresses, days, now)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    write_private(out / NODE_KEY, _key_pem(key))
    return _deliver(ca, cert, out)


def _deliver(ca: FederationCA, cert: x509.Certificate, out: Path) -> IssuedNode:
    """Write node.crt, ca.crt and crl.pem into ``out``; keep a copy of the certificate."""
    out.mkdir(parents=True, exist_ok=True)
    _write_public(out / NODE_CERT, _pem(cert))
    shutil.copyfile(ca.cert_path, out / CA_CERT)
    shutil.copyfile(ca.crl_path, out / CRL_FILE)
    ca.issued_path.mkdir(exist_ok=True)
    serial = format(cert.serial_number, "x")
    _write_public(ca.issued_path / f"{serial}.crt", _pem(cert))
    return IssuedNode(_cn(cert), serial, out, cert.not_valid_after_utc)


def _node_certificate(ca: FederationCA, name: str, public_key: ec.EllipticCurvePublicKey,
                      addresses: Sequence[str], days: int, now: Callable[[], dt.datetime]) -> x509.Certificate:
    if not NODE_NAME.match(name):
        raise PkiError(f"invalid node name {name!r}: lowercase letters, digits, '-' or '_', starting with a letter")
    if days < 1:
        raise PkiError("validity must be at least one day")
    ca_cert, ca_key = ca.certificate(), ca._key()
    sans = [x509.DNSName(name), *_split_addresses(addresses)]
    start = now()
    not_after = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# -- certificate signing requests: the lab keeps its key ---------------------

NODE_CSR = "node.csr"


def create_request(tls_dir: Path, name: str, addresses: Sequence[str] = ()) -> Path:
    """Make (or reuse) this node's key in ``tls_dir`` and write a CSR for ``name``.

    The key never leaves the node: the CA signs the request (``sign_request``)
    and sends back only public files.
    """
    if not NODE_NAME.match(name):
        raise PkiError(f"invalid node name {name!r}")
    tls_dir.mkdir(parents=True, exist_ok=True)
    key_path = tls_dir / NODE_KEY
    if key_path.exists():
        key = load_private_key(key_path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, _key_pem(key))
    sans = [x509.DNSName(name), *_split_addresses(addresses)]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tls_dir / NODE_CSR
    _write_public(path, csr.public_bytes(serialization.Encoding.PEM))
    return path


def sign_request(ca: FederationCA, csr_path: Path, out: Path, *, days: int = DEFAULT_NODE_DAYS,
                 now: Callable[[], dt.datetime] = _now) -> IssuedNode:
    """Issue a certificate for a node's CSR; ``out`` gets node.crt, ca.crt, crl.pem (no key)."""
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{csr_path}: no such certificate request") from None
    except ValueError as exc:
        raise PkiError(f"{csr_path}: not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError(f"{csr_path}: the request's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise PkiError(f"{csr_path}: the request's key is not an ECDSA P-256 key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError(f"{csr_path}: the request names no single node (subject common name)")
    name = str(names[0].value)
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        requested = x509.SubjectAlternativeName([])
    # Addresses are re-derived and re-checked by the same rules as 'issue'.
    addresses = [str(ip) for ip in requested.get_values_for_type(x509.IPAddress)]
    addresses += [d for d in requested.get_values_for_type(x509.DNSName) if d != name]
    cert = _node_certificate(ca, name, public_key, addresses, days, now)
    return _deliver(ca, cert, out)


def revoke(ca: FederationCA, *, name: str | None = None, serial: str | None = None,
           crl_days: int = DEFAULT_CRL_DAYS, now: Callable[[], dt.datetime] = _now) -> list[str]:
    """Revoke every certificate issued to ``name``, or the one with ``serial``
    (hex); re-sign ``crl.pem``. Returns the serials newly revoked."""
    if (name is None) == (serial is None):
        raise PkiError("give a node name or --serial, not both")
    ca_cert, ca_key = ca.certificate(), ca._key()
    already = ca.revoked_serials()
    issued = ca.issued()
    if serial is not None:
        try:
            wanted = {int(serial, 16)}
        except ValueError:
            raise PkiError(f"serial {serial!r} is not hexadecimal") from None
        if not any(c.serial_number in wanted for c in issued):
            raise PkiError(f"this CA has no record of issuing serial {serial}")
    else:
        wanted = {c.serial_number for c in issued if _cn(c) == name}
        if not wanted:
            raise PkiError(f"this CA has issued no certificate to {name!r}")
    new = sorted(wanted - set(already))
    entries = [(s, d) for s, d in already.items()] + [(s, now()) for s in new]
    _write_crl(ca, ca_cert, ca_key, entries, crl_days, now)
    return [format(s, "x") for s in new]


def refresh_crl(ca: FederationCA, *, crl_days: int = DEFAULT_CRL_DAYS,
                now: Callable[[], dt.datetime] = _now) -> None:
    """Re-sign the CRL with a new validity window (same entries)."""
    _write_crl(ca, ca.certificate(), ca._key(), list(ca.revoked_serials().items()), crl_days, now)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _write_crl(ca: FederationCA, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               entries: Sequence[tuple[int, dt.datetime]], days: int, now: Callable[[], dt.datetime]) -> None:
    start = now()
    # Every CRL gets the next number (RFC 5280 5.2.3): nodes refuse to go back
    # to a lower one, so an old CRL cannot re-admit what a newer one revoked.
    number = (crl_number(load_crl(ca.crl_path, ca_cert)) or 0) + 1 if ca.crl_path.exists() else 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(start - dt.timedelta(minutes=5))
        .next_update(start + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial, when in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(ca.crl_path, crl.public_bytes(serialization.Encoding.PEM))


# -- what a node loads (its revocation list: psi_share/crl.py) ------------------


@dataclass(frozen=True)
class NodeTls:
    """A node's TLS material, checked to fit together."""

    name: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = b""  # repr-free: never printed
    cert_path: Path = Path()
    key_path: Path = Path()
    ca_path: Path = Path()
    crl: RevocationList | None = None
    ca_cert: x509.Certificate | None = None

    def __repr__(self) -> str:
        return f"NodeTls(name={self.name!r}, cert={self.cert_path})"


def load_node_tls(*, name: str, ca: Path, cert: Path, key: Path, crl: Path, crl_in_force: Path | None = None,
                  now: Callable[[], dt.datetime] = _now) -> NodeTls:
    """Load and check a node's certificate, key, CA and CRL.

    ``crl_in_force`` is where the node keeps the CRL it enforces, so that a
    restart never goes back to a lower CRL number (see :mod:`psi_share.crl`).
    Raises ConfigError naming the file when anything is missing, expired,
    revoked, not issued by the CA, for another node, or not matching the key.
    """
    try:
        ca_cert = load_certificate(ca, "CA certificate")
        node_cert = load_certificate(cert, "node certificate")
        node_key = load_private_key(key)
        try:
            node_cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(f"{cert}: not issued by the federation CA in {ca}") from None
        cert_name = node_name_of(node_cert)
        if cert_name != name:
            raise PkiError(f"{cert}: certificate names node {cert_name!r}, but this node is {name!r}")
        pub = node_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if pub != node_cert.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo):
            raise PkiError(f"{key}: private key does not belong to the certificate {cert}")
        t = now()
        if t > node_cert.not_valid_after_utc:
            raise PkiError(f"{cert}: certificate expired on {node_cert.not_valid_after_utc:%Y-%m-%d}; ask the CA for a new one")
        if t < node_cert.not_valid_before_utc:
            raise PkiError(f"{cert}: certificate is not valid before {node_cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
        revocations = RevocationList(crl, ca_cert, in_force=crl_in_force)
        if revocations.is_revoked(node_cert.serial_number):
            raise PkiError(f"{cert}: this certificate is revoked in {crl}")
    except PkiError as exc:
        raise ConfigError(f"TLS: {exc}") from None
    return NodeTls(
        name=name, ca_pem=ca.read_bytes(), cert_pem=cert.read_bytes(), key_pem=key.read_bytes(),
        cert_path=cert, key_path=key, ca_path=ca, crl=revocations, ca_cert=ca_cert,
    )


def install_node_files(source: Path, tls_dir: Path) -> list[Path]:
    """Copy node.crt/ca.crt/crl.pem (and node.key, unless the node made its
    own with 'pki request') from ``source`` (a 'pki issue' or 'pki sign' output)."""
    needed = [NODE_CERT, CA_CERT, CRL_FILE] + ([] if (tls_dir / NODE_KEY).exists() and not (source / NODE_KEY).exists()
                                               else [NODE_KEY])
    missing = [f for f in needed if not (source / f).is_file()]
    if missing:
        raise PkiError(f"{source} lacks {', '.join(missing)} (expected the output of 'psi-share pki issue' or 'pki sign')")
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    written = []
    for f in (NODE_CERT, CA_CERT, CRL_FILE):
        _write_public(tls_dir / f, (source / f).read_bytes())
        written.append(tls_dir / f)
    if (source / NODE_KEY).exists():
        write_private(tls_dir / NODE_KEY, (source / NODE_KEY).read_bytes())
        written.append(tls_dir / NODE_KEY)
    return written
