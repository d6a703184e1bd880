"""Hostile input over real mTLS connections: every refusal is a proper status,
nothing partial is kept, and the node goes on serving everyone else.

The fuzz test enumerates the RPCs from the service descriptor, so RPCs added
to the wire contract later are fuzzed without touching this file.
"""

from __future__ import annotations

import datetime as dt
import random

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from psi_share.crypto.openmined import POINT_BYTES
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.store.db import usage
from psi_share.transport.server import MAX_MESSAGE_BYTES, SERVICE_NAME
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

ROWS = [(f"a{i}", "email", f"user{i}@example.org") for i in range(8)]
SERVICE = pb.DESCRIPTOR.services_by_name["PsiShareNode"]
# What a node may answer to garbage. INTERNAL or UNKNOWN would be a bug on
# our side; UNIMPLEMENTED an RPC nobody wired up.
PROPER = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
}


@pytest.fixture
def served(federation, csv_file):
    a = federation.node("lab-a")
    # The fuzz opens many sessions and calls far faster than a real peer would.
    b = federation.node("lab-b", sessions__max_open=256, sessions__max_open_per_peer=256, server__calls_per_second=10000,
                        server__call_burst=10000)
    a.import_file("flagged", csv_file("a.csv", ROWS), None)
    b.import_file("flagged", csv_file("b.csv", ROWS[::2]), None)
    federation.serve("lab-b")
    federation.connect_all()
    channel = federation.channel("lab-a", "lab-b")
    yield a, b, channel, pb_grpc.PsiShareNodeStub(channel)
    channel.close()


def _open(stub, set_size: int = 2, **kw) -> pb.PsiOpenResponse:  # type: ignore[no-untyped-def]
    return stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                          kinds=[pb.KindVersion(kind="email", version=1)], set_size=set_size,
                                          reveal_intersection=True, **kw), timeout=10)


def _chunk(sid: str, data: bytes, **kw) -> pb.Chunk:  # type: ignore[no-untyped-def]
    fields = dict(protocol_version=PROTOCOL_VERSION, session_id=sid, index=0, last=True, total_bytes=len(data), data=data)
    fields.update(kw)
    return pb.Chunk(**fields)


def _request_bytes(elements: list[bytes]) -> bytes:
    from private_set_intersection.python import Request

    r = Request()
    r.reveal_intersection = True
    r.encrypted_elements.extend(elements)
    return r.SerializeToString()


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()  # type: ignore[return-value]


