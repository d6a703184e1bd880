"""The head exchange itself: what a witness refuses to store, key changes and forks on
record, a node that replaced its log caught by its own certificate's binding, and the
pieces (store, verifier, log) on their own.

The hostile caller is lab-c, a federation member with a valid certificate, speaking
the wire contract by hand (a raw mTLS channel and the generated stub), as a member
running its own software would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_audit_node import A_ROWS, B_ROWS, _cli, pair  # noqa: F401  (pair: lab-a and lab-b serving)

from psi_share import Node
from psi_share.audit.log import AuditLog, checkpoint_message, load_entries
from psi_share.audit.scan import scan_audit
from psi_share.audit.verify import verify_log
from psi_share.audit.witness import KeyBinding, SignedHead, bind_key
from psi_share.identifiers import DEFAULT_CONTEXT
from psi_share.pki import init_ca, issue_node
from psi_share.store import Store
from psi_share.store import witnesses as held
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc


class Member:
    """lab-c's own client: its certificate, an audit key of its choosing, heads it signs itself."""

    def __init__(self, federation, name: str = "lab-c") -> None:  # type: ignore[no-untyped-def]
        federation.node(name)  # a member with a valid certificate, known to lab-b
        federation.connect_all()
        self.name = name
        self.tls = federation.nodes[name].home.tls_path
        self.key = Ed25519PrivateKey.generate()
        self.stub = pb_grpc.PsiShareNodeStub(federation.channel(name, "lab-b"))

    @property
    def key_hex(self) -> str:
        return self.key.public_key().public_bytes_raw().hex()

    def head(self, count: int, head: str = "ab" * 32, node: str | None = None) -> SignedHead:
        node = node or self.name
        sig = self.key.sign(checkpoint_message(node, count, head)).hex()
        return SignedHead(node, count, head, 1, self.key_hex, sig)

    def binding(self, node: str | None = None, tls: Path | None = None) -> KeyBinding:
        tls = tls or self.tls
        return bind_key(node or self.name, self.key_hex, (tls / "node.crt").read_bytes(), (tls / "node.key").read_bytes())

    def send(self, head: SignedHead | None, binding: KeyBinding | None, version: int = 1) -> pb.WitnessHeadsResponse:
        request = pb.WitnessHeadsRequest(protocol_version=version)
        if head is not None:
            request.head.CopyFrom(head.to_message())
        if binding is not None:
            request.binding.CopyFrom(binding.to_message())
        return self.stub.WitnessHeads(request, timeout=30)


