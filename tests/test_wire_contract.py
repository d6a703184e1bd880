"""protos/PROTOCOL.md is enough to interoperate: a foreign client, real nodes.

``tests/foreign_client.py`` knows only the proto file and PROTOCOL.md (no
psi_share import). Here it runs whole PSI sessions over mutual TLS against
real nodes, in both modes, over a sweep of set sizes, chunk sizes and both
OpenMined setups (raw and Golomb-compressed), and every result is checked
against the plaintext intersection of the item strings. Then each rule the
contract states that a client writer had to find in the source is checked
against the node: the set size is exact, the request size bound is the
stated formula, reveal_intersection must match the open, chunks carry the
session, what NOT_FOUND after a refused request means, what PsiClose records.
The same client runs intersection-sum as matcher from section 7 alone (hash
to curve, x-only blinding, Paillier product), checked against the plaintext
count and sum. Reflection answers under v1 and v1alpha.
"""

from __future__ import annotations

import threading

import grpc
import private_set_intersection.python as openmined
import pytest
from foreign_client import ForeignClient, intersect, item, request_limit, run_session, sum_as_matcher, to_chunks
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import Federation, write_csv

EMAILS = [f"u{i}@example.org" for i in range(0, 6000, 2)]  # canonical already: lowercase, not gmail
DEVICES = [f"dev-{i:06d}" for i in range(0, 3000, 3)]
USAGE = {f"u{i}@example.org": i * 7919 % 100_003 for i in range(0, 900, 3)}  # lab-b's amounts


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):  # type: ignore[no-untyped-def]
    """lab-b sends OpenMined's raw setup (at a false-positive rate of 1e-15 a
    Golomb-compressed set's hash range would overflow OpenMined's int64);
    lab-g a Golomb-compressed set. Both know the foreign client as lab-f."""
    root = tmp_path_factory.mktemp("wire")
    fed = Federation(root)
    data = write_csv(root / "flagged.csv", [(f"e{i}", "email", v) for i, v in enumerate(EMAILS)]
                     + [(f"d{i}", "device_id", v) for i, v in enumerate(DEVICES)])
    fed.node("lab-b", matching__false_positive_rate="1e-15", exposure__datasets='["flagged", "usage"]',
             paillier__pool_size=0, privacy__enabled="false")  # exact sums, checked against plaintext
    fed.node("lab-g", matching__max_set_size=65536, matching__false_positive_rate="1e-6")
    (root / "usage.csv").write_text("actor_id,kind,value,amount\n" + "".join(
        f"x{i},email,{v},{amount}\n" for i, (v, amount) in enumerate(USAGE.items())))
    fed.nodes["lab-b"].import_file("usage", root / "usage.csv", None)
    for name in ("lab-b", "lab-g"):
        fed.nodes[name].import_file("flagged", data, None)
        fed.serve(name)
        fed.nodes[name].responder.prepare("flagged").result()
        fed.nodes[name].store.add_peer("lab-f", "127.0.0.1:1", now=0)
    tls = fed.issue("lab-f")
    clients = {name: ForeignClient(f"127.0.0.1:{fed.servers[name].port}", name, tls) for name in ("lab-b", "lab-g")}
    yield fed, clients
    for c in clients.values():
        c.channel.close()
    fed.close()


def _responder_items(versions: dict[str, int]) -> set[str]:
    return {item("email", versions["email"], v) for v in EMAILS} | {item("device_id", versions["device_id"], v) for v in DEVICES}


CASES = [
    # (node, requester values by kind, reveal, chunk bytes, setup first)
    ("lab-b", {"email": ["u4@example.org"]}, True, 1 << 20, False),
    ("lab-g", {"email": ["u5@example.org"]}, True, 4096, False),  # smaller than the request: one chunk
    ("lab-b", {"email": [f"u{i}@example.org" for i in range(1000)]}, True, 4099, False),  # an odd size at the 4 KiB minimum
    ("lab-g", {"email": [f"u{i}@example.org" for i in range(1000)]}, False, 65536, False),
    ("lab-g", {"email": [f"u{i}@example.org" for i in range(2000, 3000)],
               "device_id": [f"dev-{i:06d}" for i in range(2000)]}, True, 65536, True),
    ("lab-b", {"device_id": [f"dev-{i:06d}" for i in range(1, 3000, 2)]}, False, 4096, True),
    # over 1 MiB: two chunks at the node's own chunk size
    ("lab-b", {"email": [f"u{i}@example.org" for i in range(31000)]}, True, 1 << 20, False),
]


@pytest.mark.parametrize("node", ["lab-b", "lab-g"])
def test_an_empty_set_is_below_every_minimum(nodes, node) -> None:  # type: ignore[no-untyped-def]
    """min_set_size is at least 1 (policy), so an empty set is refused at PsiOpen, before any
    chunk: a set of 0 items is held to the same minimum as any other size (issue 13)."""
    _, clients = nodes
    client = clients[node]
    versions = {kv.kind: kv.version for kv in client.node_info().canonicalization}
    with pytest.raises(grpc.RpcError) as refused:
        client.open("flagged", {"email": versions["email"]}, 0, True)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "below" in refused.value.details()


