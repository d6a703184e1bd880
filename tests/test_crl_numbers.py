"""CRL numbers only go up: an older, genuine CRL dropped in place re-admits nobody.

The attacker here holds nothing secret: an older ``crl.pem`` the CA really
signed (every node received one) and write access to a node's ``tls/``
folder, or an operator who copies the wrong file.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from psi_share import Node
from psi_share.errors import PeerRefused
from psi_share.pki import FederationCA, RevocationList, init_ca, issue_node, load_crl, refresh_crl, revoke

# What is new is imported where it is used, so that this module runs on a
# version without CRL numbers and shows the older CRL re-admitting lab-a.

ROWS = [("a1", "email", "x@example.org"), ("a2", "email", "y@example.org")]


def test_the_ca_numbers_every_crl_it_signs(tmp_path: Path) -> None:
    from psi_share.crl import crl_number

    ca = init_ca(tmp_path / "ca", "fed")
    numbers = [crl_number(load_crl(ca.crl_path, ca.certificate()))]
    issue_node(ca, "lab-a", tmp_path / "a")
    revoke(ca, name="lab-a")
    numbers.append(crl_number(load_crl(ca.crl_path, ca.certificate())))
    refresh_crl(ca)
    numbers.append(crl_number(load_crl(ca.crl_path, ca.certificate())))
    revoke(ca, name="lab-a")  # already revoked: re-signed all the same
    numbers.append(crl_number(load_crl(ca.crl_path, ca.certificate())))
    assert numbers == [1, 2, 3, 4]


def _restart(federation, name: str) -> Node:  # type: ignore[no-untyped-def]
    """Stop ``name``'s server and node, open its home again and serve."""
    federation.servers.pop(name).stop(grace=1)
    home = federation.nodes[name].home.path
    federation.nodes.pop(name).close()
    federation.nodes[name] = Node.open(home)
    federation.serve(name)
    federation.connect_all()
    return federation.nodes[name]


def test_an_older_crl_dropped_in_place_does_not_re_admit_a_revoked_certificate(federation, csv_file, caplog) -> None:  # type: ignore[no-untyped-def]
    a, b = federation.node("lab-a"), federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", ROWS), None)
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    b_crl = b.home.tls_path / "crl.pem"
    assert a.match("lab-b", kinds=["email"]).count == 2  # CRL number 1 in force at lab-b
    crl_1 = b_crl.read_bytes()
    revoke(federation.ca, name="lab-a")  # CRL number 2 revokes lab-a
    shutil.copy(federation.ca.crl_path, b_crl)
    with pytest.raises(PeerRefused, match="revoked"):
        a.match("lab-b", kinds=["email"])
    b_crl.write_bytes(crl_1)  # the older CRL, genuine and signed by the CA, dropped in place
    with caplog.at_level(logging.WARNING, logger="psi_share.crl"):
        with pytest.raises(PeerRefused, match="revoked") as err:
            a.match("lab-b", kinds=["email"])
    assert err.value.code == "UNAUTHENTICATED"
    assert f"{b_crl}: refused CRL number 1: this node already enforces CRL number 2" in caplog.text
    assert "CRL number 2 stays in force" in caplog.text
    from psi_share.crl import CRL_IN_FORCE, crl_number

    # A restart with the older crl.pem still on disk keeps CRL number 2 (the copy in tls/).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="psi_share.crl"):
        b = _restart(federation, "lab-b")
        with pytest.raises(PeerRefused, match="revoked"):
            a.match("lab-b", kinds=["email"])
    assert "refused CRL number 1" in caplog.text
    assert b.tls.crl.number == 2 and crl_number(load_crl(b.home.tls_path / CRL_IN_FORCE, federation.ca.certificate())) == 2
    # Going forward works as before: a newer CRL replaces it, and the copy follows.
    refresh_crl(federation.ca)
    shutil.copy(federation.ca.crl_path, b_crl)
    with pytest.raises(PeerRefused, match="revoked"):
        a.match("lab-b", kinds=["email"])
    assert b.tls.crl.number == 3 and not b.tls.crl.refused
    assert (b.home.tls_path / CRL_IN_FORCE).read_bytes() == federation.ca.crl_path.read_bytes()


def _series(ca: FederationCA, tmp_path: Path, n: int) -> tuple[list[bytes], list[int]]:
    """CRLs numbered 1..n, each revoking one more certificate; and those serials."""
    crls = [ca.crl_path.read_bytes()]
    serials = []
    for i in range(1, n):
        issued = issue_node(ca, f"lab-{i}", tmp_path / f"n{i}")
        serials.append(int(issued.serial, 16))
        revoke(ca, serial=issued.serial)
        crls.append(ca.crl_path.read_bytes())
    return crls, serials