def _refused(call, code: grpc.StatusCode, text: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code and text in caught.value.details(), caught.value.details()
    return caught.value.details()


def test_a_witness_stores_only_heads_it_checked(federation, pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    c = Member(federation)
    lab_a_tls = a.home.tls_path
    outsider_ca = init_ca(tmp_path / "other-ca", "another federation")
    outsider = tmp_path / "outsider"
    issue_node(outsider_ca, "lab-c", outsider, addresses=["127.0.0.1"])
    bad = pb.WitnessHeadsRequest
    stranger_sig = ec.generate_private_key(ec.SECP256R1()).sign(b"x", ec.ECDSA(hashes.SHA256()))
    cases = [
        (lambda: c.send(c.head(5, node="lab-a"), c.binding(node="lab-a")), "names another node than the caller"),
        (lambda: c.send(SignedHead("lab-c", 5, "ab" * 32, 1, c.key_hex, "00" * 64), c.binding()),
         "signature does not verify under the audit key it names"),
        (lambda: c.send(c.head(5), c.binding(tls=lab_a_tls)), "names another node"),  # lab-a's certificate
        (lambda: c.send(c.head(5), c.binding(tls=outsider)), "not a node certificate from this federation's CA"),
        (lambda: c.send(c.head(5), KeyBinding("lab-c", c.key_hex, c.binding().certificate, stranger_sig)),
         "signature does not verify for its audit key"),  # lab-c's certificate, signed by some other key
        (lambda: c.send(c.head(5), None), "carries no head or no key binding"),
        (lambda: c.stub.WitnessHeads(bad(protocol_version=1, head=pb.SignedHead(node="lab-c", count=5, head=b"x")),
                                     timeout=30), "carries no head or no key binding"),
    ]
    for call, text in cases:
        details = _refused(call, grpc.StatusCode.INVALID_ARGUMENT, text)
        assert c.key_hex not in details and "ab" * 32 not in details, details  # nothing it sent comes back
    _refused(lambda: c.send(c.head(5), c.binding(), version=2), grpc.StatusCode.FAILED_PRECONDITION, "version")
    assert held.held_heads(b.store, "lab-c", per_key=10) == [] and held.peer_keys(b.store, "lab-c") == []
    # a head it signed with a key its certificate bound is kept, and lab-b answers with its own
    reply = c.send(c.head(5), c.binding())
    theirs = SignedHead.from_message(reply.head)
    theirs.verify()
    KeyBinding.from_message(reply.binding).check(federation.ca.certificate())
    assert theirs.node == "lab-b" and load_entries(b.home.audit_path)[theirs.count]["sig"] == theirs.sig
    assert [(h.count, h.key) for h in held.held_heads(b.store, "lab-c", per_key=10)] == [(5, c.key_hex)]
    # what lab-b sent in all this is audit metadata its scan knows how to check
    b_home = b.home.path
    federation.servers.pop("lab-b").stop(grace=1)
    federation.nodes.pop("lab-b").close()
    result = scan_audit(b_home / "audit", [], DEFAULT_CONTEXT)
    assert result.messages_checked == 9 and not result.invalid, result.invalid  # 8 refusals and one head
    steps = {(e["protocol"], e["step"]) for e in load_entries(b_home / "audit") if e["type"] == "sent"}
    assert ("witness", "exchanged") in steps and ("witness", "exchanged-status") in steps


def test_a_key_change_and_a_fork_stay_on_record(federation, pair, caplog) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    c = Member(federation)
    c.send(c.head(5), c.binding())
    old = c.key_hex
    c.key = Ed25519PrivateKey.generate()  # lab-c starts signing with another key
    with caplog.at_level("WARNING", logger="psi_share.witness"):
        c.send(c.head(9), c.binding())
    assert f"peer lab-c now signs its audit log with key {c.key_hex} (before: {old})" in caplog.text
    c.send(c.head(9, head="cd" * 32), c.binding())  # a second, different head for count 9: two logs
    assert "signed two different heads for entry count 9" in caplog.text
    b_home = b.home.path
    listing = _cli(b_home, "audit", "witnesses", "--format", "json")
    assert listing.returncode == 1 and "its audit log forked" in listing.stderr
    rows = {r["audit_key"]: r for r in json.loads(listing.stdout) if r["peer"] == "lab-c"}
    assert set(rows) == {old, c.key_hex} and rows[c.key_hex]["forks"] == 1 and rows[old]["heads"] == 1
    assert rows[c.key_hex]["latest"] in (f"9:{'ab' * 32}", f"9:{'cd' * 32}")


def test_a_node_that_replaced_its_log_is_caught_by_its_own_certificates_binding(federation, pair) -> None:  # type: ignore[no-untyped-def]
    """Whoever holds the whole node moves audit/ aside and starts a new log under a new key
    (also in keys/audit.key): locally everything agrees, pinning aside. lab-b still holds
    heads of the old log, under a key lab-a's own certificate bound."""
    a, b = pair
    a.match("lab-b", kinds=["email"])
    home = a.home.path
    old_key = _cli(home, "audit", "key").stdout.strip()
    federation.servers.pop("lab-a").stop(grace=1)
    federation.nodes.pop("lab-a").close()
    shutil.move(home / "audit", home.parent / "old-audit")
    (home / "keys" / "audit.key").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with Node.open(home) as node:  # the same node (name, certificate, peers), a new log
        node.match("lab-b", kinds=["email"])  # lab-b now holds heads under both keys
    new_key = _cli(home, "audit", "key").stdout.strip()
    assert new_key != old_key and _cli(home, "audit", "verify").returncode == 0
    result = _cli(home, "audit", "verify", "--witnesses")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"witness lab-b: FAILED: head " in result.stderr and f"is signed by audit key {old_key}, not the trusted "
            f"key {new_key}; this node's own certificate" in result.stderr and "signed another audit log" in result.stderr)
    assert len(held.peer_keys(b.store, "lab-a")) == 2
    pinned = _cli(home, "audit", "verify", "--key", old_key)
    assert pinned.returncode == 1 and f"the log claims audit key {new_key}" in pinned.stderr


def test_a_node_without_an_audit_log_neither_asks_nor_answers(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a")
    b = federation.node("lab-b", audit__enabled="false")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    federation.serve("lab-b")
    federation.serve("lab-a")
    federation.connect_all()
    assert a.match("lab-b", kinds=["email"]).count == 1  # the session is not disturbed
    assert b.match("lab-a", kinds=["email"]).count == 1
    assert held.held_heads(a.store, "lab-b", per_key=10) == [] and held.held_heads(b.store, "lab-a", per_key=10) == []
    sent = [e["step"] for e in load_entries(a.home.audit_path) if e.get("protocol") == "witness"]
    assert sent == ["exchange"]  # asked once (lab-b refused); never asked by lab-b


# -- the pieces ----------------------------------------------------------------------


def test_store_keeps_the_latest_heads_per_key_and_reports_forks(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(held, "MAX_HEADS_PER_KEY", 4)
    with Store(tmp_path / "s.sqlite3") as store:
        assert held.record_peer_key(store, "lab-c", "k1", b"cert", b"sig", "1f", now=1) is None
        for count in range(1, 8):
            assert held.add_head(store, "lab-c", "k1", count, f"{count:064x}", count, "00" * 64, now=count) == []
        assert [h.count for h in held.held_heads(store, "lab-c", per_key=10)] == [4, 5, 6, 7]
        assert [h.count for h in held.held_heads(store, "lab-c", per_key=2)] == [6, 7]
        assert held.add_head(store, "lab-c", "k1", 7, "ff" * 32, 7, "00" * 64, now=8) == [f"{7:064x}"]
        assert held.record_peer_key(store, "lab-c", "k1", b"cert", b"sig", "1f", now=9) is None
        assert held.record_peer_key(store, "lab-c", "k2", b"cert", b"sig", "1f", now=10) == "k1"
        assert [h.count for h in held.held_heads(store, "lab-c", per_key=10)] == [5, 6, 7, 7]  # still at most 4
        (summary,) = held.held_summary(store)
        assert (summary.heads, summary.latest_count, summary.forks) == (4, 7, 1)


def test_verifier_checks_that_the_log_extends_each_witnessed_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "audit", node="lab-a", key=key, checkpoint_seconds=None)
    for i in range(3):
        log.append("received", {"peer": "lab-b", "step": "x", "items": i})
    first = log.signed_head()
    assert log.signed_head() == first  # the last entry is already a checkpoint: no second one
    log.append("received", {"peer": "lab-b", "step": "x", "items": 9})
    second = log.signed_head()
    assert second["count"] == first["count"] + 2
    log.close()
    entries = load_entries(tmp_path / "audit")
    plain = entries[3]  # not a checkpoint
    heads = [(first["count"], first["head"]), (second["count"], second["head"]), (50, "ab" * 32),
             (first["count"], "ab" * 32), (plain["seq"], entries[plain["seq"] - 1]["hash"])]
    result = verify_log(tmp_path / "audit", key.public_key(), witnessed=heads)
    assert result.ok and result.witnessed[:2] == ["", ""]
    assert "holds 8 entries" in result.witnessed[2] and "cut back" in result.witnessed[2]
    assert "the signed prefix was rewritten" in result.witnessed[3]
    assert "no longer the signed checkpoint" in result.witnessed[4]
    lines = (tmp_path / "audit" / "log.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "audit" / "log.jsonl").write_bytes(b"".join(lines[:2]) + b"garbage\n" + b"".join(lines[3:]))
    broken = verify_log(tmp_path / "audit", key.public_key(), witnessed=heads[:1])
    assert not broken.ok and "cannot be checked: the log fails before" in broken.witnessed[0]


def test_head_and_binding_messages_are_checked_for_shape() -> None:
    from psi_share.audit.messages import check_message, describe

    m = pb.SignedHead(node="Lab A!", count=0, head=b"x", audit_key=b"k", signature=b"s")
    problems = check_message("witness", "exchange", pb.WitnessHeadsRequest(
        protocol_version=1, head=m, binding=pb.AuditKeyBinding(node="lab-a", audit_key=b"k" * 32,
                                                              certificate=b"not der", signature=b"s")).SerializeToString())
    assert {"node is not a plain node name", "count is 0: a checkpoint follows at least the genesis entry",
            "head is not 32 bytes", "certificate is not a DER X.509 certificate"} <= set(problems)
    assert check_message("witness", "query", pb.GetWitnessedHeadsRequest(protocol_version=1).SerializeToString()) == []
    for step in ("exchange", "exchanged", "query", "held"):
        assert describe("witness", step)
