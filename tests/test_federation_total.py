"""Federation totals: the signed ring in memory (sums, masks, the route's rules)
and over real gRPC (3 and 4 labs, k, dropouts mid-route, reruns, differencing,
the audit log)."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
from federation_helpers import KEY, Members, ring_in_memory

from psi_share.crypto.paillier import MAX_VALUE, decode_ciphertext
from psi_share.errors import LocalProtocolError, PeerRefused, PeerUnavailable, RemoteProtocolError
from psi_share.protocols.federation_route import RouteRejected, check_route, open_route
from psi_share.protocols.federation_total import decode_total

NAMES = [f"lab-{c}" for c in "abcdefgh"]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> Members:  # type: ignore[no-untyped-def]
    # the members' clock: just after their certificates were issued (valid from the issue time on)
    members = Members.issue(tmp_path_factory.mktemp("members"), NAMES, 0.0)
    members.now = float(int(time.time()) + 1)
    return members


# -- in memory -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 8])
def test_ring_sums_exactly_and_no_intermediate_ciphertext_decrypts_to_a_partial_sum(members, n):
    """Sweep ring sizes and figures (0 and 2^63 - 1 included); ground truth is the plain sum.
    Every ciphertext sent differs (re-randomized), and decrypting any of them but the
    last (what an initiator holding the key and a colluding hop would read) gives a
    uniformly masked value, never the partial sum."""
    rng = random.Random(n)
    for trial in range(3):
        figures = {name: rng.choice([0, 1, rng.randrange(10**6), MAX_VALUE]) for name in NAMES[:n]}
        route = members.route(tuple(NAMES[:n]))
        result, sent = ring_in_memory(members, route, figures, seed=trial)
        assert (result.total, result.contributors) == (sum(figures.values()), n)
        assert len(set(sent)) == n
        partial = 0
        for name, ciphertext in zip(route.members, sent[:-1]):
            partial += figures[name]
            value = KEY.decrypt(decode_ciphertext(KEY.public, ciphertext))
            assert value != partial and value > n * MAX_VALUE  # masked: out of any sum's range


def test_ring_order_is_the_route_order(members):
    figures = {name: 10**i for i, name in enumerate(NAMES[:5])}
    route = members.route(("lab-c", "lab-a", "lab-e", "lab-b", "lab-d"))
    result, _ = ring_in_memory(members, route, figures)
    assert result.total == 11111


def test_route_rules_name_what_is_wrong(members):
    base = members.route(("lab-a", "lab-b", "lab-c"))
    cases = [
        (replace(base, members=("lab-a", "lab-b")), "lab-b", "too-few-members"),
        (replace(base, members=("lab-a", "lab-b", "lab-a", "lab-c")), "lab-b", "duplicate-member"),
        (replace(base, members=("lab-a", "lab-b", "lab-c", "lab-b")), "lab-b", "duplicate-member"),
        (replace(base, members=("lab-a", "lab-b", "lab-c", "lab-zz")), "lab-b", "unknown-member"),
        (base, "lab-d", "not-a-member"),
        (replace(base, min_contributors=2, members=("lab-a", "lab-b")), "lab-b", "too-few-members"),
        (replace(base, expires_at=int(members.now) - 1), "lab-b", "expired"),
        (replace(base, expires_at=int(members.now) + 7200), "lab-b", "expired"),
        (replace(base, run_id="x" * 32), "lab-b", "malformed"),
        (replace(base, members=("lab-a", "lab-b", "Lab C")), "lab-b", "malformed"),
    ]
    for route, me, reason in cases:
        with pytest.raises(RouteRejected) as err:
            check_route(route, members.rules(me))
        assert err.value.reason == reason, (route.members, me, str(err.value))
    # a member's own minimum above the route's k
    with pytest.raises(RouteRejected, match="at least 4") as err:
        check_route(base, members.rules("lab-b", minimum=4))
    assert err.value.reason == "too-few-members"


def test_signatures_bind_every_statement(members):
    route = members.route(("lab-a", "lab-b", "lab-c"))
    signed = members.signers["lab-a"].sign("route", route.encode())
    assert open_route(signed, members.trust, members.rules("lab-b")) == route
    altered = replace(signed, body=replace(route, min_contributors=4).encode())
    with pytest.raises(RouteRejected, match="does not verify") as err:
        open_route(altered, members.trust, members.rules("lab-b"))
    assert err.value.reason == "signature"
    # a statement of one kind never passes for another
    as_key = members.signers["lab-a"].sign("member key", route.encode())
    with pytest.raises(RouteRejected, match="does not verify"):
        open_route(as_key, members.trust, members.rules("lab-b"))
    # signed by lab-b, first member lab-a
    by_b = members.signers["lab-b"].sign("route", route.encode())
    with pytest.raises(RouteRejected, match="signed by lab-b") as err:
        open_route(by_b, members.trust, members.rules("lab-c"))
    assert err.value.reason == "not-initiator"


def test_contributor_refuses_a_join_from_anyone_but_the_initiator_and_a_second_pass(members):
    init = members.initiator(members.route(("lab-a", "lab-b", "lab-c")), 1, seed=3)
    with pytest.raises(RouteRejected) as err:
        members.join(init, "lab-b", caller="lab-c")
    assert err.value.reason == "not-initiator"
    b, c = members.join(init, "lab-b"), members.join(init, "lab-c")
    init.on_joined("lab-b", b.member_key)
    with pytest.raises(RouteRejected, match="signed by lab-b"):
        init.on_joined("lab-c", b.member_key)  # lab-b's key offered as lab-c's
    init.on_joined("lab-c", c.member_key)
    _, ciphertext, keys = init.first_pass()
    with pytest.raises(RouteRejected) as err:
        c.check_pass("lab-a", init.signed_route)  # lab-c's previous hop is lab-b
    assert err.value.reason == "previous-hop"
    with pytest.raises(RouteRejected) as err:
        b.add(keys[:2], ciphertext, 5, now=members.now)
    assert err.value.reason == "member-keys"
    with pytest.raises(RouteRejected) as err:
        b.add(keys, ciphertext, 5, now=members.now)  # b already took its pass (the failed one)
    assert err.value.reason == "replay"


def test_initiator_decrypts_only_the_last_members_final(members):
    init = members.initiator(members.route(("lab-a", "lab-b", "lab-c")), 7, seed=4)
    hops = {m: members.join(init, m) for m in ("lab-b", "lab-c")}
    for m, hop in hops.items():
        init.on_joined(m, hop.member_key)
    _, ciphertext, keys = init.first_pass()
    after_b = hops["lab-b"].add(keys, ciphertext, 20, now=members.now)
    assert after_b.next_hop == "lab-c" and after_b.final is None
    # lab-b signs a "final" of its own output: not the last member
    forged = members.signers["lab-b"].sign("final", b"")
    with pytest.raises(RouteRejected, match="not by the last member lab-c"):
        init.on_final(forged)


def test_threshold_is_never_below_three(members):
    with pytest.raises(LocalProtocolError, match="at least 3"):
        members.initiator(members.route(("lab-a", "lab-b"), k=2), 1)
    with pytest.raises(RemoteProtocolError):
        decode_total((5).to_bytes(16, "big"), 2)


# -- over gRPC -----------------------------------------------------------------------------


def _ring(federation, names, figures, **config):  # type: ignore[no-untyped-def]
    """Members with figures for "campaign"; exact totals ([privacy] off) unless a test turns it on."""
    nodes = {}
    for name in names:
        nodes[name] = federation.node(name, **{"privacy__enabled": "false", **config})
        if name in figures:
            nodes[name].store.set_figure("campaign", figures[name], now=0)
    for name in names:
        federation.serve(name)
    federation.connect_all()
    return nodes


@pytest.mark.parametrize("names", [["lab-a", "lab-b", "lab-c"], ["lab-c", "lab-a", "lab-d", "lab-b"]])
def test_honest_total_over_grpc_is_exact_and_released_to_everyone(federation, names):
    figures = {name: 11 * 10**i for i, name in enumerate(sorted(names))}
    nodes = _ring(federation, names, figures)
    initiator = names[0]
    outcome = nodes[initiator].federation_total("campaign", names)
    assert (outcome.total, outcome.contributors) == (sum(figures.values()), len(names)) and not outcome.release_failures
    assert outcome.participants == tuple(names)
    for name in names[1:]:
        run = nodes[name].store.federation_run(outcome.run_id, "contributor")
        assert (run.status, run.total, run.contributors, run.participants) == (
            "released", outcome.total, len(names), tuple(names))
    mine = nodes[initiator].store.federation_run(outcome.run_id, "initiator")
    assert (mine.status, mine.total) == ("done", outcome.total)


def test_k_threshold_refusal(federation):
    figures = {"lab-a": 1, "lab-b": 2, "lab-c": 3}
    nodes = _ring(federation, list(figures), figures, federation__min_contributors=4)
    with pytest.raises(LocalProtocolError, match="minimum of 4"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    # lab-d (k = 3) initiates; lab-a (k = 4) refuses to join a ring of 3
    d = federation.node("lab-d")
    d.store.set_figure("campaign", 4, now=0)
    federation.serve("lab-d")
    federation.connect_all()
    with pytest.raises(PeerRefused, match="FAILED_PRECONDITION.*at least 4"):
        d.federation_total("campaign", ["lab-d", "lab-a", "lab-b"])
    assert d.store.federation_runs()[0].status == "failed"


def test_missing_figure_is_refused(federation):
    nodes = _ring(federation, ["lab-a", "lab-b", "lab-c"], {"lab-a": 1, "lab-b": 2})
    with pytest.raises(PeerRefused, match="no figure for the metric this run names"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])


@pytest.mark.slow
def test_dropout_mid_route_fails_naming_the_hop_and_a_rerun_works(federation, monkeypatch):
    figures = {"lab-a": 1, "lab-b": 20, "lab-c": 300, "lab-d": 4000}
    nodes = _ring(federation, list(figures), figures)
    runner = nodes["lab-a"].federation.runner
    real_pass = runner._pass

    def drop_lab_c_then_pass(initiator, job_id):  # type: ignore[no-untyped-def]
        federation.servers.pop("lab-c").stop(grace=0)  # lab-c joined, then went away
        return real_pass(initiator, job_id)

    monkeypatch.setattr(runner, "_pass", drop_lab_c_then_pass)
    with pytest.raises(PeerRefused, match="ABORTED.*stopped at lab-b: peer lab-c is unavailable"):
        nodes["lab-a"].federation_total("campaign", list(figures))
    monkeypatch.undo()
    failed = nodes["lab-a"].store.federation_runs()[0]
    assert failed.status == "failed" and failed.total is None and "lab-c" in failed.error
    assert nodes["lab-b"].store.federation_run(failed.id, "contributor").status == "failed"
    assert nodes["lab-d"].store.federation_run(failed.id, "contributor").status == "joined"  # never got the pass
    # down before the run: the join names it
    with pytest.raises(PeerUnavailable, match="lab-c"):
        nodes["lab-a"].federation_total("campaign", list(figures))
    # lab-c comes back on a new port; peers learn the address; the rerun works
    federation.serve("lab-c")
    federation.connect_all()
    outcome = nodes["lab-a"].federation_total("campaign", list(figures))
    assert (outcome.total, outcome.contributors) == (4321, 4)


def test_a_run_that_differs_by_fewer_than_k_labs_is_refused_while_figures_are_unchanged(federation):
    figures = {"lab-a": 5, "lab-b": 60, "lab-c": 700, "lab-d": 8000}
    nodes = _ring(federation, list(figures), figures)
    assert nodes["lab-a"].federation_total("campaign", list(figures)).total == 8765
    # the same labs again: nothing new by difference
    assert nodes["lab-b"].federation_total("campaign", ["lab-b", "lab-a", "lab-c", "lab-d"]).total == 8765
    # without lab-d, the difference would be lab-d's figure: the initiator's own node refuses ...
    with pytest.raises(LocalProtocolError, match=r"differ from that run's by 1 \(lab-d\)"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    # ... and so do the members, whatever software the initiator runs (lab-c initiates; lab-a refuses it too)
    nodes["lab-c"].store.set_figure("campaign", 701, now=nodes["lab-c"].clock())
    with pytest.raises(PeerRefused, match="FAILED_PRECONDITION.*lab-a's figure for the metric this run names"):
        nodes["lab-c"].federation_total("campaign", ["lab-c", "lab-a", "lab-b"])
    for name in ("lab-a", "lab-b"):  # every member whose figure is unchanged would refuse
        nodes[name].store.set_figure("campaign", figures[name] + 1, now=nodes[name].clock())
    assert nodes["lab-c"].federation_total("campaign", ["lab-c", "lab-a", "lab-b"]).total == 6 + 61 + 701


def test_each_member_noises_its_own_figure_through_the_dp_seam(federation):
    figures = {"lab-a": 1, "lab-b": 20, "lab-c": 300}
    nodes = _ring(federation, list(figures), figures)
    seen = []
    for shares in ({"lab-a": 1000, "lab-b": 1000, "lab-c": 1000}, {"lab-a": -7, "lab-b": 5, "lab-c": 1},
                   {"lab-a": -400, "lab-b": -(2**63 - 1) + 20, "lab-c": 0}):
        for name, node in nodes.items():
            def noise(route, figure, name=name, share=shares[name]):  # type: ignore[no-untyped-def]
                seen.append((name, route.metric, figure))
                return figure + share  # signed, as distributed DP shares are
            node.federation.set_figure_noise(noise)
        total = nodes["lab-b"].federation_total("campaign", ["lab-b", "lab-a", "lab-c"]).total
        assert total == max(0, 321 + sum(shares.values()))  # a total below 0 is released as 0
    assert sorted(seen)[:3] == [("lab-a", "campaign", 1)] * 3 and len(seen) == 9


def test_federation_totals_need_the_certificate_insecure_mode_has_none():
    from psi_share.errors import ConfigError
    from psi_share.node.federation.credentials import load_credentials

    with pytest.raises(ConfigError, match="--insecure"):
        load_credentials(None, time.time)


def test_check_message_for_the_audit_log(members):
    from psi_share.protocols.federation_total import check_message
    from psi_share.v1 import node_pb2 as pb

    route = members.route(("lab-a", "lab-b", "lab-c"))
    init = members.initiator(route, 1, seed=9)
    join = pb.FederationJoinRequest(protocol_version=1, run_id=route.run_id, signed_route=init.signed_route.to_message())
    assert check_message("join", join.SerializeToString()) == 0
    join.run_id = "0" * 32
    with pytest.raises(RemoteProtocolError, match="does not match"):
        check_message("join", join.SerializeToString())
    release = pb.FederationReleaseRequest(protocol_version=1, run_id="r", metric="m", contributors=3,
                                          total=(7).to_bytes(16, "big"))
    assert check_message("release", release.SerializeToString()) == 0
    release.contributors = 2
    with pytest.raises(RemoteProtocolError):
        check_message("release", release.SerializeToString())
    with pytest.raises(RemoteProtocolError):
        check_message("nonsense", b"")


def test_aggregate_messages_scan_clean_in_the_audit_log(federation, tmp_path: Path):
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
    from psi_share.audit.messages import check_message, registered_steps
    from psi_share.crypto import ec
    from psi_share.v1 import node_pb2 as pb

    off_curve = next(x for x in range(1, 100) if not ec._is_x_on_curve(x)).to_bytes(32, "big")
    bad_points = pb.SumMessage(protocol_version=1, step="blinded-set", points=off_curve).SerializeToString()
    assert check_message("intersection-sum", "blinded-set-chunk", bad_points)
    assert check_message("intersection-sum", "message-chunk", bad_points)
    ok = pb.SumMessage(protocol_version=1, step="start").SerializeToString()
    assert check_message("intersection-sum", "start-chunk", ok) == []
    steps = {s for p, s in registered_steps() if p == "federation-total"}
    assert {"join", "joined", "pass", "passed", "release", "released"} <= steps
    assert check_message("federation-total", "release", pb.FederationReleaseRequest(
        protocol_version=1, run_id="0" * 32, metric="m", contributors=2, total=b"\x01").SerializeToString())
    assert check_message("federation-total", "join", pb.FederationJoinRequest(
        protocol_version=1, run_id="0" * 32).SerializeToString())


def test_with_privacy_on_every_member_adds_a_gaussian_share_and_charges_the_others(federation):
    from fractions import Fraction

    from injected_noise import Injected

    from psi_share.privacy import DEFAULT_DELTA, BudgetExhausted, plan, spending

    figures = {"lab-a": 1, "lab-b": 20, "lab-c": 300}
    nodes = _ring(federation, list(figures), figures, privacy__enabled="true", privacy__epsilon_per_release="1.0",
                  privacy__daily_epsilon_budget="1.0", privacy__figure_sensitivity="5")
    shares = {"lab-a": 7, "lab-b": -3, "lab-c": 40}
    for name, node in nodes.items():
        node.noise_sampler = Injected(shares=(shares[name],))
    total = nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"]).total
    assert total == 321 + 7 - 3 + 40
    # every share has the sigma the plan gives for 3 members against a party knowing its own share
    sigma = plan(epsilon=1, delta=DEFAULT_DELTA, sensitivity=5, contributors=3).sigma
    assert all(node.noise_sampler.sigmas == [sigma] for node in nodes.values()) and sigma > 5
    # each member charged the two others (they all learn the total), in its own store
    for name, node in nodes.items():
        spent = {(s.peer, s.protocol, s.epsilon) for s in spending(node.store)}
        assert spent == {(p, "federation-total", Fraction(1)) for p in figures if p != name}
    # budgets of 1.0 are spent: the next run is refused before any share is drawn
    for node in nodes.values():
        node.store.set_figure("campaign", 999, now=node.clock())
        node.noise_sampler = Injected(shares=(0,))
    with pytest.raises(BudgetExhausted, match="peer lab-b has used epsilon 1"):
        nodes["lab-a"].federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    assert nodes["lab-a"].noise_sampler.shares == [0]
