"""Federation PKI and mutual TLS: who may connect, and who a peer is.

Real certificates from real CAs, real gRPC servers on loopback. A peer's
identity is the node its certificate names; nothing it writes changes that.
"""

from __future__ import annotations

import datetime as dt
import shutil
import stat
from pathlib import Path

import grpc
import pytest
from cli_helpers import put_crl
from cryptography import x509

from psi_share import Node, init_home
from psi_share.errors import ConfigError, PeerRefused, Refused, UntrustedPeer
from psi_share.pki import (
    FederationCA,
    PkiError,
    RevocationList,
    init_ca,
    issue_node,
    load_certificate,
    node_name_of,
    revoke,
)
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.transport.server import NODE_HEADER, CertificateAuthenticator
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

ROWS = [("a1", "email", "x@example.org"), ("a2", "email", "y@example.org")]


@pytest.fixture
def pair(federation, csv_file):
    a, b = federation.node("lab-a"), federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", ROWS), None)
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    return a, b


def _info(channel: grpc.Channel, metadata=()) -> pb.NodeInfoResponse:  # type: ignore[no-untyped-def]
    return pb_grpc.PsiShareNodeStub(channel).NodeInfo(
        pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION), metadata=metadata, timeout=10
    )


# -- the CA ------------------------------------------------------------------