def _still_serving(a, channel) -> None:  # type: ignore[no-untyped-def]
    assert a.match("lab-b", kinds=["email"]).count == 4
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_protobuf_is_invalid_argument(served) -> None:
    a, _, channel, _ = served
    raw = channel.unary_unary(f"/{SERVICE.full_name}/PsiOpen")
    code, details = _code(lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "PsiOpenRequest" in details
    stream = channel.stream_stream(f"/{SERVICE.full_name}/PsiProcess")
    code, details = _code(lambda: list(stream(iter([b"\x0a\xff"]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Chunk" in details
    _still_serving(a, channel)


def test_message_over_the_size_cap_is_refused(served) -> None:
    a, _, channel, _ = served
    raw = channel.unary_unary(f"/{SERVICE.full_name}/NodeInfo")
    code, _ = _code(lambda: raw(b"\x00" * (MAX_MESSAGE_BYTES + 1024), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_serving(a, channel)


def test_wrong_protocol_version_everywhere(served) -> None:
    a, _, channel, stub = served
    bad = PROTOCOL_VERSION + 7
    opened = _open(stub)
    calls = [
        lambda: stub.NodeInfo(pb.NodeInfoRequest(protocol_version=bad), timeout=10),
        lambda: stub.PsiOpen(pb.PsiOpenRequest(protocol_version=bad, dataset="flagged",
                                               kinds=[pb.KindVersion(kind="email", version=1)], set_size=1), timeout=10),
        lambda: list(stub.PsiSetup(pb.PsiSetupRequest(protocol_version=bad, session_id=opened.session_id), timeout=10)),
        lambda: list(stub.PsiProcess(iter([_chunk(opened.session_id, b"", protocol_version=bad)]), timeout=10)),
        lambda: stub.PsiClose(pb.PsiCloseRequest(protocol_version=bad, session_id=opened.session_id), timeout=10),
    ]
    for call in calls:
        code, details = _code(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "version" in details
    _still_serving(a, channel)


def test_steps_out_of_order(served) -> None:
    a, b, channel, stub = served
    opened = _open(stub, set_size=1)
    # A valid one-element request, then the same step again.
    a_key = b"\x01" * 32
    element = a.engine.blind(a_key, ["psi-share/1/email/v1/x@example.org"], True).encrypted_elements[0]
    list(stub.PsiProcess(iter([_chunk(opened.session_id, _request_bytes([element]))]), timeout=10))
    code, details = _code(lambda: list(stub.PsiProcess(iter([_chunk(opened.session_id, _request_bytes([element]))]),
                                                       timeout=10)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "out of order" in details
    assert b.store.session(opened.session_id).status == "failed"  # the session ends there
    # A session closed is gone: its id is unknown afterwards.
    opened = _open(stub, set_size=1)
    stub.PsiClose(pb.PsiCloseRequest(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id), timeout=10)
    code, _ = _code(lambda: list(stub.PsiSetup(pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION,
                                                                  session_id=opened.session_id), timeout=10)))
    assert code == grpc.StatusCode.NOT_FOUND
    _still_serving(a, channel)


@pytest.mark.parametrize(
    "element, why",
    [
        (b"\x02" + b"\xff" * 32, "off the curve"),
        (b"\x00" * POINT_BYTES, "the point at infinity, padded"),
        (b"\x00", "the point at infinity"),
        (b"\x05" + b"\x11" * 32, "an invalid point prefix"),
    ],
)
def test_points_off_the_curve_or_at_infinity(served, element: bytes, why: str) -> None:
    a, b, channel, stub = served
    opened = _open(stub, set_size=1)
    code, details = _code(lambda: list(stub.PsiProcess(iter([_chunk(opened.session_id, _request_bytes([element]))]),
                                                       timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (why, details)
    assert b.store.session(opened.session_id).status == "failed"
    assert b.responder.open_sessions() == 0
    _still_serving(a, channel)


def test_duplicated_and_oversized_sets(served) -> None:
    a, b, channel, stub = served
    element = a.engine.blind(b"\x01" * 32, ["psi-share/1/email/v1/x@example.org"], True).encrypted_elements[0]
    opened = _open(stub, set_size=2)
    code, details = _code(lambda: list(stub.PsiProcess(
        iter([_chunk(opened.session_id, _request_bytes([element, element]))]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "duplicate" in details
    opened = _open(stub, set_size=1)  # more elements than announced
    code, _ = _code(lambda: list(stub.PsiProcess(
        iter([_chunk(opened.session_id, _request_bytes([element, b"\x03" + element[1:]]))]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = _code(lambda: _open(stub, set_size=b.config.matching.max_set_size + 1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in details
    assert b.responder.open_sessions() == 0
    _still_serving(a, channel)


def test_disconnect_mid_stream_fails_the_session_and_frees_it(served) -> None:
    a, b, channel, stub = served
    opened = _open(stub, set_size=100)
    import threading

    sent = threading.Event()

    def chunks():  # type: ignore[no-untyped-def]
        yield _chunk(opened.session_id, b"\x0a" * 10, last=False, total_bytes=3000)
        sent.set()
        threading.Event().wait(30)  # never finishes: the client cancels

    call = stub.PsiProcess(chunks(), timeout=30)
    sent.wait(10)
    import time

    time.sleep(0.3)
    call.cancel()
    deadline = time.monotonic() + 10
    while b.responder.open_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.responder.open_sessions() == 0
    assert b.store.session(opened.session_id).status == "failed"
    _still_serving(a, channel)


def test_abandoned_sessions_expire_and_free_memory_without_further_calls(federation, csv_file) -> None:
    clock = [1000.0]
    b = federation.node("lab-b", sessions__ttl_seconds=2)
    b.clock = lambda: clock[0]
    b.responder._clock = b.clock
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    federation.node("lab-a")
    federation.serve("lab-b")
    federation.connect_all()
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        sids = [_open(stub).session_id for _ in range(5)]
    assert b.responder.open_sessions() == 5
    clock[0] += 3
    import time

    deadline = time.monotonic() + 10  # the reaper runs every 0.5 s for a 2 s TTL
    while b.responder.open_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.responder.open_sessions() == 0
    assert {b.store.session(s).status for s in sids} == {"expired"}


def _seed_messages(stub) -> dict[str, list[bytes]]:  # type: ignore[no-untyped-def]
    """Well-formed requests for every RPC input type, to mutate."""
    sid = _open(stub, set_size=2).session_id
    seeds = {
        "NodeInfoRequest": [pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION).SerializeToString()],
        "PsiOpenRequest": [pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                             kinds=[pb.KindVersion(kind="email", version=1)], set_size=2,
                                             reveal_intersection=True).SerializeToString()],
        "PsiSetupRequest": [pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=sid).SerializeToString()],
        "PsiCloseRequest": [pb.PsiCloseRequest(protocol_version=PROTOCOL_VERSION, session_id=sid).SerializeToString()],
        "Chunk": [_chunk(sid, _request_bytes([b"\x02" + bytes(range(32)), b"\x03" + bytes(range(32))])).SerializeToString()],
    }
    return seeds


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        elif op == 3:
            b = b[: rng.randrange(len(b) + 1)]
        else:
            b += rng.randbytes(rng.randint(1, 40))
    return bytes(b)


def test_fuzz_every_rpc_with_random_and_mutated_bytes(served) -> None:
    a, b, channel, stub = served
    rng = random.Random(20261127)
    seeds = _seed_messages(stub)
    methods = list(SERVICE.methods)
    assert {m.name for m in methods} >= {"NodeInfo", "PsiOpen", "PsiSetup", "PsiProcess", "PsiClose"}
    cases = 0
    seen: dict[str, set[str]] = {}
    for method in methods:
        path = f"/{SERVICE.full_name}/{method.name}"
        input_name = GetMessageClass(method.input_type).DESCRIPTOR.name
        pool = seeds.get(input_name) or [GetMessageClass(method.input_type)(protocol_version=PROTOCOL_VERSION).SerializeToString()]
        if method.client_streaming:
            multi = channel.stream_stream(path) if method.server_streaming else channel.stream_unary(path)
        else:
            single = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
        for i in range(60):
            if i % 12 == 0 and input_name in ("Chunk", "PsiSetupRequest", "PsiCloseRequest"):
                pool = _seed_messages(stub)[input_name]  # a fresh open session to mutate against
            if i % 3 == 0:
                payloads = [rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(1, 3))]
            else:
                payloads = [_mutate(rng, rng.choice(pool)) for _ in range(rng.randint(1, 3))]
            try:
                if method.client_streaming:
                    reply = multi(iter(payloads), timeout=10)
                else:
                    reply = single(payloads[0], timeout=10)
                if method.server_streaming:
                    list(reply)
                seen.setdefault(method.name, set()).add("OK")
            except grpc.RpcError as exc:
                assert exc.code() in PROPER, (method.name, exc.code(), exc.details(), payloads)
                assert exc.details(), (method.name, exc.code())
                seen.setdefault(method.name, set()).add(exc.code().name)
            cases += 1
    assert cases == 60 * len(methods) >= 300
    assert all("INVALID_ARGUMENT" in codes for codes in seen.values()), seen
    _still_serving(a, channel)


def test_too_many_open_sessions_is_resource_exhausted_and_not_charged(federation, csv_file) -> None:
    b = federation.node("lab-b", sessions__max_open=3)
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    a = federation.node("lab-a")
    a.import_file("flagged", csv_file("a.csv", ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        for _ in range(3):
            _open(stub)
        code, details = _code(lambda: _open(stub))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many open sessions" in details
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    [(sessions, _)] = usage(b.store, today).values()
    assert sessions == 3  # the refused open was not charged to lab-a's budget
