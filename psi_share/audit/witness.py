"""Witnessed heads: our signed audit heads, held by our peers, as Certificate
Transparency's witnesses hold a log's signed tree heads.

A *signed head* is a checkpoint entry of a node's audit log: ``count`` (the
entries before it), ``head`` (the hash of entry ``count - 1``), the time,
the audit public key and the checkpoint's Ed25519 signature over
``checkpoint_message(node, count, head)``. Because every entry's hash
commits to all entries before it, a head commits to the whole prefix: a log
*extends* a head when its entry ``count - 1`` still has hash ``head`` and its
entry ``count`` is still that checkpoint. At the end of every session the two
nodes exchange heads (``WitnessHeads``) and each stores the other's; later
``audit verify --witnesses`` asks each peer for the heads of our log it holds
(``GetWitnessedHeads``) and checks that the log extends every one. Whoever
holds our audit key can re-sign a rewritten or cut-back log, but cannot
change what a peer already holds: that is what witnesses add to signatures.

Which audit key is a node's? A node's certificate from the federation CA
vouches for it: a :class:`KeyBinding` is the ECDSA signature of the node's
TLS key over ``binding_message(node, audit key)``, carried with the
certificate. A witness checks it against the CA (and the CRL) before it
stores a head, and keeps it, so a key change is on record and is itself
evidence: a head under another audit key, bound by our own certificate,
means this node signed another log.

What a witness learns: the entry count, head hash and time of our log (how
busy the node is, no content), and our audit public key. No customer data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import PkiError, RemoteProtocolError
from ..names import NAME_PATTERN
from ..pki import node_name_of
from ..v1 import node_pb2 as pb
from .log import checkpoint_message
from .messages import parse_exact, register_message_check

HEAD_BYTES = KEY_BYTES = 32
SIG_BYTES = 64
MAX_CERTIFICATE_BYTES = 8192
MAX_BINDING_SIG_BYTES = 80  # a DER ECDSA P-256 signature is at most 72 bytes
MAX_HEADS_RETURNED = 1000  # per audit key, the latest (the latest alone covers its whole prefix)


def binding_message(node: str, key: str) -> bytes:
    """What a node's TLS key signs to vouch for its audit key (hex)."""
    return f"psi-share audit key binding v1\nnode={node}\nkey={key}\n".encode()


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint of ``node``'s audit log, as a witness holds it."""

    node: str
    count: int
    head: str  # hex
    time_ns: int
    key: str  # hex Ed25519 public key
    sig: str  # hex
    witnessed_at_ns: int = 0  # when the witness received it (its clock), in answers only

    @property
    def text(self) -> str:
        return f"{self.count}:{self.head}"

    @classmethod
    def from_checkpoint(cls, entry: Mapping[str, Any]) -> SignedHead:
        return cls(str(entry["node"]), int(entry["count"]), str(entry["head"]), int(entry["time_ns"]),
                   str(entry["key"]), str(entry["sig"]))

    def to_message(self) -> pb.SignedHead:
        return pb.SignedHead(
            node=self.node, count=self.count, head=bytes.fromhex(self.head), time_ns=self.time_ns,
            audit_key=bytes.fromhex(self.key), signature=bytes.fromhex(self.sig), witnessed_at_ns=self.witnessed_at_ns,
        )

    @classmethod
    def from_message(cls, m: pb.SignedHead) -> SignedHead:
        """Parse a head off the wire; RemoteProtocolError names the field that is wrong."""
        problems = head_shape_problems(m)
        if problems:
            raise RemoteProtocolError(f"signed head: {problems[0]}")
        return cls(m.node, m.count, m.head.hex(), m.time_ns, m.audit_key.hex(), m.signature.hex(), m.witnessed_at_ns)

    def verify(self) -> None:
        """The signature verifies under the key the head names, or RemoteProtocolError
        (whose text repeats nothing the peer sent: it may go back to the peer)."""
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.key)).verify(
                bytes.fromhex(self.sig), checkpoint_message(self.node, self.count, self.head))
        except (InvalidSignature, ValueError):
            raise RemoteProtocolError("the head's signature does not verify under the audit key it names") from None


