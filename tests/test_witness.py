"""Witnessing: peers hold signed heads of our audit log, and 'audit verify --witnesses'
catches a log cut back or rewritten after they saw it, even by someone holding our key.

Real nodes over mutual TLS run a session of every protocol (tests/protocol_run.py);
lab-a's home is then closed, and each attack rewrites a copy of it, as an attacker
who holds lab-a's audit key (and so can re-sign anything) would, from the published
log format alone (tests/audit_attacker.py). lab-b and lab-c keep serving: they are
the witnesses the compliance officer's 'audit verify --witnesses' asks.

Exit codes: 0 OK, 1 the log fails (locally or against a witness), 5 a witness
answered with heads that are not ours (its fault), 4 a witness could not be asked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import audit_attacker as attacker
import grpc
import pytest
from conftest import Federation
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from protocol_run import run_every_protocol, three_labs
from test_audit_node import _cli

from psi_share.audit.log import load_entries
from psi_share.audit.witness import SignedHead, bind_key
from psi_share.store.witnesses import held_heads
from psi_share.v1 import node_pb2 as pb


@dataclass
class Witnessed:
    fed: Federation
    home: Path  # lab-a's home, closed; never attacked itself
    key: str  # lab-a's audit public key, as 'audit key' prints it (pinned by the officer)
    held: dict[str, list[SignedHead]]  # witness -> the heads of lab-a's log it holds


def _heads(store, peer: str) -> list[SignedHead]:  # type: ignore[no-untyped-def]
    return [SignedHead(peer, h.count, h.head, h.time_ns, h.key, h.signature) for h in held_heads(store, peer, per_key=1000)]


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    fed = three_labs(tmp_path_factory.mktemp("witnessed"))
    try:
        run_every_protocol(fed)
        a = fed.nodes.pop("lab-a")
        fed.servers.pop("lab-a").stop(grace=1)
        a.close()  # as after 'serve' stops: the log ends with a signed checkpoint
        held = {w: _heads(fed.nodes[w].store, "lab-a") for w in ("lab-b", "lab-c")}
        key = _cli(a.home.path, "audit", "key").stdout.strip()
        yield Witnessed(fed, a.home.path, key, held)
    finally:
        fed.close()


@pytest.fixture
def victim(witnessed: Witnessed, tmp_path: Path) -> Path:
    """A copy of lab-a's home for one attack (same name, certificate and peers)."""
    home = tmp_path / "lab-a"
    shutil.copytree(witnessed.home, home)
    return home