@pytest.mark.parametrize("node, values, reveal, chunk_bytes, setup_first", CASES)
def test_foreign_client_matches_exactly(nodes, node, values, reveal, chunk_bytes, setup_first) -> None:  # type: ignore[no-untyped-def]
    fed, clients = nodes
    client = clients[node]
    info = client.node_info()
    # Versions come from NodeInfo, as PROTOCOL.md says; both nodes speak the same ones.
    versions = {kv.kind: kv.version for kv in info.canonicalization}
    kinds = sorted(values) or ["email"]
    items = [item(k, versions[k], v) for k in sorted(values) for v in values[k]]
    theirs = _responder_items(versions)
    expected = [i for i, x in enumerate(items) if x in theirs]

    result, sid, setup_kind = run_session(client, "flagged", {k: versions[k] for k in kinds}, items, reveal,
                                          chunk_bytes=chunk_bytes, setup_first=setup_first)

    assert result == (expected if reveal else len(expected))
    assert setup_kind == ("raw" if node == "lab-b" else "gcs")
    record = fed.nodes[node].store.session(sid)
    assert record.status == "done" and record.requester_set_size == len(items)


@pytest.mark.parametrize("values", [
    ["u3@example.org"], ["u4@example.org"], [f"u{i}@example.org" for i in range(0, 1200, 2)],
])
def test_foreign_intersection_sum_as_matcher(nodes, values: list[str]) -> None:
    """Section 7 alone: hash to curve, x-only blinding, Paillier product and re-randomization."""
    fed, clients = nodes
    count, total, sid = sum_as_matcher(clients["lab-b"], "usage", "email", 1, [item("email", 1, v) for v in values])
    shared = [v for v in values if v in USAGE]
    assert (count, total) == (len(shared), sum(USAGE[v] for v in shared))
    result = fed.nodes["lab-b"].store.sum_result(sid)
    assert (result.intersection_size, result.total) == (count, total)


@pytest.fixture
def lab_b(nodes):  # type: ignore[no-untyped-def]
    fed, clients = nodes
    return fed.nodes["lab-b"], clients["lab-b"]


def _request(values: list[str], reveal: bool = True) -> bytes:
    client = openmined.client.CreateWithNewKey(reveal)
    return client.CreateRequest([item("email", 1, v) for v in values]).SerializeToString()


def _refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_set_size_is_exact_and_not_found_after_a_refused_request_means_failed(lab_b) -> None:  # type: ignore[no-untyped-def]
    node, client = lab_b
    # Fewer is refused as well as more (more already exceeds the size bound).
    for sent, why in ((2, "request has 2 elements, session announced 3"), (4, "exceeds the limit of 121")):
        sid = client.open("flagged", {"email": 1}, 3, True).session_id
        code, details = _refused(lambda: client.process(sid, _request([f"x{i}@example.org" for i in range(sent)])))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and why in details
        # The refusal ended the session: every later call on it is NOT_FOUND.
        assert _refused(lambda: client.setup(sid))[0] is grpc.StatusCode.NOT_FOUND
        assert _refused(lambda: client.close(sid, "giving up"))[0] is grpc.StatusCode.NOT_FOUND
        assert node.store.session(sid).status == "failed"


def test_request_size_bound_is_the_stated_formula(lab_b) -> None:  # type: ignore[no-untyped-def]
    _, client = lab_b
    m = client.m
    for set_size in (1, 10, 1000):
        sid = client.open("flagged", {"email": 1}, set_size, True).session_id
        limit = request_limit(set_size)
        too_big = [m.Chunk(protocol_version=1, session_id=sid, index=0, last=False, total_bytes=limit + 1, data=b"")]
        code, details = _refused(lambda: list(client._stream("PsiProcess", iter(too_big), "stream")))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and f"limit of {limit}" in details