@dataclass(frozen=True)
class KeyBinding:
    """``node``'s certificate vouching for its audit ``key`` (hex)."""

    node: str
    key: str
    certificate: bytes  # DER
    sig: bytes

    def to_message(self) -> pb.AuditKeyBinding:
        return pb.AuditKeyBinding(node=self.node, audit_key=bytes.fromhex(self.key), certificate=self.certificate,
                                  signature=self.sig)

    @classmethod
    def from_message(cls, m: pb.AuditKeyBinding) -> KeyBinding:
        problems = binding_shape_problems(m)
        if problems:
            raise RemoteProtocolError(f"audit key binding: {problems[0]}")
        return cls(m.node, m.audit_key.hex(), m.certificate, m.signature)

    def check(self, ca_cert: x509.Certificate, *, now: dt.datetime | None = None,
              revoked: Callable[[int], bool] | None = None) -> x509.Certificate:
        """The certificate is the federation CA's and names ``node`` (valid at
        ``now`` and not revoked, when given), and its key signed the binding.
        Returns the certificate; RemoteProtocolError says what is wrong,
        repeating nothing the peer sent (it may go back to the peer)."""
        try:
            cert = x509.load_der_x509_certificate(self.certificate)
            cert.verify_directly_issued_by(ca_cert)
            named = node_name_of(cert)
        except (ValueError, TypeError, InvalidSignature, PkiError):
            raise RemoteProtocolError("audit key binding: the certificate is not a node certificate from this "
                                      "federation's CA") from None
        if named != self.node:
            raise RemoteProtocolError("audit key binding: the certificate names another node than the binding")
        if now is not None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise RemoteProtocolError("audit key binding: the certificate is outside its validity period")
        if revoked is not None and revoked(cert.serial_number):
            raise RemoteProtocolError("audit key binding: the certificate is revoked by the federation CA")
        public = cert.public_key()
        try:
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public.verify(self.sig, binding_message(self.node, self.key), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise RemoteProtocolError("audit key binding: the certificate's signature does not verify for its "
                                      "audit key") from None
        return cert


def bind_key(node: str, key: str, cert_pem: bytes, tls_key_pem: bytes) -> KeyBinding:
    """Sign ``node``'s audit ``key`` (hex) with its TLS key (what a node sends with its heads)."""
    private = serialization.load_pem_private_key(tls_key_pem, password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise PkiError("the node's TLS key is not an elliptic-curve key")
    cert = x509.load_pem_x509_certificate(cert_pem)
    sig = private.sign(binding_message(node, key), ec.ECDSA(hashes.SHA256()))
    return KeyBinding(node, key, cert.public_bytes(serialization.Encoding.DER), sig)


# -- what a witness answered, sorted by whose fault a problem is ----------------------


@dataclass
class WitnessAnswer:
    """One peer's answer to GetWitnessedHeads, sorted.

    ``heads`` are ours (our node, signed by the trusted key): the log must
    extend each. ``other_keys`` are ours too, signed by an audit key our own
    certificate bound but that is not the trusted key: this node signed
    another log. ``forged`` are the peer's fault: malformed, another node's,
    or not signed by any audit key of ours.
    """

    peer: str
    heads: list[SignedHead] = field(default_factory=list)
    other_keys: list[str] = field(default_factory=list)
    forged: list[str] = field(default_factory=list)


def sort_answer(peer: str, answer: pb.GetWitnessedHeadsResponse, *, node: str, trusted_key: str,
                ca_cert: x509.Certificate | None) -> WitnessAnswer:
    """Sort ``peer``'s answer about ``node``'s log (ours), trusting ``trusted_key`` (hex)."""
    out = WitnessAnswer(peer)
    bindings = {b.key: b for b in _parsed(answer.bindings, KeyBinding.from_message, "binding", out.forged)}
    for head in _parsed(answer.heads, SignedHead.from_message, "head", out.forged):
        if head.node != node:
            out.forged.append(f"head {head.text}: names node {head.node}, not this node")
            continue
        try:
            head.verify()
        except RemoteProtocolError:
            out.forged.append(f"head {head.text}: its signature does not verify under the audit key {head.key} it "
                              "names (the peer forged it, or its record was edited)")
            continue
        if head.key == trusted_key:
            out.heads.append(head)
            continue
        binding = bindings.get(head.key)
        why = "the peer sent no binding for it"
        if binding is not None and ca_cert is not None:
            try:
                cert = binding.check(ca_cert)
                if binding.node != node:
                    raise RemoteProtocolError("the binding names another node")
            except RemoteProtocolError as exc:
                why = str(exc)
            else:
                out.other_keys.append(
                    f"head {head.text} is signed by audit key {head.key}, not the trusted key {trusted_key}; this "
                    f"node's own certificate {cert.serial_number:x} bound that key to it: this node signed another "
                    "audit log (the log was replaced, or started again under a new key)")
                continue
        out.forged.append(f"head {head.text}: signed by audit key {head.key}, which this node's certificate never "
                          f"bound ({why}): not a head of ours")
    return out


def _parsed(messages: Iterable[Any], parse: Callable[[Any], Any], what: str, forged: list[str]) -> Iterator[Any]:
    """Each message parsed; a malformed one is the peer's fault, noted in ``forged``."""
    for i, m in enumerate(messages):
        try:
            yield parse(m)
        except RemoteProtocolError as exc:
            forged.append(f"{what} #{i}: {exc}")


# -- audit scan's checks of the witness messages ------------------------------------------


def head_shape_problems(m: pb.SignedHead) -> list[str]:
    problems = [] if NAME_PATTERN.match(m.node) else ["node is not a plain node name"]
    if m.count < 1:
        problems.append("count is 0: a checkpoint follows at least the genesis entry")
    for name, value, size in (("head", m.head, HEAD_BYTES), ("audit_key", m.audit_key, KEY_BYTES),
                              ("signature", m.signature, SIG_BYTES)):
        if len(value) != size:
            problems.append(f"{name} is not {size} bytes")
    if m.time_ns < 0 or m.witnessed_at_ns < 0:
        problems.append("a time is negative")
    return problems


def binding_shape_problems(m: pb.AuditKeyBinding) -> list[str]:
    problems = [] if NAME_PATTERN.match(m.node) else ["node is not a plain node name"]
    if len(m.audit_key) != KEY_BYTES:
        problems.append(f"audit_key is not {KEY_BYTES} bytes")
    if not 0 < len(m.signature) <= MAX_BINDING_SIG_BYTES:
        problems.append(f"signature is not an ECDSA signature (1 to {MAX_BINDING_SIG_BYTES} bytes)")
    if not 0 < len(m.certificate) <= MAX_CERTIFICATE_BYTES:
        problems.append(f"certificate is empty or over {MAX_CERTIFICATE_BYTES} bytes")
    else:
        try:
            x509.load_der_x509_certificate(m.certificate)
        except ValueError:
            problems.append("certificate is not a DER X.509 certificate")
    return problems


def _exchange(step: str, payload: bytes) -> Iterable[str]:
    m = parse_exact(pb.WitnessHeadsResponse if step == "exchanged" else pb.WitnessHeadsRequest, payload)
    if not m.HasField("head") or not m.HasField("binding"):
        return ["carries no head or no key binding"]
    return head_shape_problems(m.head) + binding_shape_problems(m.binding)


def _query(step: str, payload: bytes) -> list[str]:
    parse_exact(pb.GetWitnessedHeadsRequest, payload)
    return []


def _held(step: str, payload: bytes) -> list[str]:
    m = parse_exact(pb.GetWitnessedHeadsResponse, payload)
    problems = [p for head in m.heads for p in head_shape_problems(head)]
    problems += [p for binding in m.bindings for p in binding_shape_problems(binding)]
    if len({h.audit_key for h in m.heads}) * MAX_HEADS_RETURNED < len(m.heads):
        problems.append(f"holds more than {MAX_HEADS_RETURNED} heads per audit key")
    return problems[:10]


_HEAD = ("audit metadata, no customer data: a signed head of {whose} audit log (entry count, head hash, time, "
         "audit public key, Ed25519 signature) and {whose} TLS certificate with its signature binding that key")
register_message_check("witness", "exchange", _exchange, description=_HEAD.format(whose="the requester's"))
register_message_check("witness", "exchanged", _exchange, description=_HEAD.format(whose="the responder's"))
register_message_check("witness", "query", _query, description="no content: asks the peer for the heads of the "
                                                                 "caller's audit log it holds")
register_message_check("witness", "held", _held,
                       description="audit metadata, no customer data: the signed heads of the caller's own audit log "
                                   "this node holds, with the certificates' bindings of their keys")
