"""Federation-total test helpers: members' signing credentials from real
certificates, a ring driven in memory, the audit log's refusals, and the
attacker's own client (a member's certificate, the wire contract by hand)."""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from psi_share.crypto.paillier import PrivateKey, encode_ciphertexts
from psi_share.pki import RevocationList, init_ca, issue_node
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.protocols.federation_route import Route, RouteRules, Signed, Signer, Trust
from psi_share.protocols.federation_total import FederationContributor, FederationInitiator
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

KEY = PrivateKey.generate(2048, secrets.token_bytes)  # one Paillier key for every test: keygen is slow


def signer_from(tls_dir: Path, name: str) -> Signer:
    """A member's signer from its certificate directory (node.key, node.crt)."""
    key = serialization.load_pem_private_key((tls_dir / "node.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((tls_dir / "node.crt").read_bytes())
    return Signer(name, key, cert.public_bytes(serialization.Encoding.DER))  # type: ignore[arg-type]


@dataclass
class Members:
    """A CA and a certificate per member, for the sans-IO tests."""

    signers: dict[str, Signer]
    trust: Trust
    now: float

    @classmethod
    def issue(cls, root: Path, names: list[str], now: float) -> Members:
        ca = init_ca(root / "ca", "test federation CA")
        signers = {}
        for name in names:
            issue_node(ca, name, root / name)
            signers[name] = signer_from(root / name, name)
        crl = RevocationList(ca.crl_path, ca.certificate())
        members = cls(signers, Trust(ca.certificate(), crl.is_revoked, lambda: members.now), now)
        return members

    def route(self, members: tuple[str, ...], *, k: int = 3, run_id: str | None = None) -> Route:
        return Route(run_id or secrets.token_hex(16), "campaign", members, k, KEY.public.encode(),
                     int(self.now), int(self.now) + 600)

    def rules(self, me: str, minimum: int = 3) -> RouteRules:
        return RouteRules(me, minimum, lambda name: name in self.signers, self.now)

    def initiator(self, route: Route, figure: int, seed: int = 0) -> FederationInitiator:
        return FederationInitiator(route=route, signer=self.signers[route.initiator], trust=self.trust, key=KEY,
                                   figure=figure, random_bytes=random.Random(seed).randbytes, is_known=lambda n: True)

    def join(self, init: FederationInitiator, member: str, *, caller: str | None = None) -> FederationContributor:
        """``member`` joins the initiator's signed route (the join coming from ``caller``)."""
        return FederationContributor(signed_route=init.signed_route, caller=caller or init.route.initiator,
                                     trust=self.trust, rules=self.rules(member), signer=self.signers[member],
                                     random_bytes=random.Random(member).randbytes)


def ring_in_memory(m: Members, route: Route, figures: dict[str, int], seed: int = 0):  # type: ignore[no-untyped-def]
    """Run one total through the state machines, no network; returns (result, every ciphertext sent)."""
    init = m.initiator(route, figures[route.initiator], seed)
    joined = {}
    for member in route.members[1:]:
        joined[member] = m.join(init, member)
        init.on_joined(member, joined[member].member_key)
    _, ciphertext, keys = init.first_pass()
    sent, previous, passed = [ciphertext], route.initiator, None
    for member in route.members[1:]:
        joined[member].check_pass(previous, init.signed_route)
        passed = joined[member].add(keys, ciphertext, figures[member], now=m.now)
        ciphertext, previous = passed.ciphertext, member
        sent.append(ciphertext)
    return init.on_final(passed.final), sent


def refusals(home_audit: Path) -> list[dict]:
    """Every federation-total status a node sent, from its audit log: (step, status, reason)."""
    out = []
    for line in (home_audit / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("protocol") == "federation-total" and entry.get("step", "").endswith("-status"):
            out.append({"step": entry["step"], "peer": entry["peer"], "session": entry["session"], **entry["params"]})
    return out


class Attacker:
    """A federation member running its own client, written from the proto:
    it holds its real certificate and key, and sends what it likes."""

    def __init__(self, federation, name: str) -> None:  # type: ignore[no-untyped-def]
        self.federation, self.name = federation, name
        self.signer = signer_from(federation.nodes[name].home.tls_path, name)
        self.now = int(federation.nodes[name].clock())
        crl = RevocationList(federation.ca.crl_path, federation.ca.certificate())
        self.trust = Trust(federation.ca.certificate(), crl.is_revoked, time.time)
        self.secret = None  # the attacker's own mask secret, once it made its key

    def stub(self, to: str, *, as_: str | None = None) -> pb_grpc.PsiShareNodeStub:
        return pb_grpc.PsiShareNodeStub(self.federation.channel(as_ or self.name, to))

    def route(self, members: tuple[str, ...], *, k: int = 3, run_id: str | None = None,
              issued_at: int | None = None, expires_at: int | None = None) -> tuple[Route, Signed]:
        issued = self.now if issued_at is None else issued_at
        route = Route(run_id or secrets.token_hex(16), "campaign", members, k, KEY.public.encode(), issued,
                      issued + 600 if expires_at is None else expires_at)
        return route, self.signer.sign("route", route.encode())

    def join(self, to: str, signed: Signed, run_id: str, *, as_: str | None = None) -> Signed:
        reply = self.stub(to, as_=as_).FederationJoin(pb.FederationJoinRequest(
            protocol_version=PROTOCOL_VERSION, run_id=run_id, signed_route=signed.to_message()), timeout=30)
        return Signed.from_message(reply.member_key)

    def own_key(self, route: Route, signed: Signed) -> tuple[Signed, object]:
        """The attacker's own signed mask key for ``route`` (as an honest initiator makes it)."""
        from psi_share.protocols.federation_route import MemberKey, digest, mask_public, new_mask_secret

        secret = new_mask_secret(secrets.token_bytes)
        body = MemberKey(route.run_id, digest(signed), self.name, mask_public(secret)).encode()
        return self.signer.sign("member key", body), secret

    def pass_(self, to: str, route: Route, signed: Signed, keys: list[Signed], ciphertext: int, *,
              as_: str | None = None) -> pb.FederationPassResponse:
        return self.stub(to, as_=as_).FederationPass(pb.FederationPassRequest(
            protocol_version=PROTOCOL_VERSION, run_id=route.run_id, signed_route=signed.to_message(),
            member_keys=[k.to_message() for k in keys], ciphertext=encode_ciphertexts(KEY.public, [ciphertext]),
        ), timeout=60)


def refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    """Run ``call``, which must fail with a status; return (code, details)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("the call was not refused")
