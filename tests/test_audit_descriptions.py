"""Every step the egress can record is described in the registry audit scan checks
messages against, and the report reads its descriptions from there.

The list of steps is derived, never written by hand: from the service descriptor
(every RPC, and the steps its ``_rpc`` declaration records), from the protocol
registry (every protocol, every intersection-sum step), and from real logs of three
nodes that ran every RPC of the descriptor over mutual TLS (the test counts the
calls and fails if one was never made, so a new RPC must join the run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import Federation
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from protocol_run import run_every_protocol, three_labs

from psi_share.audit.log import load_entries
from psi_share.audit.messages import describe, registered_steps
from psi_share.audit.report import build_report, render_html, render_markdown
from psi_share.audit.verify import verify_log
from psi_share.errors import PeerRefused
from psi_share.protocols import PROTOCOLS, intersection_sum
from psi_share.protocols.cardinality import CardinalityOpen
from psi_share.protocols.intersection_sum import SumOpen, ValueHolder
from psi_share.transport.server import NodeServicer
from psi_share.v1 import node_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["PsiShareNode"]


def test_every_rpc_declares_the_steps_it_records_and_each_is_described() -> None:
    missing = []
    for method in SERVICE.methods:
        served = getattr(NodeServicer, method.name)
        steps = getattr(served, "rpc_steps", None)
        assert steps is not None, f"{method.name} is not served through the _rpc decorator"
        protocol, error_step, received = steps
        wanted = [f"{error_step}-status"]
        if received is not None:
            wanted.append(received)
        if not method.server_streaming:
            wanted.append(error_step)  # a unary reply is recorded under the error step's name
        elif protocol != "intersection-sum":  # its replies are named by the protocol step (below)
            wanted.append(f"{error_step}-chunk")
        missing += [f"{method.name}: ({protocol}, {s})" for s in wanted if not describe(protocol, s)]
    assert not missing, missing


def test_every_protocol_and_every_intersection_sum_step_is_described() -> None:
    described = {protocol for protocol, _ in registered_steps()}
    assert set(PROTOCOLS) <= described, set(PROTOCOLS) - described
    assert all(describe("intersection-sum", f"{step}-chunk") for step in intersection_sum.STEPS)
    assert all(describe(p, s) for p, s in registered_steps())


@pytest.fixture(scope="module")
def every_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, Counter]]:
    """Three labs after a session of every protocol, a refusal, NodeInfo, health,
    reflection and a witness query; with the number of calls of each RPC."""
    calls: Counter = Counter()

    def counted(name: str, served):  # type: ignore[no-untyped-def]
        def method(self, request, context):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return served(self, request, context)
        return method

    with pytest.MonkeyPatch.context() as patch:
        for method in SERVICE.methods:
            patch.setattr(NodeServicer, method.name, counted(method.name, getattr(NodeServicer, method.name)))
        fed = three_labs(tmp_path_factory.mktemp("every-rpc"))
        try:
            run_every_protocol(fed)
            a = fed.nodes["lab-a"]
            with a.peer_client("lab-c") as client:  # a requester that gives up closes its session
                opened = client.sum_open(SumOpen(dataset="usage", kind="email", kind_version=1, set_size=1,
                                                 value_holder=ValueHolder.RESPONDER, key_bits=2048))
                client.sum_close(opened.session_id, "failed")
                counting = client.cardinality_open(CardinalityOpen(dataset="flagged", kinds={"email": 1}, set_size=1))
                client.cardinality_close(counting.session_id, "failed")
            with a.peer_client("lab-b") as client:
                client.node_info()
                client.witnessed_heads()
            with pytest.raises(PeerRefused):  # a refusal: the status text is recorded too
                a.match("lab-b", peer_dataset="secret", kinds=["email"])
            with fed.channel("lab-a", "lab-c") as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
                next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            yield fed, calls
        finally:
            fed.close()


def test_every_rpc_of_the_descriptor_ran(every_rpc) -> None:  # type: ignore[no-untyped-def]
    _, calls = every_rpc
    never = [m.name for m in SERVICE.methods if not calls[m.name]]
    assert not never, f"RPCs this run never called (add them to tests/protocol_run.py or here): {never}"


def test_every_step_the_egress_recorded_is_described(every_rpc) -> None:  # type: ignore[no-untyped-def]
    fed, _ = every_rpc
    seen: set[tuple[str, str]] = set()
    for node in fed.nodes.values():
        seen |= {(e["protocol"], e["step"]) for e in load_entries(node.home.audit_path) if e["type"] in ("sent", "received")}
    assert {"psi", "cardinality", "intersection-sum", "federation-total", "witness", "node", "grpc-health",
            "grpc-reflection"} <= {
        p for p, _ in seen}
    assert any(s.endswith("-status") for _, s in seen)
    undescribed = sorted(step for step in seen if not describe(*step))
    assert not undescribed, undescribed


def test_the_report_describes_every_step_of_every_protocol(every_rpc) -> None:  # type: ignore[no-untyped-def]
    fed, _ = every_rpc
    for name, node in fed.nodes.items():
        entries = load_entries(node.home.audit_path)
        verified = verify_log(node.home.audit_path, node.home.audit_key().public_key(), node=name)
        report = build_report(name, entries, verified, 0)
        markdown, page = render_markdown(report), render_html(report)
        assert "unknown step" not in markdown and "unknown step" not in page, name
        assert report.flows, name
        for protocol, step in {(p, s) for _, p, s in report.flows}:
            assert f"| {protocol} | {step} |" in markdown
            assert describe(protocol, step) in markdown
    lab_a = render_markdown(build_report("lab-a", load_entries(fed.nodes["lab-a"].home.audit_path),
                                         verify_log(fed.nodes["lab-a"].home.audit_path,
                                                    fed.nodes["lab-a"].home.audit_key().public_key()), 0))
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]) for line in lab_a.splitlines()
            if line.startswith("| lab-")}
    # what lab-a sent: matcher with lab-c (and a session it gave up), value holder with lab-b, the route's joins
    # to both members, its first hop
    assert {r for r in rows if r[1] in ("intersection-sum", "federation-total")} == {
        ("lab-c", "intersection-sum", "open"), ("lab-c", "intersection-sum", "blinded-set-chunk"),
        ("lab-c", "intersection-sum", "encrypted-sum-chunk"), ("lab-c", "intersection-sum", "close"),
        ("lab-b", "intersection-sum", "open"), ("lab-b", "intersection-sum", "start-chunk"),
        ("lab-b", "intersection-sum", "double-blinded-chunk"), ("lab-b", "intersection-sum", "sum-chunk"),
        ("lab-b", "federation-total", "join"), ("lab-c", "federation-total", "join"),
        ("lab-b", "federation-total", "pass"), ("lab-b", "federation-total", "release"),
        ("lab-c", "federation-total", "release"),
    }
    assert ("lab-b", "witness", "exchange") in rows and ("lab-b", "witness", "query") in rows
