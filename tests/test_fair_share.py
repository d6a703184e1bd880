"""Fair share under attack (issue 13), over real mTLS connections.

Each test is one of the findings, written as the attacking member would:
raw gRPC with its certificate (``tests/flood_attacker.py``), against nodes
with their default limits unless the test says otherwise.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

import grpc
import pytest
from flood_attacker import Attacker, open_request
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from psi_share.audit.log import load_entries
from psi_share.pki import revoke
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.store.db import usage
from psi_share.transport.server import SERVICE_NAME
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

ROWS = [(f"r{i}", "email", f"user{i}@example.org") for i in range(40)]


@pytest.fixture
def trio(federation, csv_file):  # type: ignore[no-untyped-def]
    """lab-b serves (default limits unless a test overrides); lab-a attacks, lab-c is the victim."""

    def make(**config: object):  # type: ignore[no-untyped-def]
        b = federation.node("lab-b", **config)
        b.import_file("flagged", csv_file("b.csv", ROWS), None)
        a = federation.node("lab-a")
        c = federation.node("lab-c")
        c.import_file("flagged", csv_file("c.csv", ROWS[::2]), None)
        federation.serve("lab-b")
        federation.connect_all()
        return a, b, c

    return make


def _node_info(federation, frm: str) -> pb.NodeInfoResponse:  # type: ignore[no-untyped-def]
    with federation.channel(frm, "lab-b") as channel:
        return pb_grpc.PsiShareNodeStub(channel).NodeInfo(pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION),
                                                          timeout=10)


def _health(federation, frm: str) -> int:  # type: ignore[no-untyped-def]
    with federation.channel(frm, "lab-b") as channel:
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def _sent(node, since: int = 0) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [e for e in load_entries(node.home.audit_path)[since:] if e["type"] == "sent"]


def test_two_hundred_idle_streams_of_one_member_do_not_stop_the_node_for_another(trio, federation) -> None:
    a, b, c = trio()
    limit = b.config.server.limits.calls_per_peer
    with federation.channel("lab-a", "lab-b") as channel:
        attacker = Attacker(channel)
        try:
            calls = attacker.idle_streams(200)
            seen = Attacker.outcomes(calls, wait=15)
            # Its own share is held; everything beyond it is refused at once, before it can block.
            assert seen == {"open": limit, "RESOURCE_EXHAUSTED": 200 - limit}, seen
            started = time.monotonic()
            assert _node_info(federation, "lab-c").node_name == "lab-b"
            assert _health(federation, "lab-c") == health_pb2.HealthCheckResponse.SERVING
            assert c.match("lab-b", kinds=["email"], mode=c_mode()).count == len(ROWS[::2])
            assert time.monotonic() - started < 30
            with pytest.raises(grpc.RpcError) as err:  # the attacker itself is at its limit
                _node_info(federation, "lab-a")
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "calls_per_peer" in err.value.details()
        finally:
            attacker.stop()
    # A flood of identical refusals is one entry (and a count when its window ends), not 192.
    federation.servers["lab-b"].stop(grace=1)  # records the count of a window still open
    gate = [e for e in _sent(b) if e["step"] == "PsiProcess-gate-status"]
    assert [(e["peer"], e["params"].get("repeats", 0)) for e in gate] == [("lab-a", 0), ("lab-a", 200 - limit - 1)]


def c_mode():  # type: ignore[no-untyped-def]
    from psi_share.protocols.psi import Mode

    return Mode.REVEAL


def test_an_idle_stream_is_cut_and_its_slot_freed(trio, federation) -> None:
    a, b, c = trio(server__stream_idle_seconds=1, server__calls_per_peer=2)
    with federation.channel("lab-a", "lab-b") as channel:
        attacker = Attacker(channel)
        try:
            calls = attacker.idle_streams(2)
            assert Attacker.outcomes(calls, wait=10) == {"CANCELLED": 2}
        finally:
            attacker.stop()
    assert b.metrics.cuts.labels("lab-a", "idle")._value.get() == 2
    assert _node_info(federation, "lab-a").node_name == "lab-b"  # its slots are free again


@pytest.mark.parametrize("who", ["revoked", "not-a-peer"])
def test_health_and_reflection_answer_only_authenticated_unrevoked_members(trio, federation, who) -> None:
    a, b, c = trio()
    if who == "revoked":
        revoke(federation.ca, name="lab-a")
        shutil.copy(federation.ca.crl_path, b.home.tls_path / "crl.pem")
        frm = "lab-a"
    else:
        federation.node("lab-d")  # a federation certificate, but lab-b never added lab-d as a peer
        frm = "lab-d"
    with federation.channel(frm, "lab-b") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(40)]
        codes = Attacker.outcomes(watches, wait=15)
        assert codes == {"UNAUTHENTICATED": 40}, codes
        for call in (
            lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10),
            lambda: next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _health(federation, "lab-c") == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("tiny", [False, True], ids=["empty", "one-byte"])
def test_a_chunk_flood_is_refused_at_its_first_chunk_and_logs_a_bounded_amount(trio, federation, tiny) -> None:
    a, b, c = trio()
    before = len(load_entries(b.home.audit_path))
    with federation.channel("lab-a", "lab-b") as channel:
        attacker = Attacker(channel)
        codes = [attacker.empty_chunk_flood(chunks=5000, tiny=tiny) for _ in range(5)]
    assert codes == ["INVALID_ARGUMENT"] * 5
    entries = load_entries(b.home.audit_path)[before:]
    # Per flood: open received + opened sent, one chunk received, its status: 4 entries, never 5000.
    assert len(entries) <= 5 * 4 + 2, [(e["type"], e.get("step")) for e in entries]
    statuses = [e["params"]["text"] for e in _sent(b, before) if e["step"].endswith("-status")]
    assert statuses and all(("empty chunk" in t) or ("fewer than 4096 bytes" in t) for t in statuses)
    assert b.responder.open_sessions() == 0  # each flood failed its own session
    assert c.match("lab-b", kinds=["email"]).count == len(ROWS[::2])


def test_one_members_abandoned_sessions_exhaust_only_its_own_quota(trio, federation) -> None:
    a, b, c = trio()
    quota = b.config.sessions.max_open_per_peer
    with federation.channel("lab-a", "lab-b") as channel:
        opened, code = Attacker(channel).abandon_sessions(up_to=300)
    assert (opened, code) == (quota, "RESOURCE_EXHAUSTED")
    assert b.responder.open_sessions() == quota
    assert c.match("lab-b", kinds=["email"]).count == len(ROWS[::2])  # lab-c is not locked out
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert usage(b.store, today)["lab-a"][0] == quota  # the refused open was not charged


def test_a_refused_intersection_sum_open_is_not_charged(trio, federation) -> None:
    a, b, c = trio(sessions__max_open=2)
    request = pb.SumOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                kind=pb.KindVersion(kind="email", version=1), set_size=5,
                                value_holder=pb.VALUE_HOLDER_REQUESTER, key_bits=2048)
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        for _ in range(2):
            stub.SumOpen(request, timeout=60)
        with pytest.raises(grpc.RpcError) as err:
            stub.SumOpen(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert usage(b.store, today)["lab-a"] == (2, 10)


def test_an_empty_set_is_held_to_min_set_size(trio, federation) -> None:
    a, b, c = trio()
    with federation.channel("lab-a", "lab-b") as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.PsiShareNodeStub(channel).PsiOpen(open_request(set_size=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "minimum of 1 items" in err.value.details()


def test_a_flood_of_refusals_is_one_entry_and_a_count(trio, federation) -> None:
    a, b, c = trio(server__calls_per_peer=1, server__refusal_log_window_seconds=0.5)
    before = len(load_entries(b.home.audit_path))
    with federation.channel("lab-a", "lab-b") as channel:
        attacker = Attacker(channel)
        try:
            [held] = attacker.idle_streams(1)
            gate = federation.servers["lab-b"].gate
            deadline = time.monotonic() + 10
            while gate.calls.active().get("lab-a") != 1 and time.monotonic() < deadline:
                time.sleep(0.02)  # until the node has admitted it (a loaded machine takes a while)
            codes = set()
            for _ in range(60):
                with pytest.raises(grpc.RpcError) as err:
                    attacker.stub.NodeInfo(pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION), timeout=10)
                codes.add(err.value.code())
            assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            time.sleep(1.5)  # the window ends; the watchdog records its count
        finally:
            attacker.stop()
    gate = [e for e in _sent(b, before) if e["step"] == "NodeInfo-gate-status"]
    assert [e["params"].get("repeats", 0) for e in gate] == [0, 59]
    assert gate[0]["sha256"] == gate[1]["sha256"]  # the same bytes, sent 59 more times
    assert b.metrics.refusals.labels("lab-a", "RESOURCE_EXHAUSTED", "gate", "concurrency")._value.get() == 60
