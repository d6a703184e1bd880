"""A member running its own client against federation totals (issue 11, item 5).

The attacker is lab-a with its real certificate and key, speaking the wire
contract by hand over mutual TLS to real nodes on loopback. Every attempt must
be refused with a status naming what was wrong, recorded (status and reason)
in the refusing node's audit log, and must leave no ciphertext in the
attacker's hands.
"""

from __future__ import annotations

import secrets

import grpc
import pytest
from federation_helpers import KEY, Attacker, refusals, refused

from psi_share.crypto.paillier import decode_ciphertext, encode_ciphertexts
from psi_share.pki import init_ca, issue_node
from psi_share.protocols.federation_route import Signed, mask
from psi_share.protocols.federation_route import digest as route_digest

FIGURES = {"lab-a": 1, "lab-b": 734_019, "lab-c": 52, "lab-d": 9_000}
RING = ("lab-a", "lab-b", "lab-c", "lab-d")


@pytest.fixture
def ring(federation):  # type: ignore[no-untyped-def]
    for name, figure in FIGURES.items():
        federation.node(name).store.set_figure("campaign", figure, now=0)
    for name in FIGURES:
        federation.serve(name)
    federation.connect_all()
    return Attacker(federation, "lab-a")


def _logged(federation, node: str, reason: str, step: str = "passed-status") -> dict:  # type: ignore[no-untyped-def]
    """The refusal ``node`` recorded in its audit log, by reason (exactly one)."""
    entries = [e for e in refusals(federation.nodes[node].home.audit_path) if e.get("reason") == reason]
    assert len(entries) == 1, (reason, refusals(federation.nodes[node].home.audit_path))
    assert entries[0]["step"] == step
    return entries[0]