def test_ca_and_node_files_private_keys_are_0600(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "fed")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.path.stat().st_mode) == 0o700
    issued = issue_node(ca, "lab-a", tmp_path / "out", addresses=["127.0.0.1:7400", "lab-a.example.net:7400", "[::1]:1"])
    assert stat.S_IMODE((issued.directory / "node.key").stat().st_mode) == 0o600
    cert = load_certificate(issued.directory / "node.crt")
    assert node_name_of(cert) == "lab-a"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["lab-a", "lab-a.example.net"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    cert.verify_directly_issued_by(ca.certificate())
    with pytest.raises(PkiError, match="already holds a CA"):
        init_ca(tmp_path / "ca", "again")


def test_issue_refuses_bad_names_and_addresses_that_could_name_a_node(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "fed")
    with pytest.raises(PkiError, match="invalid node name"):
        issue_node(ca, "Lab A", tmp_path / "x")
    with pytest.raises(PkiError, match="single DNS label"):
        issue_node(ca, "lab-a", tmp_path / "x", addresses=["lab-b:7400"])
    with pytest.raises(PkiError, match="not a CA|no ca.crt"):
        issue_node(FederationCA(tmp_path / "nowhere"), "lab-a", tmp_path / "x")


def test_revoke_by_name_and_serial_signs_a_new_crl(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "fed")
    one = issue_node(ca, "lab-a", tmp_path / "a1")
    two = issue_node(ca, "lab-a", tmp_path / "a2")
    other = issue_node(ca, "lab-b", tmp_path / "b")
    assert sorted(revoke(ca, name="lab-a")) == sorted([one.serial, two.serial])
    crl = RevocationList(ca.crl_path, ca.certificate())
    assert crl.is_revoked(int(one.serial, 16)) and crl.is_revoked(int(two.serial, 16))
    assert not crl.is_revoked(int(other.serial, 16))
    assert revoke(ca, serial=other.serial) == [other.serial]
    assert crl.is_revoked(int(other.serial, 16))  # re-read on change
    with pytest.raises(PkiError, match="no certificate to 'lab-z'"):
        revoke(ca, name="lab-z")


def test_sign_request_checks_the_request(tmp_path: Path) -> None:
    from psi_share.pki import create_request, sign_request

    ca = init_ca(tmp_path / "ca", "fed")
    csr = create_request(tmp_path / "node", "lab-a", ["10.0.0.5", "lab-a.example.net"])
    issued = sign_request(ca, csr, tmp_path / "out")
    cert = load_certificate(tmp_path / "out" / "node.crt")
    assert issued.name == "lab-a" and node_name_of(cert) == "lab-a"
    assert not (tmp_path / "out" / "node.key").exists()
    # A request that slips in another node's name as a SAN is refused.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from psi_share.pki import load_private_key

    key = load_private_key(tmp_path / "node" / "node.key")
    sneaky = (x509.CertificateSigningRequestBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab-a")]))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("lab-a"), x509.DNSName("lab-b")]), critical=False)
              .sign(key, hashes.SHA256()))
    (tmp_path / "sneaky.csr").write_bytes(sneaky.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PkiError, match="single DNS label"):
        sign_request(ca, tmp_path / "sneaky.csr", tmp_path / "out2")
    (tmp_path / "junk.csr").write_text("not a request")
    with pytest.raises(PkiError, match="not a PEM certificate request"):
        sign_request(ca, tmp_path / "junk.csr", tmp_path / "out3")


def test_crl_signed_by_another_ca_is_refused(tmp_path: Path) -> None:
    ca, rogue = init_ca(tmp_path / "ca", "fed"), init_ca(tmp_path / "rogue", "fed")
    with pytest.raises(PkiError, match="not signed by the federation CA"):
        RevocationList(rogue.crl_path, ca.certificate())


def test_init_refuses_a_certificate_for_another_node_or_from_another_ca(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "fed")
    issue_node(ca, "lab-b", tmp_path / "b")
    with pytest.raises(ConfigError, match="names node 'lab-b'"):
        init_home(tmp_path / "home", "lab-a", "127.0.0.1:0", tls_from=tmp_path / "b")
    assert not (tmp_path / "home").exists()  # refused before anything was written
    # A certificate signed by a rogue CA but shipped with the real ca.crt.
    rogue = init_ca(tmp_path / "rogue", "fed")
    issue_node(rogue, "lab-a", tmp_path / "ra")
    shutil.copy(ca.cert_path, tmp_path / "ra" / "ca.crt")
    shutil.copy(ca.crl_path, tmp_path / "ra" / "crl.pem")
    with pytest.raises(ConfigError, match="not issued by the federation CA"):
        init_home(tmp_path / "home2", "lab-a", "127.0.0.1:0", tls_from=tmp_path / "ra")


def test_node_without_certificate_cannot_serve_or_call(tmp_path: Path) -> None:
    home = init_home(tmp_path / "lab-a", "lab-a", "127.0.0.1:0")
    with Node.open(home.path) as node:
        node.store.add_peer("lab-b", "127.0.0.1:1", now=0)
        with pytest.raises(ConfigError, match="no node certificate .*pki install"):
            node.serve("127.0.0.1:0")
        with pytest.raises(ConfigError, match="no node certificate"):
            node.peer_client("lab-b")


# -- mutual TLS on the wire -------------------------------------------------


def test_identity_is_the_certificate_not_the_metadata(pair, federation) -> None:
    with federation.channel("lab-a", "lab-b") as channel:
        assert _info(channel, ((NODE_HEADER, "lab-zz"),)).node_name == "lab-b"
    _, b = pair
    # lab-c holds a valid federation certificate but is not lab-b's peer.
    federation.node("lab-c")
    with federation.channel("lab-c", "lab-b") as channel:
        with pytest.raises(grpc.RpcError) as err:
            _info(channel, ((NODE_HEADER, "lab-a"),))  # claiming to be a known peer does not help
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "lab-c" in err.value.details() and "peers add" in err.value.details()


def test_plaintext_and_no_client_certificate_are_refused(pair, federation) -> None:
    port = federation.servers["lab-b"].port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            _info(channel, ((NODE_HEADER, "lab-a"),))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    ca_pem = federation.ca.cert_path.read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)  # server-auth only
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "lab-b")]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            _info(ch)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    a, _ = pair
    assert a.match("lab-b", kinds=["email"]).count == 2  # still serving


