"""Federation totals: the ring over real gRPC, the k threshold, dropouts and reruns."""

from __future__ import annotations

import random
import secrets

import pytest

from psi_share.crypto.paillier import PrivateKey
from psi_share.errors import LocalProtocolError, PeerRefused, PeerUnavailable, RemoteProtocolError
from psi_share.protocols.federation_total import (
    FederationInitiator,
    check_pass,
    contribute,
    decode_total,
)

KEY = PrivateKey.generate(2048, secrets.token_bytes)


def test_ring_in_memory_sums_and_rerandomizes_at_each_hop():
    rb = random.Random(1).randbytes
    init = FederationInitiator(run_id="r1", metric="m", initiator="a", contributors=["b", "c", "d"], figure=5,
                               key=KEY, min_contributors=3, random_bytes=rb)
    first, p = init.first_pass()
    assert first == "b" and p.route == ("c", "d") and p.contributors == 1
    seen = [p.ciphertext]
    for hop, figure in (("b", 10), ("c", 0), ("d", 2**63 - 1)):
        check_pass(p, receiver=hop, own_minimum=3)
        p = contribute(p, figure, rb)
        seen.append(p.ciphertext)
    assert len(set(seen)) == 4 and p.contributors == 4 and p.route == ()
    result = init.on_returned(p.ciphertext.to_bytes(KEY.public.ciphertext_bytes, "big"), p.contributors)
    assert (result.total, result.contributors) == (15 + 2**63 - 1, 4)


def test_threshold_is_never_below_three_and_contributors_refuse_small_rings():
    rb = random.Random(2).randbytes
    with pytest.raises(LocalProtocolError, match="never below 3"):
        FederationInitiator(run_id="r", metric="m", initiator="a", contributors=["b", "c"], figure=1, key=KEY,
                            min_contributors=2, random_bytes=rb)
    with pytest.raises(LocalProtocolError, match="cannot reach the minimum"):
        FederationInitiator(run_id="r", metric="m", initiator="a", contributors=["b"], figure=1, key=KEY,
                            min_contributors=3, random_bytes=rb)
    init = FederationInitiator(run_id="r", metric="m", initiator="a", contributors=["b", "c"], figure=1, key=KEY,
                               min_contributors=3, random_bytes=rb)
    _, p = init.first_pass()
    # a curious initiator announcing a ring of two is refused by the contributor
    from dataclasses import replace

    with pytest.raises(RemoteProtocolError, match="at least"):
        check_pass(replace(p, route=()), receiver="b", own_minimum=3)
    with pytest.raises(RemoteProtocolError, match="never fewer than 3"):
        check_pass(replace(p, min_contributors=2), receiver="b", own_minimum=3)
    with pytest.raises(RemoteProtocolError, match="repeats"):
        check_pass(replace(p, route=("b", "c")), receiver="b", own_minimum=3)
    # the initiator refuses to decrypt a ciphertext holding fewer figures than asked
    with pytest.raises(RemoteProtocolError, match="2 figures"):
        init.on_returned(p.ciphertext.to_bytes(512, "big"), 2)
    with pytest.raises(RemoteProtocolError):
        decode_total((5).to_bytes(16, "big"), 2)


def _ring(federation, names, figures, **config):  # type: ignore[no-untyped-def]
    nodes = {}
    for name in names:
        nodes[name] = federation.node(name, **config)
        if name in figures:
            nodes[name].store.set_figure("campaign", figures[name], now=0)
    for name in names:
        federation.serve(name)
    federation.connect_all()
    return nodes


def test_three_node_total_over_grpc_is_released_to_everyone(federation):
    figures = {"lab-a": 11, "lab-b": 220, "lab-c": 3300}
    nodes = _ring(federation, list(figures), figures)
    outcome = nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    assert (outcome.total, outcome.contributors) == (3531, 3) and not outcome.release_failures
    for name in ("lab-b", "lab-c"):
        run = nodes[name].store.federation_run(outcome.run_id, "contributor")
        assert (run.status, run.total, run.contributors) == ("released", 3531, 3)
    mine = nodes["lab-a"].store.federation_run(outcome.run_id, "initiator")
    assert (mine.status, mine.total) == ("done", 3531)


def test_k_threshold_refusal(federation):
    figures = {"lab-a": 1, "lab-b": 2, "lab-c": 3}
    nodes = _ring(federation, list(figures), figures, federation__min_contributors=4)
    with pytest.raises(LocalProtocolError, match="minimum of 4"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    # a contributor whose own minimum is higher than the run's refuses to add its figure
    # lab-d (k = 3) initiates; lab-a and lab-b (k = 4) refuse to add their figures to a run of 3
    d = federation.node("lab-d")
    d.store.set_figure("campaign", 4, now=0)
    federation.serve("lab-d")
    federation.connect_all()
    with pytest.raises(PeerRefused, match="FAILED_PRECONDITION.*at least 4"):
        d.federation_total("campaign", ["lab-d", "lab-a", "lab-b"])
    assert d.store.federation_run(d.store.federation_runs()[0].id, "initiator").status == "failed"


def test_missing_figure_is_refused(federation):
    nodes = _ring(federation, ["lab-a", "lab-b", "lab-c"], {"lab-a": 1, "lab-b": 2})
    with pytest.raises(PeerRefused, match="no figure for the metric this run names"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])


