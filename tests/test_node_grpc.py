"""Real nodes over gRPC on loopback: matching, refusals, health, reflection, big sets."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from psi_share import ImportMode, Mode
from psi_share.errors import LocalProtocolError, NotFound, PeerRefused, PeerUnavailable
from psi_share.identifiers import KINDS
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.transport.server import NODE_HEADER, SERVICE_NAME
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

A_ROWS = [
    ("a1", "email", "J.Smith+promo@GMAIL.com"),
    ("a2", "phone", "(415) 555-0123"),
    ("a3", "ip_prefix", "198.51.100.77/24"),
    ("a4", "email", "nobody@example.org"),
    ("a5", "payment_fingerprint", "FpQx81kLmn02aa"),
    ("a6", "payment_fingerprint", "FpQx81kLmn02aa"),  # shares a card with a5
]
B_ROWS = [
    ("b1", "email", "jsmith@googlemail.com"),
    ("b2", "phone", "+1 415 555 0123"),
    ("b3", "ip_prefix", "198.51.100.0/24"),
    ("b4", "email", "somebody@example.org"),
    ("b5", "payment_fingerprint", "fpqx81klmn02aa"),  # case differs: must not match
    ("b6", "account_handle", "@Mallory"),
]


@pytest.fixture
def pair(federation, csv_file):
    a, b = federation.node("lab-a"), federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    b.import_file("customers", csv_file("bc.csv", B_ROWS + [("b9", "email", "nobody@example.org")]), None)
    federation.serve("lab-b")
    federation.serve("lab-a")
    federation.connect_all()
    return a, b


KINDS_USED = ["email", "phone", "ip_prefix", "payment_fingerprint"]


def test_match_reveals_canonical_matches_by_kind(pair):
    a, b = pair
    outcome = a.match("lab-b", kinds=KINDS_USED)
    assert outcome.count == 3 and outcome.matched_actors == 3
    matches = {(m.actor_id, m.kind) for m in a.store.matches([outcome.session_id])}
    assert matches == {("a1", "email"), ("a2", "phone"), ("a3", "ip_prefix")}
    # The responder recorded only what it learned: our set size.
    theirs = b.store.session(outcome.session_id)
    assert theirs.role == "responder" and theirs.requester_set_size == outcome.requester_set_size == 5
    assert theirs.status == "done" and theirs.matched_count is None


def test_count_only_stores_no_actor(pair):
    a, _ = pair
    outcome = a.match("lab-b", kinds=KINDS_USED, mode=Mode.COUNT)
    assert outcome.count == 3 and outcome.matched_actors is None
    assert a.store.matches([outcome.session_id]) == []
    assert a.store.session(outcome.session_id).matched_count == 3


def test_shared_identifier_matches_every_owner(federation, csv_file):
    a, b = federation.node("lab-a"), federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", [("z", "payment_fingerprint", "FpQx81kLmn02aa")]), None)
    federation.serve("lab-b")
    federation.connect_all()
    outcome = a.match("lab-b", kinds=["payment_fingerprint"])
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == {"a5", "a6"}
    assert outcome.count == 1 and outcome.matched_actors == 2


def test_results_survive_restart(pair, federation):
    a, _ = pair
    outcome = a.match("lab-b", kinds=KINDS_USED)
    home = a.home.path
    a.close()
    from psi_share import Node

    with Node.open(home) as again:
        assert again.store.session(outcome.session_id).status == "done"
        assert len(again.store.matches([outcome.session_id])) == 3


def test_unexposed_dataset_is_not_found(pair):
    a, _ = pair
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", peer_dataset="customers", kinds=["email"])
    # The name asked for is the peer's text: never repeated back (issue 13).
    assert err.value.code == "NOT_FOUND" and "no dataset of that name" in err.value.details
    assert "customers" not in err.value.details
    # nothing stored as a result
    failed = [s for s in a.store.sessions() if s.role == "requester"]
    assert failed == []


def test_unknown_local_dataset_and_peer(pair):
    a, _ = pair
    with pytest.raises(NotFound, match="nosuch"):
        a.match("lab-b", dataset="nosuch", kinds=["email"])
    with pytest.raises(NotFound, match="lab-z"):
        a.match("lab-z", kinds=["email"])
    with pytest.raises(LocalProtocolError, match="unknown identifier kind"):
        a.match("lab-b", kinds=["shoe_size"])


def test_unknown_caller_is_unauthenticated(pair, federation):
    a, b = pair
    b.store.remove_peer("lab-a")
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email"])
    assert err.value.code == "UNAUTHENTICATED"


def test_reveal_refused_when_node_is_count_only(federation, csv_file):
    a = federation.node("lab-a")
    b = federation.node("lab-b", exposure__reveal="false")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email"])
    assert err.value.code == "PERMISSION_DENIED" and "count" in err.value.details
    assert a.match("lab-b", kinds=KINDS_USED, mode=Mode.COUNT).count == 3


def test_kind_not_exposed_is_permission_denied(federation, csv_file):
    a = federation.node("lab-a")
    b = federation.node("lab-b", exposure__kinds='["email"]')
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email", "phone"])
    assert err.value.code == "PERMISSION_DENIED" and "phone" in err.value.details


def test_peer_down_is_unavailable(federation, csv_file):
    a = federation.node("lab-a")
    federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    federation.connect_all()  # lab-b is not serving: address 127.0.0.1:1
    a.peer_client("lab-b", timeout=3)
    with pytest.raises(PeerUnavailable):
        a.match("lab-b", kinds=["email"])


def _raw_stub(federation, frm: str = "lab-a", to: str = "lab-b"):
    channel = federation.channel(frm, to)
    return channel, pb_grpc.PsiShareNodeStub(channel)


def test_version_mismatches_are_failed_precondition(pair, federation):
    _, b = pair
    channel, stub = _raw_stub(federation)
    md = ()
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION + 1, dataset="flagged",
                                           kinds=[pb.KindVersion(kind="email", version=1)], set_size=1), metadata=md)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "protocol version" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                           kinds=[pb.KindVersion(kind="email", version=KINDS["email"].version + 1)],
                                           set_size=1), metadata=md)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "email" in err.value.details() and "version" in err.value.details()
        # Metadata claiming another name changes nothing: identity is the certificate.
        info = stub.NodeInfo(pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION), metadata=((NODE_HEADER, "lab-z"),))
        assert info.node_name == "lab-b"


def test_hostile_process_stream_is_refused_and_node_keeps_serving(pair, federation):
    a, b = pair
    channel, stub = _raw_stub(federation)
    md = ()
    with channel:
        opened = stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                                kinds=[pb.KindVersion(kind="email", version=1)], set_size=2,
                                                reveal_intersection=True), metadata=md)
        garbage = [pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id, index=0, last=True,
                            total_bytes=5, data=b"\xff\x00\x13\x07\x01")]
        with pytest.raises(grpc.RpcError) as err:
            list(stub.PsiProcess(iter(garbage), metadata=md))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # oversized announcement for a 2-item session
        big = [pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id, index=0, last=False,
                        total_bytes=10**9, data=b"x")]
        with pytest.raises(grpc.RpcError) as err:
            list(stub.PsiProcess(iter(big), metadata=md))
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert b.store.session(opened.session_id).status == "failed"
    assert a.match("lab-b", kinds=KINDS_USED).count == 3  # still serving everyone


def test_health_and_reflection(pair, federation):
    with federation.channel("lab-a", "lab-b") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


def test_node_info_lists_exposed_datasets_only(pair):
    a, _ = pair
    with a.peer_client("lab-b") as client:
        info = client.node_info()
    assert info.node_name == "lab-b"
    assert [d.name for d in info.datasets] == ["flagged"]
    assert {kv.kind for kv in info.canonicalization} == set(KINDS)


def test_session_expires_and_is_recorded(federation, csv_file):
    clock = [1000.0]
    b = federation.node("lab-b")
    b.clock = lambda: clock[0]
    b.responder._clock = b.clock
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    federation.node("lab-a")
    federation.serve("lab-b")
    federation.connect_all()
    channel, stub = _raw_stub(federation)
    md = ()
    with channel:
        opened = stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                                kinds=[pb.KindVersion(kind="email", version=1)], set_size=1,
                                                reveal_intersection=True), metadata=md)
        clock[0] += b.config.sessions.ttl_seconds + 1
        with pytest.raises(grpc.RpcError) as err:
            stub.PsiSetup(pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id),
                          metadata=md).next()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert b.store.session(opened.session_id).status == "expired"


@pytest.mark.slow
def test_set_far_above_grpc_message_limit(federation, tmp_path):
    """130k items -> a ~4.5 MB request and response, over gRPC's 4 MB limit, streamed in chunks."""
    n = 130_000
    a, b = federation.node("lab-a"), federation.node("lab-b")
    (tmp_path / "a.csv").write_text("actor_id,kind,value\n" + "".join(f"a{i},device_id,dev-{i:07d}\n" for i in range(n)))
    (tmp_path / "b.csv").write_text("actor_id,kind,value\n" + "".join(f"b{i},device_id,dev-{i:07d}\n" for i in range(0, n, 1000)))
    a.import_file("flagged", tmp_path / "a.csv", ImportMode.REPLACE)
    b.import_file("flagged", tmp_path / "b.csv", ImportMode.REPLACE)
    federation.serve("lab-b")
    federation.connect_all()
    outcome = a.match("lab-b", kinds=["device_id"])
    assert outcome.count == n // 1000
    assert outcome.requester_set_size == n