def _our_key(home: Path) -> Ed25519PrivateKey:
    """What the attacker holds: lab-a's own audit signing key."""
    key = serialization.load_pem_private_key((home / "keys" / "audit.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _resign(home: Path, entries: list[dict]) -> None:
    """Rechain and re-sign everything with our own key, checkpoint.json to match: the
    forged log passes every local check, the pinned key included."""
    if entries[-1]["type"] != "checkpoint":
        entries.append({"type": "checkpoint", "node": "lab-a", "time_ns": entries[-1]["time_ns"] + 1})
    attacker.write(home / "audit", attacker.rechain(entries, sign_with=_our_key(home)))
    attacker.save_checkpoint_copy(home / "audit", entries)


def _verify(home: Path, key: str, *more: str):  # type: ignore[no-untyped-def]
    return _cli(home, "audit", "verify", "--key", key, *more)


def test_every_session_leaves_each_side_holding_a_checked_head_that_covers_it(witnessed: Witnessed) -> None:
    """Each head a witness holds is a real signed checkpoint of lab-a's log, and every
    session lab-a ran with a peer (PSI, intersection-sum, federation hops) is under one."""
    entries = load_entries(witnessed.home / "audit")
    for witness, heads in witnessed.held.items():
        assert heads, f"{witness} holds no head of lab-a"
        for head in heads:
            mark = entries[head.count]
            assert (mark["type"], mark["count"], mark["head"], mark["sig"]) == ("checkpoint", head.count, head.head, head.sig)
            assert head.key == witnessed.key
            head.verify()
        latest = max(h.count for h in heads)
        protocols = {e["protocol"] for e in entries if e.get("peer") == witness and e["type"] == "sent"}
        assert protocols >= {"intersection-sum", "federation-total", "witness"}
        assert protocols & {"psi", "cardinality"}  # lab-c grants counts only: the cardinality protocol
        last_session_entry = max(e["seq"] for e in entries if e.get("peer") == witness and e.get("protocol") != "witness")
        assert latest > last_session_entry, f"{witness}'s latest head does not cover lab-a's last session with it"
    # ...and lab-a holds checked heads of both peers' logs (its store is in the closed home)
    from psi_share.store import Store

    with Store(witnessed.home / "store.sqlite3") as store:
        for peer, node in witnessed.fed.nodes.items():
            theirs = _heads(store, peer)
            assert theirs and all(entries_of(node)[h.count]["sig"] == h.sig for h in theirs)


def entries_of(node) -> list[dict]:  # type: ignore[no-untyped-def]
    return load_entries(node.home.audit_path)


def test_honest_sessions_verify_against_every_witness(witnessed: Witnessed, victim: Path) -> None:
    result = _verify(victim, witnessed.key, "--witnesses")
    assert result.returncode == 0, result.stdout + result.stderr
    for witness, heads in witnessed.held.items():
        latest = max(heads, key=lambda h: h.count)
        assert (f"witness {witness}: OK: {witness} holds {len(heads)} heads of this log and the log extends every one "
                f"(latest {latest.text}") in result.stdout
    # the question and the answer are logged like every message (and signed when the node closed)
    asked = [(e["peer"], e["type"], e["step"]) for e in load_entries(victim / "audit") if e.get("protocol") == "witness"]
    assert asked[-4:] == [("lab-b", "sent", "query"), ("lab-b", "received", "held"),
                          ("lab-c", "sent", "query"), ("lab-c", "received", "held")]
    assert _cli(victim, "audit", "verify", "--key", witnessed.key).returncode == 0


def test_a_log_cut_back_to_an_older_checkpoint_passes_locally_but_not_the_witnesses(witnessed: Witnessed,
                                                                                   victim: Path) -> None:
    """The one forgery no local check sees (README): the log as it was at an older
    checkpoint, checkpoint.json to match, no key needed. The witnesses saw more."""
    latest = max(witnessed.held["lab-b"], key=lambda h: h.count)
    entries = attacker.read(victim / "audit")
    cut = max(i for i, e in enumerate(entries) if e["type"] == "checkpoint" and i < latest.count)
    attacker.write(victim / "audit", entries[:cut + 1])
    attacker.save_checkpoint_copy(victim / "audit", entries[:cut + 1])
    assert _verify(victim, witnessed.key).returncode == 0  # locally: the log as it was then
    result = _verify(victim, witnessed.key, "--witnesses")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"witness lab-b: FAILED: head {latest.text} (signed by this node's key, witnessed " in result.stderr
    # cut below the head; the entries verify itself appended since (asking the witnesses) may reach past it
    assert "the log was cut back below it" in result.stderr or "the signed prefix was rewritten" in result.stderr


def test_a_session_dropped_and_the_log_re_signed_with_our_own_key_is_caught(witnessed: Witnessed, victim: Path) -> None:
    """The attacker holds lab-a's audit key: it deletes every trace of the intersection-sum
    session with lab-c and re-signs the whole log. Every local check passes; both
    witnesses name the heads the log no longer extends."""
    entries = attacker.read(victim / "audit")
    hidden = [e for e in entries if e.get("protocol") == "intersection-sum" and e.get("peer") == "lab-c"]
    assert hidden
    _resign(victim, [e for e in entries if e not in hidden])
    local = _verify(victim, witnessed.key)
    assert local.returncode == 0 and "OK" in local.stdout, local.stdout + local.stderr
    result = _verify(victim, witnessed.key, "--witnesses")
    assert result.returncode == 1, result.stdout + result.stderr
    first_hidden = hidden[0]["seq"]
    for witness, heads in witnessed.held.items():
        for head in heads:
            line = f"witness {witness}: FAILED: head {head.text} "
            assert (line in result.stderr) == (head.count > first_hidden), (head.text, result.stderr)
    assert "the signed prefix was rewritten" in result.stderr


def test_a_witnessed_entry_rewritten_and_re_signed_is_caught(witnessed: Witnessed, victim: Path) -> None:
    """One witnessed entry edited (the bytes of the first message sent to lab-b), the log
    re-signed with our key: every head from that entry on fails, naming witness and head."""
    entries = attacker.read(victim / "audit")
    edited = next(e for e in entries if e["type"] == "sent" and e.get("peer") == "lab-b")
    edited["bytes"] //= 2
    _resign(victim, entries)
    assert _verify(victim, witnessed.key).returncode == 0
    result = _verify(victim, witnessed.key, "--witnesses")
    assert result.returncode == 1
    earliest = min(witnessed.held["lab-b"], key=lambda h: h.count)
    assert earliest.count > edited["seq"]
    assert (f"witness lab-b: FAILED: head {earliest.text} (signed by this node's key, witnessed " in result.stderr
            and f"entry seq {earliest.count - 1} has hash " in result.stderr), result.stderr


class ForgingWitness:
    """A federation member (lab-m, its certificate from the federation CA) running a server
    of its own: it answers GetWitnessedHeads with heads it made up, written from the proto."""

    def __init__(self, tls: Path, answer: pb.GetWitnessedHeadsResponse) -> None:
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: answer.SerializeToString())
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "psi_share.v1.PsiShareNode", {"GetWitnessedHeads": handler}),))
        credentials = grpc.ssl_server_credentials(
            [((tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())],
            root_certificates=(tls / "ca.crt").read_bytes(), require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()


def _forged_answer(real: SignedHead, tls: Path) -> pb.GetWitnessedHeadsResponse:
    flipped = bytes.fromhex(real.sig)
    bad_sig = real.to_message()
    bad_sig.signature = bytes([flipped[0] ^ 1]) + flipped[1:]  # our head, its signature broken
    made_up = pb.SignedHead(node="lab-a", count=10**6, head=os.urandom(32), time_ns=real.time_ns,
                            audit_key=bytes.fromhex(real.key), signature=os.urandom(64))  # "we had a million entries"
    own = Ed25519PrivateKey.generate()  # a key of lab-m's, claimed to be lab-a's
    own_hex = own.public_key().public_bytes_raw().hex()
    own_head = SignedHead("lab-a", 3, real.head, real.time_ns, own_hex,
                          own.sign(attacker_message("lab-a", 3, real.head)).hex()).to_message()
    binding = bind_key("lab-a", own_hex, (tls / "node.crt").read_bytes(), (tls / "node.key").read_bytes())
    short = real.to_message()
    short.head = short.head[:31]
    other_node = real.to_message()
    other_node.node = "lab-b"
    return pb.GetWitnessedHeadsResponse(protocol_version=1, heads=[bad_sig, made_up, own_head, short, other_node],
                                        bindings=[binding.to_message()])


def attacker_message(node: str, count: int, head: str) -> bytes:
    return f"psi-share audit checkpoint v1\nnode={node}\ncount={count}\nhead={head}\n".encode()


def test_a_witness_answering_with_forged_heads_is_blamed_not_our_log(witnessed: Witnessed, victim: Path) -> None:
    tls = witnessed.fed.issue("lab-m")
    forger = ForgingWitness(tls, _forged_answer(witnessed.held["lab-b"][0], tls))
    try:
        added = _cli(victim, "peers", "add", "lab-m", f"127.0.0.1:{forger.port}")
        assert added.returncode == 0, added.stderr
        result = _verify(victim, witnessed.key, "--witnesses")
    finally:
        forger.server.stop(0)
    assert result.returncode == 5, result.stdout + result.stderr
    forged = [line for line in result.stderr.splitlines() if line.startswith("witness lab-m: FORGED (the peer's fault")]
    assert len(forged) == 5, result.stderr
    assert any("its signature does not verify under the audit key" in line for line in forged)
    assert any("head 1000000:" in line for line in forged)
    assert any("which this node's certificate never bound" in line and "names another node" in line for line in forged)
    assert any("head is not 32 bytes" in line for line in forged)
    assert any("names node lab-b, not this node" in line for line in forged)
    assert "FAILED" not in result.stderr and "witness lab-b: OK" in result.stdout and "witness lab-c: OK" in result.stdout


def test_an_unreachable_witness_is_reported_with_its_own_exit_code(witnessed: Witnessed, victim: Path) -> None:
    assert _cli(victim, "peers", "add", "lab-z", "127.0.0.1:1").returncode == 0
    result = _verify(victim, witnessed.key, "--witnesses")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "witness lab-z: NOT ASKED: " in result.stderr and "witness lab-b: OK" in result.stdout
    only = _verify(victim, witnessed.key, "--witnesses", "--witness", "lab-z")
    assert only.returncode == 4 and "lab-b" not in only.stdout + only.stderr
    unknown = _verify(victim, witnessed.key, "--witnesses", "--witness", "lab-q")
    assert unknown.returncode == 4 and "witness lab-q: NOT ASKED" in unknown.stderr
    # a log that fails outranks a witness that cannot be asked
    entries = attacker.read(victim / "audit")
    next(e for e in entries if e["type"] == "sent")["bytes"] = 1  # no rechaining: a plain edit
    attacker.write(victim / "audit", entries)
    assert _verify(victim, witnessed.key, "--witnesses").returncode == 1