def test_certificate_from_unknown_ca_is_refused(pair, federation, tmp_path) -> None:
    rogue = init_ca(tmp_path / "rogue", "rogue federation")
    issue_node(rogue, "lab-a", tmp_path / "rogue-a", addresses=["127.0.0.1"])
    shutil.copy(federation.ca.cert_path, tmp_path / "rogue-a" / "ca.crt")  # it trusts the real CA
    with federation.channel("lab-a", "lab-b", tls_dir=tmp_path / "rogue-a") as channel:
        with pytest.raises(grpc.RpcError) as err:
            _info(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    a, _ = pair
    assert a.match("lab-b", kinds=["email"]).count == 2


def test_expired_certificate_is_refused(pair, federation, tmp_path) -> None:
    past = lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)  # noqa: E731
    issue_node(federation.ca, "lab-a", tmp_path / "old-a", addresses=["127.0.0.1"], days=2, now=past)
    with federation.channel("lab-a", "lab-b", tls_dir=tmp_path / "old-a") as channel:
        with pytest.raises(grpc.RpcError) as err:
            _info(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake checks validity


def test_revoked_certificate_is_refused_once_the_crl_arrives(pair, federation) -> None:
    a, b = pair
    assert a.match("lab-b", kinds=["email"]).count == 2
    revoke(federation.ca, name="lab-a")
    put_crl(federation.ca.crl_path, b.home.tls_path / "crl.pem")  # lab-b receives the new CRL
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email"])
    assert err.value.code == "UNAUTHENTICATED" and "revoked" in err.value.details
    assert [s for s in a.store.sessions() if s.role == "requester" and s.status != "done"] == []


def test_client_refuses_a_revoked_server(pair, federation) -> None:
    a, _ = pair
    revoke(federation.ca, name="lab-b")
    put_crl(federation.ca.crl_path, a.home.tls_path / "crl.pem")
    with pytest.raises(UntrustedPeer, match="refusing peer lab-b: .*revoked"):
        a.match("lab-b", kinds=["email"])
    assert a.store.sessions() == []


def test_client_refuses_a_server_that_is_not_the_peer_it_meant(pair, federation) -> None:
    """lab-a believes lab-c lives at lab-b's address: lab-b's certificate does not name lab-c."""
    a, _ = pair
    a.store.add_peer("lab-c", f"127.0.0.1:{federation.servers['lab-b'].port}", now=0)
    with pytest.raises(UntrustedPeer, match="no federation certificate naming lab-c"):
        a.match("lab-c", kinds=["email"])
    assert a.store.sessions() == []


class _Context:
    def __init__(self, pem: bytes | None) -> None:
        self._pem = pem

    def auth_context(self):  # type: ignore[no-untyped-def]
        return {"x509_pem_cert": [self._pem]} if self._pem else {}


def test_authenticator_checks_expiry_on_its_own_clock(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "fed")
    issue_node(ca, "lab-a", tmp_path / "a", days=30)
    pem = (tmp_path / "a" / "node.crt").read_bytes()
    crl = RevocationList(ca.crl_path, ca.certificate())
    now = [dt.datetime.now(dt.timezone.utc)]
    auth = CertificateAuthenticator(lambda: {"lab-a"}, ca.certificate(), crl, now=lambda: now[0])
    assert auth.authenticate(_Context(pem)) == "lab-a"
    now[0] += dt.timedelta(days=31)
    with pytest.raises(Refused, match="outside its validity period") as err:
        auth.authenticate(_Context(pem))
    assert err.value.code == "UNAUTHENTICATED"
    with pytest.raises(Refused, match="no client certificate"):
        auth.authenticate(_Context(None))
    rogue = init_ca(tmp_path / "rogue", "fed")
    issue_node(rogue, "lab-a", tmp_path / "r")
    now[0] -= dt.timedelta(days=31)
    with pytest.raises(Refused, match="not signed by this federation"):
        auth.authenticate(_Context((tmp_path / "r" / "node.crt").read_bytes()))


def test_insecure_mode_is_explicit_and_warns(tmp_path: Path, csv_file, caplog) -> None:
    homes = {n: init_home(tmp_path / n, n, "127.0.0.1:0") for n in ("lab-a", "lab-b")}
    for home in homes.values():  # exact counts: the noise is not this test's subject
        home.config_path.write_text(home.config_path.read_text().replace("[privacy]\nenabled = true",
                                                                          "[privacy]\nenabled = false"))
    with Node.open(homes["lab-a"].path, insecure=True) as a, Node.open(homes["lab-b"].path, insecure=True) as b:
        a.import_file("flagged", csv_file("a.csv", ROWS), None)
        b.import_file("flagged", csv_file("b.csv", ROWS), None)
        server = b.serve("127.0.0.1:0")
        try:
            a.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=0)
            b.store.add_peer("lab-a", "127.0.0.1:1", now=0)
            with caplog.at_level("WARNING"):
                assert a.match("lab-b", kinds=["email"], mode=__import__("psi_share").Mode.COUNT).count == 2
            assert "INSECURE" in caplog.text
        finally:
            server.stop(grace=1)
