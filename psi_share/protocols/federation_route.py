"""Federation total, route version 2: signed statements, the route's rules, the masks.

A run of a federation total is fixed by its **route**, which the initiator
signs: run id, metric, the ring of members in order (the initiator first),
k, the initiator's fresh Paillier key and an expiry. Three statements travel,
each signed by one member with the ECDSA P-256 key of its certificate from
the federation CA (the key its TLS connections use), over a label that says
what it is and the exact body bytes:

========================  ============================  ==========================
statement                 signed by                     binds
========================  ============================  ==========================
``route``                 the initiator                 run id, metric, members in
                                                        order, k, Paillier key,
                                                        issue and expiry times
``member key``            each member, when it joins    run id, SHA-256 of the
                                                        route body, member name,
                                                        its fresh X25519 key
``final``                 the route's last member       run id, route digest, the
                                                        final ciphertext
========================  ============================  ==========================

Every receiver checks a statement's certificate against the federation CA,
its own revocation list and its own clock (:func:`psi_share.pki.check_member_certificate`),
then the signature, then parses the body it verified. The labels keep the
statements apart from each other and from anything else the key signs (TLS
1.3 signs 64 spaces and a context string first; TLS 1.2 starts with 32
random bytes of the client): a signature on one never passes for another.

**Masks.** Every member adds ``figure + M_i`` (mod n) to the running
ciphertext, where ``M_i`` is the sum, over the other members j, of
``+m_ij`` when i comes before j in the route and ``-m_ij`` otherwise, and
``m_ij = HKDF-SHA256(X25519(i's key, j's key), salt = route digest,
info = label || i || j) mod n`` (i before j). The masks cancel in the total
and only there: any partial sum of the ring, decrypted, is uniformly random
unless the coalition holding it knows every mask between a member inside
that part and one outside, that is, unless it holds every other member of the
run. This module has no I/O: clocks, randomness and the revocation list are
passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from ..crypto.paillier import PublicKey
from ..errors import RemoteProtocolError
from ..names import NAME_PATTERN
from ..pki import PkiError, check_member_certificate
from ..v1 import node_pb2 as pb

ROUTE_VERSION = 2
MIN_CONTRIBUTORS = 3
MAX_PARTICIPANTS = 64
LABELS = {
    "route": b"psi-share federation route v2\n",
    "member key": b"psi-share federation member key v2\n",
    "final": b"psi-share federation final v2\n",
}
MASK_LABEL = b"psi-share federation mask v2\n"
MASK_KEY_BYTES = 32
MAX_CERTIFICATE_BYTES = 8192
MAX_SIGNATURE_BYTES = 80  # DER ECDSA P-256: at most 72
MAX_BODY_BYTES = 16384  # a route of 64 names and a 3072-bit key is below 5 KiB
ROUTE_LIFETIME_SECONDS = 900  # what an initiator gives a run
MAX_ROUTE_LIFETIME_SECONDS = 3600  # what a member accepts: it keeps a secret in memory that long
CLOCK_SKEW_SECONDS = 300
RUN_ID = re.compile(r"^[0-9a-f]{32}\Z")


class RouteRejected(RemoteProtocolError):
    """A member refuses a route, a pass or a signed statement.

    ``reason`` is a fixed slug (the audit log records it): ``unsigned-route``,
    ``route-version``, ``malformed``, ``signature``, ``certificate``,
    ``not-initiator``, ``previous-hop``, ``not-a-member``, ``duplicate-member``,
    ``too-few-members``, ``unknown-member``, ``expired``, ``member-keys``,
    ``final``, ``replay``, ``not-joined``, ``difference``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- signed statements -------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A statement as it travels: body, DER ECDSA signature, signer's DER certificate."""

    body: bytes
    signature: bytes
    certificate: bytes

    def to_message(self) -> pb.FederationSigned:
        return pb.FederationSigned(body=self.body, signature=self.signature, certificate=self.certificate)

    @classmethod
    def from_message(cls, m: pb.FederationSigned) -> Signed:
        return cls(m.body, m.signature, m.certificate)


@dataclass(frozen=True)
class Trust:
    """What a member checks a signer against: the federation CA, its own
    revocation list and its own clock (Unix seconds)."""

    ca_certificate: x509.Certificate
    is_revoked: Callable[[int], bool]
    clock: Callable[[], float]

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)


class Signer:
    """Signs statements as ``name`` with the key of its federation certificate."""

    def __init__(self, name: str, key: ec.EllipticCurvePrivateKey, certificate_der: bytes) -> None:
        self.name = name
        self._key = key
        self.certificate = certificate_der

    def sign(self, what: str, body: bytes) -> Signed:
        signature = self._key.sign(LABELS[what] + body, ec.ECDSA(hashes.SHA256()))
        return Signed(body, signature, self.certificate)