@pytest.mark.slow
def test_dropout_mid_ring_fails_cleanly_and_a_rerun_works(federation):
    figures = {"lab-a": 1, "lab-b": 20, "lab-c": 300, "lab-d": 4000}
    nodes = _ring(federation, list(figures), figures)
    federation.servers.pop("lab-c").stop(grace=0)  # lab-c drops out
    with pytest.raises(PeerRefused, match="ABORTED.*stopped at lab-b.*lab-c is unavailable"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c", "lab-d"])
    failed = nodes["lab-a"].store.federation_runs()[0]
    assert failed.status == "failed" and failed.total is None
    assert nodes["lab-b"].store.federation_run(failed.id, "contributor").status == "failed"
    # lab-c comes back on a new port; peers learn the address; the rerun works
    federation.serve("lab-c")
    federation.connect_all()
    outcome = nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c", "lab-d"])
    assert (outcome.total, outcome.contributors) == (4321, 4)


def test_unreachable_first_contributor(federation):
    nodes = _ring(federation, ["lab-a", "lab-b", "lab-c"], {"lab-a": 1, "lab-b": 2, "lab-c": 3})
    federation.servers.pop("lab-b").stop(grace=0)
    with pytest.raises(PeerUnavailable):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])


def test_check_message_for_the_audit_log():
    from psi_share.node.federation import to_message
    from psi_share.protocols.federation_total import check_message
    from psi_share.v1 import node_pb2 as pb

    rb = random.Random(9).randbytes
    init = FederationInitiator(run_id="r", metric="m", initiator="a", contributors=["b", "c"], figure=1, key=KEY,
                               min_contributors=3, random_bytes=rb)
    _, p = init.first_pass()
    assert check_message("pass", to_message(p).SerializeToString()) == 1
    bad = to_message(p)
    bad.ciphertext = b"\x00" * len(bad.ciphertext)
    with pytest.raises(RemoteProtocolError, match="out of range"):
        check_message("pass", bad.SerializeToString())
    release = pb.FederationReleaseRequest(protocol_version=1, run_id="r", metric="m", contributors=3,
                                          total=(7).to_bytes(16, "big"))
    assert check_message("release", release.SerializeToString()) == 0
    release.contributors = 2
    with pytest.raises(RemoteProtocolError):
        check_message("release", release.SerializeToString())
    with pytest.raises(RemoteProtocolError):
        check_message("nonsense", b"")


def test_aggregate_messages_scan_clean_in_the_audit_log(federation, tmp_path):
    """With transcripts on, every intersection-sum and federation message we sent passes its
    registered message check and holds no form of any of our identifiers."""
    import csv as csv_module

    from psi_share.audit.scan import scan_audit
    from psi_share.identifiers import DEFAULT_CONTEXT

    names = ["lab-a", "lab-b", "lab-c"]
    nodes = {n: federation.node(n, audit__transcripts="true", paillier__pool_size=16,
                                exposure__datasets='["flagged", "usage"]', privacy__enabled="false") for n in names}
    files = {}
    for i, (name, node) in enumerate(nodes.items()):
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="") as fh:
            w = csv_module.writer(fh)
            w.writerow(["actor_id", "kind", "value", "amount"])
            w.writerows([(f"{name}-1", "email", "shared@example.org", str(10 + i)),
                         (f"{name}-2", "email", f"only-{name}@example.org", "5")])
        node.import_file("usage", path, None)
        node.import_file("flagged", path, None)
        node.store.set_figure("campaign", 100 * (i + 1), now=0)
        files[name] = path
    for name in names:
        federation.serve(name)
    federation.connect_all()
    o = nodes["lab-a"].intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email")
    assert (o.intersection_size, o.sum) == (1, 11)
    o = nodes["lab-a"].intersection_sum("lab-c", dataset="usage", peer_dataset="flagged", kind="email",
                                        value_holder="requester")
    assert (o.intersection_size, o.sum) == (1, 10)
    assert nodes["lab-a"].federation_total("campaign", names).total == 600
    for name, node in nodes.items():
        result = scan_audit(node.home.audit_path, [files[name]], DEFAULT_CONTEXT)
        assert result.messages_checked >= 3, name
        assert result.clean, (name, result.hits, result.invalid)


def test_audit_checks_are_registered_for_every_aggregate_step():
    import psi_share.node.audit_checks  # noqa: F401  (registers; psi_share imports it already)
    from psi_share.audit.messages import check_message
    from psi_share.v1 import node_pb2 as pb

    from psi_share.crypto import ec

    off_curve = next(x for x in range(1, 100) if not ec._is_x_on_curve(x)).to_bytes(32, "big")
    bad_points = pb.SumMessage(protocol_version=1, step="blinded-set", points=off_curve).SerializeToString()
    assert check_message("intersection-sum", "blinded-set-chunk", bad_points)
    assert check_message("intersection-sum", "message-chunk", bad_points)
    ok = pb.SumMessage(protocol_version=1, step="start").SerializeToString()
    assert check_message("intersection-sum", "start-chunk", ok) == []
    assert check_message("federation-total", "release", pb.FederationReleaseRequest(
        protocol_version=1, run_id="0" * 32, metric="m", contributors=2, total=b"\x01").SerializeToString())