def _v1_field(number: int, value: int | bytes | str) -> bytes:
    """One field of a version-1 FederationPassRequest, encoded by hand (its fields are reserved now)."""
    def varint(v: int) -> bytes:
        out = b""
        while True:
            byte, v = v & 0x7F, v >> 7
            out += bytes([byte | (0x80 if v else 0)])
            if not v:
                return out

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def test_the_reported_attack_contributors_2_and_an_empty_route_is_refused(ring, federation):
    """The tester's attack, as written against the version-1 proto: one pass to lab-b claiming
    two figures already in a ciphertext that holds nothing (Enc(0) under the attacker's key)
    and no route after lab-b. Before route version 2, lab-b added its figure and replied, and
    the attacker decrypted lab-b's exact figure."""
    run_id = secrets.token_hex(16)
    request = b"".join([
        _v1_field(1, 1), _v1_field(2, run_id), _v1_field(3, "campaign"), _v1_field(4, "lab-a"),
        _v1_field(5, KEY.public.encode()), _v1_field(6, encode_ciphertexts(KEY.public, [KEY.public.encrypt(0, secrets.token_bytes)])),
        _v1_field(7, 2), _v1_field(9, 3),
    ])
    call = federation.channel("lab-a", "lab-b").unary_unary("/psi_share.v1.PsiShareNode/FederationPass")
    try:
        reply = call(request, timeout=30)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    else:  # the attack went through: show what leaked
        ciphertext = _v1_reply_ciphertext(reply)
        leaked = KEY.decrypt(decode_ciphertext(KEY.public, ciphertext))
        pytest.fail(f"lab-b answered the attacker's pass; decrypted: {leaked} (lab-b's figure: {FIGURES['lab-b']})")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no route signed by its initiator" in details
    entry = _logged(federation, "lab-b", "unsigned-route")
    assert (entry["peer"], entry["session"], entry["status"]) == ("lab-a", run_id, "FAILED_PRECONDITION")
    with pytest.raises(Exception, match="no federation run"):
        federation.nodes["lab-b"].store.federation_run(run_id, "contributor")
    # The same in version 2: a route the attacker signs itself naming two labs is refused at the join.
    route, signed = ring.route(("lab-a", "lab-b"), k=3)
    code, details = refused(lambda: ring.join("lab-b", signed, route.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "names too few distinct members" in details
    _logged(federation, "lab-b", "too-few-members", step="joined-status")


def _v1_reply_ciphertext(reply: bytes) -> bytes:
    """Field 2 (ciphertext) of a version-1 FederationPassResponse."""
    i = 0
    while i < len(reply):
        tag = reply[i]
        i += 1
        if tag & 7 == 0:
            while reply[i] & 0x80:
                i += 1
            i += 1
            continue
        length, shift = 0, 0
        while True:
            b = reply[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if tag >> 3 == 2:
            return reply[i:i + length]
        i += length
    raise AssertionError("no ciphertext in the reply")


@pytest.mark.parametrize("k,members", [(3, ("lab-a", "lab-b")), (2, ("lab-a", "lab-b")),
                                       (4, ("lab-a", "lab-b", "lab-c"))])
def test_a_route_with_fewer_than_k_distinct_members_is_refused(ring, federation, k, members):
    route, signed = ring.route(members, k=k)
    code, details = refused(lambda: ring.join("lab-b", signed, route.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "contributes only to totals over at least" in details
    _logged(federation, "lab-b", "too-few-members", step="joined-status")


def test_a_forged_or_altered_signature_is_refused(ring, federation, tmp_path):
    route, signed = ring.route(RING)
    # altered after signing: lab-d dropped from the ring
    from dataclasses import replace

    altered = replace(signed, body=replace(route, members=RING[:3]).encode())
    code, details = refused(lambda: ring.join("lab-b", altered, route.run_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not verify under lab-a's certificate" in details
    # signed by lab-a, presented with lab-c's certificate (a route "from" lab-c)
    lab_c_cert = Attacker(federation, "lab-c").signer.certificate
    code, details = refused(lambda: ring.join("lab-b", replace(signed, certificate=lab_c_cert), route.run_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not verify under lab-c's certificate" in details
    # signed with a key whose certificate names lab-a but comes from another CA
    rogue = init_ca(tmp_path / "rogue-ca", "not the federation")
    issue_node(rogue, "lab-a", tmp_path / "rogue")
    from federation_helpers import signer_from

    forged = signer_from(tmp_path / "rogue", "lab-a").sign("route", route.encode())
    code, details = refused(lambda: ring.join("lab-b", forged, route.run_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not signed by this federation's CA" in details
    # a random signature
    code, details = refused(lambda: ring.join("lab-b", replace(signed, signature=secrets.token_bytes(70)), route.run_id))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    reasons = [e["reason"] for e in refusals(federation.nodes["lab-b"].home.audit_path)]
    assert reasons == ["signature", "signature", "certificate", "signature"]
    # a member key forged by the initiator for lab-c (it holds no lab-c key): refused at the pass
    keys = _join_all(ring, route, signed)
    fake_c, _ = ring.own_key(route, signed)
    keys[2] = fake_c
    code, details = refused(lambda: ring.pass_("lab-b", route, signed, keys, KEY.public.encrypt(0, secrets.token_bytes)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "was signed by lab-a" in details
    _logged(federation, "lab-b", "member-keys")


def _join_all(attacker: Attacker, route, signed: Signed) -> list[Signed]:  # type: ignore[no-untyped-def]
    """Join every member honestly; returns every member's signed key in route order (ours first)."""
    own, attacker.secret = attacker.own_key(route, signed)
    return [own] + [attacker.join(m, signed, route.run_id) for m in route.members[1:]]


def _honest_pass(attacker: Attacker, route, signed: Signed, keys: list[Signed]) -> int:  # type: ignore[no-untyped-def]
    """The pass as an honest initiator starts it; returns the total the last member's signed final holds."""
    from psi_share.protocols.federation_route import open_final
    from psi_share.v1 import node_pb2 as pb

    d = route_digest(signed)
    mask_keys = {m: pb.FederationMemberKey.FromString(k.body).mask_key for m, k in zip(route.members, keys)}
    pk = KEY.public
    masked = (FIGURES[attacker.name] + mask(route, d, attacker.name, attacker.secret, mask_keys, pk.n)) % pk.n
    reply = attacker.pass_(route.members[1], route, signed, keys, pk.rerandomize((1 + masked * pk.n) % pk.n2,
                                                                                 secrets.token_bytes))
    final = open_final(Signed.from_message(reply.final), route, d, attacker.trust)
    return KEY.decrypt(decode_ciphertext(pk, final))


def test_a_pass_not_from_the_previous_hop_is_refused_and_the_run_still_completes(ring, federation):
    route, signed = ring.route(RING)
    keys = _join_all(ring, route, signed)
    enc0 = KEY.public.encrypt(0, secrets.token_bytes)
    # the attacker (the initiator) skips lab-b and hands lab-c a ciphertext holding nothing
    code, details = refused(lambda: ring.pass_("lab-c", route, signed, keys, enc0))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "came from lab-a, but lab-c's previous hop on the signed route is lab-b" in details
    _logged(federation, "lab-c", "previous-hop")
    # another member, with its own certificate, tries the same
    code, details = refused(lambda: ring.pass_("lab-c", route, signed, keys, enc0, as_="lab-d"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "came from lab-d" in details
    # lab-c still holds its place: the honest pass goes round and the total is exact
    assert _honest_pass(ring, route, signed, keys) == sum(FIGURES.values())


def test_a_replayed_pass_or_join_for_a_finished_run_is_refused(ring, federation):
    route, signed = ring.route(RING)
    keys = _join_all(ring, route, signed)
    assert _honest_pass(ring, route, signed, keys) == sum(FIGURES.values())
    enc0 = KEY.public.encrypt(0, secrets.token_bytes)
    # lab-a replays its pass to lab-b; lab-b (lab-c's previous hop) replays one to lab-c
    for frm, to in (("lab-a", "lab-b"), ("lab-b", "lab-c")):
        code, details = refused(lambda: ring.pass_(to, route, signed, keys, enc0, as_=frm))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "already took part in this federation run (passed)" in details and route.run_id not in details
        _logged(federation, to, "replay")
    # the initiator replays its join
    code, details = refused(lambda: ring.join("lab-d", signed, route.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "a run id is used once" in details
    _logged(federation, "lab-d", "replay", step="joined-status")


def test_a_route_naming_an_unknown_member_is_refused(ring, federation):
    route, signed = ring.route(("lab-a", "lab-b", "lab-c", "lab-z"))
    code, details = refused(lambda: ring.join("lab-b", signed, route.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not a known peer of lab-b (at position 4)" in details
    assert "lab-z" not in details  # the route's names are the attacker's text: described, never repeated
    _logged(federation, "lab-b", "unknown-member", step="joined-status")


@pytest.mark.parametrize("members", [("lab-a", "lab-b", "lab-c", "lab-b"), ("lab-a", "lab-b", "lab-a", "lab-c"),
                                     ("lab-a", "lab-b", "lab-c", "lab-c")])
def test_a_route_with_duplicates_is_refused(ring, federation, members):
    route, signed = ring.route(members)
    code, details = refused(lambda: ring.join("lab-b", signed, route.run_id))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "more than once" in details
    _logged(federation, "lab-b", "duplicate-member", step="joined-status")


def test_a_join_from_someone_else_an_expired_route_and_a_pass_without_a_join_are_refused(ring, federation):
    route, signed = ring.route(RING)
    code, details = refused(lambda: ring.join("lab-b", signed, route.run_id, as_="lab-d"))  # lab-d relays lab-a's route
    assert code == grpc.StatusCode.PERMISSION_DENIED and "lab-d asked lab-b to join" in details
    _logged(federation, "lab-b", "not-initiator", step="joined-status")
    old, old_signed = ring.route(RING, issued_at=ring.now - 1000, expires_at=ring.now - 400)
    code, details = refused(lambda: ring.join("lab-c", old_signed, old.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "expired" in details
    _logged(federation, "lab-c", "expired", step="joined-status")
    code, details = refused(lambda: ring.pass_("lab-d", route, signed, [], KEY.public.encrypt(0, secrets.token_bytes),
                                               as_="lab-c"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "has not joined" in details
    _logged(federation, "lab-d", "not-joined")


def test_two_runs_joined_at_once_cannot_be_differenced(ring, federation):
    """The differencing attack, racing: join a run over four labs and one without lab-d
    before passing either. lab-b's figure is in neither yet, but it refuses the second."""
    route, signed = ring.route(RING)
    keys = _join_all(ring, route, signed)
    smaller, smaller_signed = ring.route(RING[:3])
    code, details = refused(lambda: ring.join("lab-b", smaller_signed, smaller.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "differ by at least one and fewer than k" in details
    _logged(federation, "lab-b", "difference", step="joined-status")
    assert _honest_pass(ring, route, signed, keys) == sum(FIGURES.values())
