"""scripts/demo_attacks.py's attacker, against in-process nodes (issue 11).

The demo runs these pieces against real ``psi-share serve`` processes; here
they meet in-process nodes on loopback (mutual TLS), so CI covers them
without the whole demo: lab-d's forged Paillier key is refused by lab-b and
audited, lab-d's forged filters fail lab-b's session with nothing matched.
Each attack has a control (the same attacker with an honest key, an honest
filter) that the victim accepts, so a refusal is the forgery's, not a bug
of the attacker's plumbing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from psi_share.crypto.filters import raw_setup
from psi_share.crypto.modulus_proof import ALPHA
from psi_share.errors import RemoteProtocolError
from psi_share.identifiers import canonicalize, domain_separated_item
from psi_share.v1 import node_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import demo_attacks as attacks  # noqa: E402

LAB_B = [(f"b{i}", "payment_fingerprint", f"pf_{i:04d}_abcdefghijkl") for i in range(12)] + [
    (f"b{i}", "email", f"User.{i}+tag@gmail.com") for i in range(12)
]
GUESSES = [domain_separated_item("payment_fingerprint", canonicalize("payment_fingerprint", f"pf_{i:04d}_abcdefghijkl"))
           for i in range(6, 18)]  # six of them lab-b holds


def _lab_b(federation, csv_file):  # type: ignore[no-untyped-def]
    """lab-b serving, lab-d a member with the count-only default grant (as in the demo)."""
    b = federation.node("lab-b", policy__reveal="false")
    b.import_file("flagged", csv_file("b.csv", LAB_B), None)
    federation.node("lab-d")
    federation.serve("lab-b")
    federation.connect_all()
    return b


@pytest.mark.parametrize("proof, why", [
    ("other-key", rf"prime factor below {ALPHA}|root \d+ is"),
    ("none", "without a proof"),
    ("honest", None),
])
def test_lab_b_refuses_lab_ds_forged_paillier_key_and_audits_it(federation, csv_file, proof, why):
    b = _lab_b(federation, csv_file)
    stub = pb_grpc.PsiShareNodeStub(federation.channel("lab-d", "lab-b"))
    r = attacks.forged_key_attack(stub, attacker="lab-d", victim="lab-b", dataset="flagged",
                                  kind="payment_fingerprint", items=GUESSES, proof=proof)
    if why is None:  # control: the same attacker with an honest key gets lab-b's encrypted sum
        assert (r.code, r.details) == ("", "the victim accepted the key and answered 'encrypted-sum'")
        return
    assert r.code == "INVALID_ARGUMENT" and re.search(why, r.details), r
    assert [e[2] for e in attacks.audit_statuses(b.home.path, r.session_id)] == [f"INVALID_ARGUMENT: {r.details}"]
    assert b.store.session(r.session_id).status == "failed"


def test_the_forged_modulus_is_issue_11s():
    n = attacks.forged_modulus()
    assert n.bit_length() == 2048 and n % attacks.SMALL_FACTOR == 0


@pytest.mark.parametrize("what", sorted(attacks.FORGERIES) + ["control: an honest empty set"])
def test_lab_b_refuses_a_hostile_responders_forged_filter(federation, csv_file, what):
    b = federation.node("lab-b")
    b.import_file("flagged", csv_file("b.csv", LAB_B), None)
    if what in attacks.FORGERIES:
        hostile = attacks.HostileResponder("lab-d", attacks.FORGERIES[what])
    else:  # the same hostile plumbing with a filter an honest node could send: lab-b accepts it
        hostile = attacks.HostileResponder("lab-d", lambda fpr, queries, items: raw_setup([]), claimed_items=0)
    server, port = attacks.serve_hostile(hostile, federation.issue("lab-d"))
    try:
        b.store.add_peer("lab-d", f"127.0.0.1:{port}", now=b.clock())
        if what not in attacks.FORGERIES:
            assert b.match("lab-d", kinds=["email"]).count == 0
            return
        with pytest.raises(RemoteProtocolError, match=r"peer's (Bloom|GCS) filter (has|is|cannot)"):
            b.match("lab-d", kinds=["email"])
    finally:
        server.stop(grace=1)
    (sid,) = hostile.opened
    assert hostile.closed == {sid: "failed"}  # lab-b told the responder how it ended
    session = b.store.session(sid)
    assert session.status == "failed" and session.matched_count is None and "filter" in session.error


def test_the_true_count_uses_the_generators_canonical_forms(tmp_path):
    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    ours.write_text("actor_id,kind,value\na,email,J.Smith+x@gmail.com\nb,email,jsmith@googlemail.com\n"
                    "c,phone,(415) 555-0199\nd,email,other@example.org\n")
    theirs.write_text("actor_id,kind,value\nx,email,jsmith@gmail.com\ny,phone,+1 415 555 0199\n")
    assert attacks.true_count(ours, theirs, ["email", "phone"]) == (3, 2)
    assert attacks.true_count(ours, theirs, ["email"]) == (2, 1)