def test_reveal_intersection_must_match_the_open(lab_b) -> None:  # type: ignore[no-untyped-def]
    _, client = lab_b
    for opened_reveal in (True, False):
        sid = client.open("flagged", {"email": 1}, 2, opened_reveal).session_id
        request = _request(["a@example.org", "b@example.org"], reveal=not opened_reveal)
        code, details = _refused(lambda: client.process(sid, request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "reveal_intersection" in details


def test_every_chunk_carries_the_session_and_counts_from_zero(lab_b) -> None:  # type: ignore[no-untyped-def]
    _, client = lab_b
    request = _request([f"c{i}@example.org" for i in range(400)])  # 14 KB: four 4 KiB chunks
    for broken, expect in ((lambda c: c.index == 1 and setattr(c, "session_id", ""), "another session"),
                           (lambda c: c.index == 1 and setattr(c, "index", 2), "where chunk 1 was expected")):
        sid = client.open("flagged", {"email": 1}, 400, True).session_id
        chunks = list(to_chunks(sid, request, 4096))
        for c in chunks:
            broken(c)
        code, details = _refused(lambda: list(client._stream("PsiProcess", iter(chunks), "stream")))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and expect in details


def test_the_response_streams_while_the_request_still_arrives(lab_b) -> None:  # type: ignore[no-untyped-def]
    """PROTOCOL.md, PsiProcess: response chunks may come before the request's
    last chunk is sent (the node answers a batch at a time). The client holds
    its last chunk back until a response chunk arrives (or 60 s pass) and the
    result is still exactly OpenMined's own."""
    _, client = lab_b
    values = [f"u{i}@example.org" for i in range(40_000)]  # two batches of the node's 32,768
    psi_client = openmined.client.CreateWithNewKey(True)
    request = psi_client.CreateRequest([item("email", 1, v) for v in values]).SerializeToString()
    sid = client.open("flagged", {"email": 1}, len(values), True).session_id
    answered, held_back = threading.Event(), []

    def outgoing():  # type: ignore[no-untyped-def]
        for chunk in to_chunks(sid, request, 65536):
            if chunk.last:
                held_back.append(answered.wait(60))
            yield chunk

    replies = []
    for reply in client._stream("PsiProcess", outgoing(), "stream"):
        answered.set()
        replies.append(reply)
    assert held_back == [True], "no response chunk came before the request's last chunk"
    response = b"".join(r.data for r in replies)
    found = intersect(True, psi_client.GetPrivateKeyBytes(), client.setup(sid), response)
    assert found == [i for i, v in enumerate(values) if v in set(EMAILS)]
    client.close(sid, "done")


def test_a_client_that_gives_up_midway_fails_only_its_session(lab_b) -> None:  # type: ignore[no-untyped-def]
    node, client = lab_b
    values = [f"g{i}@example.org" for i in range(40_000)]
    request = _request(values)
    sid = client.open("flagged", {"email": 1}, len(values), True).session_id
    chunks = list(to_chunks(sid, request, 65536))
    call = client._stream("PsiProcess", iter(chunks[: len(chunks) - 3]), "stream")  # ends without its last chunk
    code = None
    try:
        list(call)
    except grpc.RpcError as exc:
        code = exc.code()
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert node.store.session(sid).status == "failed"
    result, _, _ = run_session(client, "flagged", {"email": 1}, [item("email", 1, v) for v in EMAILS[:5]], True)
    assert result == [0, 1, 2, 3, 4]  # the node goes on serving


def test_what_psi_close_records(lab_b) -> None:  # type: ignore[no-untyped-def]
    node, client = lab_b
    early = client.open("flagged", {"email": 1}, 1, True).session_id
    client.close(early, "changed my mind")
    assert (node.store.session(early).status, node.store.session(early).error) == ("closed", "changed my mind")
    # Once the request was answered the session is "done", whatever the outcome says.
    _, done, _ = run_session(client, "flagged", {"email": 1}, [item("email", 1, "u2@example.org")], True)
    assert (node.store.session(done).status, node.store.session(done).error) == ("done", "")


# -- reflection ----------------------------------------------------------------

LIST_SERVICES = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}: field 7, empty string


def _v1_call(channel, request: bytes) -> reflection_pb2.ServerReflectionResponse:  # type: ignore[no-untyped-def]
    """A v1 reflection call; the request is written by hand, the reply parsed with
    the v1alpha class (the two protos declare the same fields and numbers)."""
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=lambda b: b,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return next(call(iter([request]), timeout=10))


def _file_by_symbol(symbol: str) -> bytes:
    raw = symbol.encode()
    return b"\x22" + bytes([len(raw)]) + raw  # field 4: file_containing_symbol


def test_reflection_lists_services_under_v1_and_v1alpha(nodes) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf import descriptor_pb2

    _, clients = nodes
    channel = clients["lab-b"].channel
    expected = {"psi_share.v1.PsiShareNode", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"}
    alpha = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(alpha.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    assert {s.name for s in reply.list_services_response.service} == expected
    reply = _v1_call(channel, LIST_SERVICES)
    assert {s.name for s in reply.list_services_response.service} == expected

    for symbol, file_name, package in (("psi_share.v1.PsiShareNode", "psi_share/v1/node.proto", "psi_share.v1"),
                                       ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto",
                                        "grpc.reflection.v1")):
        reply = _v1_call(channel, _file_by_symbol(symbol))
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in reply.file_descriptor_response.file_descriptor_proto]
        assert (files[0].name, files[0].package) == (file_name, package)
    # gRPC's own reflection client library (v1alpha) finds every RPC of the contract.
    database = ProtoReflectionDescriptorDatabase(channel)
    service = database.FindFileContainingSymbol("psi_share.v1.PsiShareNode").service[0]
    from psi_share.v1 import node_pb2

    contract = {m.name for m in node_pb2.DESCRIPTOR.services_by_name["PsiShareNode"].methods}
    assert {"NodeInfo", "PsiOpen", "PsiSetup", "PsiProcess", "PsiClose", "SumOpen", "SumExchange", "SumClose",
            "FederationJoin", "FederationPass", "FederationRelease",
            "CardinalityOpen", "CardinalityExchange", "CardinalityClose", "WitnessHeads", "GetWitnessedHeads"} <= contract
    assert {m.name for m in service.method} == contract