def open_signed(signed: Signed, what: str, trust: Trust) -> str:
    """Check ``signed`` as a ``what`` statement; return the member that signed it.

    Raises RouteRejected (``certificate`` or ``signature``); nothing in the
    body is looked at before the signature holds.
    """
    if not 0 < len(signed.certificate) <= MAX_CERTIFICATE_BYTES or len(signed.body) > MAX_BODY_BYTES:
        raise RouteRejected("malformed", f"signed {what} has no certificate or an oversized body or certificate")
    try:
        cert = x509.load_der_x509_certificate(signed.certificate)
        name = check_member_certificate(cert, trust.ca_certificate, trust.is_revoked, trust.now())
    except (ValueError, TypeError, PkiError) as exc:
        raise RouteRejected("certificate", f"the certificate on the signed {what} is refused: {exc}") from None
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or len(signed.signature) > MAX_SIGNATURE_BYTES:
        raise RouteRejected("signature", f"the signed {what} of {name} carries no ECDSA P-256 signature")
    try:
        public.verify(signed.signature, LABELS[what] + signed.body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise RouteRejected("signature", f"the signature on the {what} does not verify under {name}'s certificate") from None
    return name


def digest(signed: Signed) -> bytes:
    """SHA-256 of a statement's body: what member keys and the final bind to."""
    return hashlib.sha256(signed.body).digest()


def _parse(cls, body: bytes, what: str):  # type: ignore[no-untyped-def]
    try:
        return cls.FromString(body)
    except DecodeError:
        raise RouteRejected("malformed", f"the signed {what} is not a valid {cls.DESCRIPTOR.name}") from None


# -- the route -----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """The ring of one run, as its initiator signed it."""

    run_id: str
    metric: str
    members: tuple[str, ...]  # members[0] is the initiator
    min_contributors: int
    public_key_bytes: bytes
    issued_at: int
    expires_at: int
    version: int = ROUTE_VERSION

    @property
    def initiator(self) -> str:
        return self.members[0]

    def position(self, name: str) -> int:
        return self.members.index(name)

    def previous(self, name: str) -> str:
        return self.members[self.position(name) - 1]

    def next(self, name: str) -> str | None:
        i = self.position(name) + 1
        return self.members[i] if i < len(self.members) else None

    def public_key(self) -> PublicKey:
        return PublicKey.decode(self.public_key_bytes)

    def encode(self) -> bytes:
        return pb.FederationRoute(
            version=self.version, run_id=self.run_id, metric=self.metric, members=list(self.members),
            min_contributors=self.min_contributors, public_key=self.public_key_bytes,
            issued_at=self.issued_at, expires_at=self.expires_at,
        ).SerializeToString()

    @classmethod
    def decode(cls, body: bytes) -> Route:
        m = _parse(pb.FederationRoute, body, "route")
        return cls(m.run_id, m.metric, tuple(m.members), m.min_contributors, m.public_key, m.issued_at, m.expires_at,
                   m.version)


@dataclass(frozen=True)
class RouteRules:
    """What one member requires of a route: its own minimum k, the members it
    knows (its peers), and its clock."""

    me: str
    minimum: int
    is_known: Callable[[str], bool]
    now: float


def open_route(signed: Signed, trust: Trust, rules: RouteRules) -> Route:
    """Verify the initiator's signature and every rule of the route; return it.

    The signer must be the route's first member. Raises RouteRejected.
    """
    signer = open_signed(signed, "route", trust)
    route = Route.decode(signed.body)
    if route.version != ROUTE_VERSION:
        raise RouteRejected("route-version", f"the route's version is not spoken here (only {ROUTE_VERSION})")
    if not route.members or signer != route.initiator:
        raise RouteRejected("not-initiator", f"the route was signed by {signer}, which is not its first member "
                                             "(the initiator)")
    check_route(route, rules)
    return route


def check_route(route: Route, rules: RouteRules) -> None:
    """The route's rules, as member ``rules.me`` applies them (RouteRejected)."""
    if not RUN_ID.match(route.run_id) or not NAME_PATTERN.match(route.metric):
        raise RouteRejected("malformed", "the route's run id is not 32 hex digits or its metric is not a plain name")
    if len(route.members) > MAX_PARTICIPANTS or not all(NAME_PATTERN.match(m) for m in route.members):
        raise RouteRejected("malformed", f"the route names more than {MAX_PARTICIPANTS} members or an invalid name")
    # Refusals describe the route by positions: its names are the peer's text, never repeated back.
    repeated = [str(i + 1) for i, m in enumerate(route.members) if route.members.index(m) != i]
    if repeated:
        raise RouteRejected("duplicate-member", f"the route names a lab more than once (again at position "
                                                f"{', '.join(repeated)}): a ring of n distinct labs is what k counts")
    if rules.me not in route.members:
        raise RouteRejected("not-a-member", f"the route does not name {rules.me}")
    needed = max(route.min_contributors, rules.minimum, MIN_CONTRIBUTORS)
    if len(route.members) < needed:
        own = max(rules.minimum, MIN_CONTRIBUTORS)
        raise RouteRejected("too-few-members", f"the route names too few distinct members: {rules.me} contributes "
                                               f"only to totals over at least {own} labs, or the route's own k if larger")
    unknown = [str(i + 1) for i, m in enumerate(route.members) if m != rules.me and not rules.is_known(m)]
    if unknown:
        raise RouteRejected("unknown-member", f"the route names a lab that is not a known peer of {rules.me} "
                                              f"(at position {', '.join(unknown)})")
    if route.expires_at < rules.now:
        raise RouteRejected("expired", f"the route has expired by {rules.me}'s clock")
    if route.issued_at > rules.now + CLOCK_SKEW_SECONDS or route.expires_at - route.issued_at > MAX_ROUTE_LIFETIME_SECONDS:
        raise RouteRejected("expired", f"the route's times are implausible: issued more than {CLOCK_SKEW_SECONDS} s "
                                       f"in {rules.me}'s future, or living more than {MAX_ROUTE_LIFETIME_SECONDS} s")
    route.public_key()  # RemoteProtocolError for a malformed Paillier key


# -- member keys, the final, masks -----------------------------------------------


@dataclass(frozen=True)
class MemberKey:
    run_id: str
    route_sha256: bytes
    member: str
    mask_key: bytes

    def encode(self) -> bytes:
        return pb.FederationMemberKey(run_id=self.run_id, route_sha256=self.route_sha256, member=self.member,
                                      mask_key=self.mask_key).SerializeToString()


def new_mask_secret(random_bytes: Callable[[int], bytes]) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(random_bytes(MASK_KEY_BYTES))


def mask_public(secret: X25519PrivateKey) -> bytes:
    return secret.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def open_member_keys(route: Route, route_sha256: bytes, keys: Sequence[Signed], trust: Trust) -> dict[str, bytes]:
    """Every member's mask key, each checked to be signed by that member for this route.

    Raises RouteRejected (``member-keys``, or the signature's reason).
    """
    if len(keys) != len(route.members):
        raise RouteRejected("member-keys", "the pass does not carry exactly one key per member of the route")
    out: dict[str, bytes] = {}
    for expected, signed in zip(route.members, keys):
        out[expected] = open_member_key(signed, expected, route, route_sha256, trust)
    return out


def open_member_key(signed: Signed, member: str, route: Route, route_sha256: bytes, trust: Trust) -> bytes:
    signer = open_signed(signed, "member key", trust)
    m = _parse(pb.FederationMemberKey, signed.body, "member key")
    if signer != member or m.member != member:
        raise RouteRejected("member-keys", f"the key given for {member} was signed by {signer}, or for another member")
    if m.run_id != route.run_id or m.route_sha256 != route_sha256:
        raise RouteRejected("member-keys", f"the key of {member} was made for another run or another route")
    if len(m.mask_key) != MASK_KEY_BYTES:
        raise RouteRejected("member-keys", f"the mask key of {member} is not an X25519 key")
    return bytes(m.mask_key)


def mask(route: Route, route_sha256: bytes, me: str, secret: X25519PrivateKey, keys: dict[str, bytes], n: int) -> int:
    """M_me mod n: +m for every member after ``me`` in the route, -m for every one before."""
    mine = route.position(me)
    total = 0
    for j, other in enumerate(route.members):
        if j == mine:
            continue
        try:
            shared = secret.exchange(X25519PublicKey.from_public_bytes(keys[other]))
        except ValueError:  # a low-order point: the shared secret would be all zeros
            raise RouteRejected("member-keys", f"the mask key of {other} is a degenerate X25519 point") from None
        first, second = (me, other) if mine < j else (other, me)
        okm = HKDF(algorithm=hashes.SHA256(), length=(n.bit_length() + 7) // 8 + 32, salt=route_sha256,
                   info=MASK_LABEL + f"{first}\n{second}\n".encode()).derive(shared)
        m = int.from_bytes(okm, "big") % n  # 256 extra bits: statistically uniform mod n
        total += m if mine < j else -m
    return total % n


def final_body(run_id: str, route_sha256: bytes, ciphertext: bytes) -> bytes:
    return pb.FederationFinal(run_id=run_id, route_sha256=route_sha256, ciphertext=ciphertext).SerializeToString()


def open_final(signed: Signed, route: Route, route_sha256: bytes, trust: Trust) -> bytes:
    """The final ciphertext, checked to be signed by the route's last member for this run."""
    signer = open_signed(signed, "final", trust)
    last = route.members[-1]
    m = _parse(pb.FederationFinal, signed.body, "final")
    if signer != last:
        raise RouteRejected("final", f"the final ciphertext was signed by {signer}, not by the last member {last}")
    if m.run_id != route.run_id or m.route_sha256 != route_sha256:
        raise RouteRejected("final", f"the final ciphertext signed by {last} belongs to another run or route")
    return bytes(m.ciphertext)