@pytest.mark.parametrize("seed", range(6))
def test_any_order_of_drops_enforces_the_highest_number_seen(tmp_path: Path, seed: int) -> None:
    """Sweep: CRLs 1..6 dropped in a random order, with repeats; after every drop
    the node enforces exactly the revocations of the highest number seen so far
    (ground truth: CRL k revokes the first k - 1 serials)."""
    from psi_share.crl import CRL_IN_FORCE

    ca = init_ca(tmp_path / "ca", "fed")
    crls, serials = _series(ca, tmp_path, 6)
    rng = random.Random(seed)
    order = [rng.randrange(len(crls)) for _ in range(15)]
    path, kept = tmp_path / "crl.pem", tmp_path / CRL_IN_FORCE
    path.write_bytes(crls[order[0]])
    enforced = RevocationList(path, ca.certificate(), in_force=kept)
    highest = order[0]
    for step, index in enumerate(order):
        path.write_bytes(crls[index])
        highest = max(highest, index)
        revoked = {s for s in serials if enforced.is_revoked(s)}
        assert revoked == set(serials[:highest]), (step, order)
        assert enforced.number == highest + 1 and bool(enforced.refused) == (index < highest)
        # a restart at this point starts from the same CRL
        assert RevocationList(path, ca.certificate(), in_force=kept).number == highest + 1


def _unnumbered_crl(ca: FederationCA, serials: list[int]) -> bytes:
    """A CRL the CA key signed without a CRL number (as older CA tools wrote them)."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate().subject)
               .last_update(now - dt.timedelta(minutes=1)).next_update(now + dt.timedelta(days=1)))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_a_crl_without_a_number_is_refused_once_a_numbered_one_is_in_force(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from psi_share.crl import CRL_IN_FORCE

    ca = init_ca(tmp_path / "ca", "fed")
    crls, serials = _series(ca, tmp_path, 2)
    path = tmp_path / "crl.pem"
    path.write_bytes(_unnumbered_crl(ca, []))  # nothing numbered seen yet: taken, as before
    enforced = RevocationList(path, ca.certificate(), in_force=tmp_path / CRL_IN_FORCE)
    assert enforced.number is None and not enforced.is_revoked(serials[0])
    path.write_bytes(crls[1])
    assert enforced.is_revoked(serials[0]) and enforced.number == 2
    path.write_bytes(_unnumbered_crl(ca, []))
    with caplog.at_level(logging.WARNING, logger="psi_share.crl"):
        assert enforced.is_revoked(serials[0])
    assert "refused a revocation list without a CRL number: this node already enforces CRL number 2" in caplog.text


def test_an_unreadable_crl_or_a_foreign_copy_in_force_opens_nothing(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from psi_share.crl import CRL_IN_FORCE

    ca = init_ca(tmp_path / "ca", "fed")
    crls, serials = _series(ca, tmp_path, 3)
    path, kept = tmp_path / "crl.pem", tmp_path / CRL_IN_FORCE
    path.write_bytes(crls[2])
    enforced = RevocationList(path, ca.certificate(), in_force=kept)
    with caplog.at_level(logging.WARNING, logger="psi_share.crl"):
        path.write_text("not a CRL")
        assert enforced.is_revoked(serials[1])
        path.unlink()
        assert enforced.is_revoked(serials[1])
    assert "not a PEM revocation list" in caplog.text and "no such revocation list" in caplog.text
    # A copy in force signed by another CA is ignored (and said so); crl.pem decides.
    rogue = init_ca(tmp_path / "rogue", "fed")
    kept.write_bytes(rogue.crl_path.read_bytes())
    path.write_bytes(crls[1])
    with caplog.at_level(logging.WARNING, logger="psi_share.crl"):
        again = RevocationList(path, ca.certificate(), in_force=kept)
    assert again.number == 2 and "ignored" in caplog.text
    assert kept.read_bytes() == crls[1]


def test_a_handshake_during_a_crl_reload_never_answers_from_the_old_list(tmp_path: Path, monkeypatch) -> None:
    """Forty calls arrive as a new CRL lands: the first starts the reload; none may be admitted
    from the revoked set the reload is replacing (the reload is slowed here to hold the gap open)."""
    import threading
    import time

    from psi_share.crl import RevocationList

    ca = init_ca(tmp_path / "ca", "fed")
    issue_node(ca, "lab-a", tmp_path / "a")
    node_crl = tmp_path / "crl.pem"
    shutil.copyfile(ca.crl_path, node_crl)
    revocations = RevocationList(node_crl, ca.certificate())
    serial = x509.load_pem_x509_certificate((tmp_path / "a" / "node.crt").read_bytes()).serial_number
    assert not revocations.is_revoked(serial)
    revoke(ca, name="lab-a")
    shutil.copyfile(ca.crl_path, node_crl)
    slow = RevocationList._goes_back

    def goes_back_slowly(self, crl):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return slow(self, crl)

    monkeypatch.setattr(RevocationList, "_goes_back", goes_back_slowly)
    answers: list[bool] = []
    first = threading.Thread(target=lambda: answers.append(revocations.is_revoked(serial)))
    first.start()
    time.sleep(0.1)  # the first call is inside the reload, the new file already read
    others = [threading.Thread(target=lambda: answers.append(revocations.is_revoked(serial))) for _ in range(39)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert answers == [True] * 40
