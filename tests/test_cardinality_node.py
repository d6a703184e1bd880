"""Count-only between real nodes over mutual TLS, and the attacks on it.

The attackers are written here from the proto, as a member running modified
software would write them: raw gRPC calls, messages built by hand, keys of
their choosing. The first is issue 11's attack on OpenMined's count mode
(every item under its own key, every key tried on the sorted response); a
count-only grant must now refuse OpenMined's count mode, and the same
attacker against the cardinality protocol gets one number back.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import pytest
import private_set_intersection.python as openmined
from injected_noise import Injected
from private_set_intersection.python import Request, Response, ServerSetup

from psi_share import Mode
from psi_share.audit.log import load_entries
from psi_share.audit.scan import scan_audit
from psi_share.crypto import ec
from psi_share.errors import PeerRefused
from psi_share.identifiers import DEFAULT_CONTEXT, KINDS, domain_separated_item
from psi_share.jobs.runner import run_job
from psi_share.jobs.spec import load_job
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

# lab-a's 50 flagged emails; lab-b holds every one of them (and 30 more).
A_ROWS = [(f"a{i}", "email", f"user{i}@example.org") for i in range(50)]
B_ROWS = [(f"b{i}", "email", f"user{i}@example.org") for i in range(50)] + [
    (f"c{i}", "email", f"other{i}@example.net") for i in range(30)]
MINE = [domain_separated_item("email", f"user{i}@example.org") for i in range(50)]


@pytest.fixture
def labs(federation, csv_file):  # type: ignore[no-untyped-def]
    """lab-b answers lab-a with counts only (and min_result 0 unless a test sets it); exact
    counts (no noise) unless a test turns [privacy] on: the protocol's own checks are the subject."""

    def make(**b_config: object):  # type: ignore[no-untyped-def]
        a = federation.node("lab-a", audit__transcripts="true")
        b = federation.node("lab-b", policy__reveal="false", audit__transcripts="true",
                            **{"privacy__enabled": "false", **b_config})
        a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
        b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
        federation.serve("lab-b")
        federation.connect_all()
        return a, b, pb_grpc.PsiShareNodeStub(federation.channel("lab-a", "lab-b"))

    return make


# -- the wire, as an attacker writes it -------------------------------------------------------


def chunks(sid: str, data: bytes) -> Iterator[pb.Chunk]:
    yield pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=sid, index=0, last=True, total_bytes=len(data),
                   data=data)


def joined(replies: Iterator[pb.Chunk]) -> bytes:
    return b"".join(c.data for c in replies)


def kinds(*names: str) -> list[pb.KindVersion]:
    return [pb.KindVersion(kind=k, version=KINDS[k].version) for k in names]


def openmined_per_item_key_attack(stub, items: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    """Issue 11's attack: OpenMined count mode, each item under its own key,
    every key tried on every point of the (sorted) response."""
    opened = stub.PsiOpen(pb.PsiOpenRequest(
        protocol_version=PROTOCOL_VERSION, dataset="flagged", kinds=kinds("email"), set_size=len(items),
        reveal_intersection=False), timeout=30)
    clients = [openmined.client.CreateWithNewKey(False) for _ in items]
    request = Request()
    request.reveal_intersection = False
    for client, item in zip(clients, items):
        request.encrypted_elements.extend(client.CreateRequest([item]).encrypted_elements)
    response = Response.FromString(joined(stub.PsiProcess(chunks(opened.session_id, request.SerializeToString()))))
    setup = ServerSetup.FromString(joined(stub.PsiSetup(
        pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id))))
    found: set[int] = set()
    for element in response.encrypted_elements:
        one = Response()
        one.encrypted_elements.append(element)
        for i, client in enumerate(clients):
            if i not in found and client.GetIntersectionSize(setup, one) == 1:
                found.add(i)
                break
    return {items[i] for i in found}


def refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


class Adversary:
    """A modified requester speaking the cardinality protocol from the proto."""

    def __init__(self, stub) -> None:  # type: ignore[no-untyped-def]
        self.stub = stub
        self.rng = random.Random(11)
        self.key = self.scalar()
        self.sid = ""

    def scalar(self) -> int:
        return ec.new_scalar(self.rng.randbytes)

    def open(self, set_size: int) -> pb.CardinalityOpenResponse:
        opened = self.stub.CardinalityOpen(pb.CardinalityOpenRequest(
            protocol_version=PROTOCOL_VERSION, dataset="flagged", kinds=kinds("email"), set_size=set_size), timeout=30)
        self.sid = opened.session_id
        return opened

    def send(self, step: str, **fields) -> pb.CardinalityMessage:  # type: ignore[no-untyped-def]
        message = pb.CardinalityMessage(protocol_version=PROTOCOL_VERSION, step=step, **fields).SerializeToString()
        return pb.CardinalityMessage.FromString(joined(self.stub.CardinalityExchange(chunks(self.sid, message))))

    def queries(self, points: list[bytes], key: int | None = None) -> list[bytes]:
        reply = self.send("queries", key_point=ec.base_x([key or self.key])[0], points=b"".join(sorted(points)))
        assert reply.step == "session-set"
        return ec.split_points(reply.points)

    def reblinded(self, points: list[bytes]) -> pb.CardinalityMessage:
        reply = self.send("reblinded", points=b"".join(sorted(points)))
        assert reply.step == "count"
        # One number (or "withheld"), whatever the keys: nothing per item comes back.
        assert {f.name for f, _ in reply.ListFields()} <= {"protocol_version", "step", "count", "withheld", "min_result"}
        return reply


def blinded(key: int, values: list[str]) -> list[bytes]:
    return [ec.blind_x_blob(key, ec.hash_to_x(v.encode()).to_bytes(32, "big")) for v in values]


# -- the attack of issue 11 ------------------------------------------------------------------


def test_openmined_count_mode_per_item_keys_is_refused_under_a_count_only_grant(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    try:
        learned = openmined_per_item_key_attack(stub, MINE)
    except grpc.RpcError as err:
        code, details = err.code(), err.details()
    else:
        pytest.fail(f"under a count-only grant the attacker learned which {len(learned)} of its {len(MINE)} items match")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "counts only" in details and "OpenMined's count mode" in details and "cardinality" in details
    assert not [s for s in b.store.sessions() if s.protocol == "psi"]  # refused before any session opened


def test_the_same_attacker_learns_every_match_where_reveal_is_granted(labs) -> None:  # type: ignore[no-untyped-def]
    # The attacker is real: where OpenMined's count mode is allowed it learns
    # all 50 of its 50 items, which is why that mode now needs the reveal grant.
    a, b, stub = labs(**{"policy.peers.lab-a__reveal": "true"})
    assert openmined_per_item_key_attack(stub, MINE) == set(MINE)


def test_a_foreign_openmined_count_client_still_works_under_a_reveal_grant(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(**{"policy.peers.lab-a__reveal": "true"})
    items = MINE[:20] + [domain_separated_item("email", f"nobody{i}@example.com") for i in range(10)]
    opened = stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged", kinds=kinds("email"),
                                            set_size=len(items), reveal_intersection=False), timeout=30)
    client = openmined.client.CreateWithNewKey(False)
    response = joined(stub.PsiProcess(chunks(opened.session_id, client.CreateRequest(items).SerializeToString())))
    setup = joined(stub.PsiSetup(pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id)))
    assert client.GetIntersectionSize(ServerSetup.FromString(setup), Response.FromString(response)) == 20


def test_per_item_keys_against_the_cardinality_protocol_get_one_count(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    adversary = Adversary(stub)
    keys = [adversary.key if i < 5 else adversary.scalar() for i in range(50)]
    adversary.open(50)
    session_set = adversary.queries([blinded(k, [v])[0] for k, v in zip(keys, MINE)])
    assert len(session_set) > 80  # our 80 items and the decoys, indistinguishable
    reply = adversary.reblinded([ec.blind_x_blob(adversary.key, p) for p in session_set])
    # Only the 5 items under the key it announced count: a subset it chose.
    assert (reply.withheld, reply.count) == (False, 5)
    theirs = b.store.session(adversary.sid)
    assert (theirs.protocol, theirs.status, theirs.matched_count, theirs.requester_set_size) == (
        "cardinality", "done", 5, 50)


def test_min_result_is_enforced_by_the_responder(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(policy__min_result="6")
    adversary = Adversary(stub)
    assert adversary.open(50).min_result == 6
    session_set = adversary.queries(blinded(adversary.key, MINE[:5] + [f"x{i}" for i in range(45)]))
    reply = adversary.reblinded([ec.blind_x_blob(adversary.key, p) for p in session_set])
    assert (reply.withheld, reply.count, reply.min_result) == (True, 0, 6)
    outcome = a.match("lab-b", kinds=["email"], mode=Mode.COUNT)
    assert (outcome.count, outcome.fewer_than) == (50, 0)


def test_a_fanned_out_reblinded_set_is_a_violation_and_the_peer_is_refused(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(policy__min_result="3")
    adversary = Adversary(stub)
    guess = MINE[7]
    keys = [adversary.key] + [adversary.scalar() for _ in range(2)]
    adversary.open(3)
    session_set = adversary.queries(blinded(adversary.key, [guess]) + [blinded(k, [guess])[0] for k in keys[1:]])
    third = len(session_set) // 3
    fanned = [ec.blind_x_blob(k, p) for p in session_set[:third] for k in keys]
    fanned += [ec.blind_x_blob(adversary.key, p) for p in session_set[len(fanned):]]
    code, details = refused(lambda: adversary.reblinded(fanned))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "protocol violation" in details
    assert b.store.session(adversary.sid).status == "violation"
    # From now on lab-b refuses lab-a everything, honest requests too...
    for mode in (Mode.COUNT, Mode.REVEAL):
        with pytest.raises(PeerRefused) as err:
            a.match("lab-b", kinds=["email"], mode=mode)
        assert err.value.code == "PERMISSION_DENIED" and "cardinality session" in err.value.details
        assert "protocol's checks prove" in err.value.details and adversary.sid not in err.value.details
    # ...until its operator re-admits lab-a.
    address = b.store.peer("lab-a").address
    b.store.remove_peer("lab-a")
    b.store.add_peer("lab-a", address, now=b.clock() + 1)
    assert a.match("lab-b", kinds=["email"], mode=Mode.COUNT).count == 50


@pytest.mark.parametrize("mutate, status, text", [
    (lambda z: z[:-1], grpc.StatusCode.INVALID_ARGUMENT, "fewer points than were announced"),
    (lambda z: sorted(z[:-1] + z[:1]), grpc.StatusCode.INVALID_ARGUMENT, "repeats a point"),
    (lambda z: list(reversed(sorted(z))), grpc.StatusCode.INVALID_ARGUMENT, "ascending order"),
])
def test_malformed_reblinded_sets_fail_the_session(labs, mutate, status, text) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    adversary = Adversary(stub)
    adversary.open(3)
    session_set = adversary.queries(blinded(adversary.key, MINE[:3]))
    z = sorted(ec.blind_x_blob(adversary.key, p) for p in session_set)
    message = pb.CardinalityMessage(protocol_version=PROTOCOL_VERSION, step="reblinded", points=b"".join(mutate(z)))
    code, details = refused(lambda: joined(stub.CardinalityExchange(chunks(adversary.sid, message.SerializeToString()))))
    assert code == status and text in details
    assert b.store.session(adversary.sid).status == "failed"
    assert a.match("lab-b", kinds=["email"], mode=Mode.COUNT).count == 50  # malformed is not cheating


def test_queries_must_match_the_announced_set_size_which_is_charged(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(policy__items_per_day="60")
    adversary = Adversary(stub)
    adversary.open(10)
    code, details = refused(lambda: adversary.queries(blinded(adversary.key, MINE[:40])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "more points than were announced" in details
    code, details = refused(lambda: adversary.open(51))  # 10 of the 60 are used
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "items" in details
    # Refused before any work: the session-set made for the next session is still there.
    assert ("flagged", ("email",)) in b.responder.counts.sets._ready


# -- honest nodes ---------------------------------------------------------------------------


def test_count_only_peer_counts_with_the_cardinality_protocol(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email"])
    assert err.value.code == "PERMISSION_DENIED"
    outcome = a.match("lab-b", kinds=["email", "phone"], mode=Mode.COUNT)
    assert (outcome.count, outcome.matched_actors, outcome.requester_set_size) == (50, None, 50)
    ours, theirs = a.store.session(outcome.session_id), b.store.session(outcome.session_id)
    assert (ours.protocol, ours.mode, ours.status, ours.matched_count) == ("cardinality", "count", "done", 50)
    assert (theirs.role, theirs.matched_count, theirs.requester_set_size) == ("responder", 50, 50)
    assert a.store.matches([outcome.session_id]) == []
    with a.peer_client("lab-b") as client:
        assert "cardinality" in client.node_info().protocols


def test_released_count_is_a_disclosure_and_every_message_scans_clean(labs, csv_file) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    outcome = a.match("lab-b", kinds=["email"], mode=Mode.COUNT)
    disclosures = [e for e in load_entries(b.home.audit_path) if e["type"] == "disclosure"
                   and e["protocol"] == "cardinality" and e["session"] == outcome.session_id]
    assert [d["result"].get("count") for d in disclosures if "count" in d["result"]] == [50]
    assert any(d["result"].get("our_items") == 80 and d["result"].get("queries") == 50 for d in disclosures)
    steps = {(e["type"], e.get("step")) for e in load_entries(a.home.audit_path) if e.get("protocol") == "cardinality"}
    assert {("sent", "queries-chunk"), ("sent", "reblinded-chunk"), ("received", "reply-chunk")} <= steps
    for node, rows in ((a, A_ROWS), (b, B_ROWS)):
        result = scan_audit(node.home.audit_path, [csv_file(f"{node.config.name}.csv", rows)], DEFAULT_CONTEXT)
        # open/opened, 2 steps, and the signed audit head the two exchange after the session (witnessing)
        assert result.messages_checked == 4 and result.clean, (result.hits, result.invalid)


def test_policy_without_the_cardinality_protocol_refuses_counts(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(policy__protocols='["psi"]')
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", kinds=["email"], mode=Mode.COUNT)
    assert err.value.code == "PERMISSION_DENIED" and "'cardinality'" in err.value.details


def test_a_count_job_runs_the_cardinality_protocol(labs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "counts"\nparticipants = ["lab-a", "lab-b"]\ndataset = "flagged"\n'
                   'kinds = ["email"]\nmode = "count"\n')
    run = run_job(a, load_job(job))
    assert run.status == "ok" and [p.count for p in run.peers] == [50]
    assert b.store.session(run.peers[0].session_id).protocol == "cardinality"


def test_every_session_gets_a_fresh_session_set(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs()
    first, second = Adversary(stub), Adversary(stub)
    first.open(5)
    second.open(5)
    one = set(first.queries(blinded(first.key, MINE[:5])))
    two = set(second.queries(blinded(second.key, MINE[:5])))
    assert len(one) == len(two) and not one & two


def test_session_sets_are_kept_ready_for_a_few_kind_combinations(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    from psi_share.node.counts.responder import MAX_READY

    b = federation.node("lab-b")
    rows = [(f"b{i}", "email", f"u{i}@example.org") for i in range(6)] + [
        (f"b{i}", "phone", f"+1 415 555 01{i:02d}") for i in range(4)] + [
        (f"b{i}", "ipv4", f"198.51.100.{i}") for i in range(3)] + [
        ("b1", "account_handle", "@mallory"), ("b2", "device_id", "7f4cbbdd-b2b0-4eba-93cb-3cd6625d7cc0")]
    b.import_file("flagged", csv_file("b.csv", rows), None)
    federation.serve("lab-b")  # prepares a session-set over every exposed kind
    sets = b.responder.counts.sets
    assert sets.take("flagged", KINDS).items == len(rows)
    combos = [("email",), ("phone",), ("email", "phone"), ("ipv4",), ("device_id",), ("account_handle", "email"),
              ("email", "shoe_size_unheld")]
    sizes = [sets.take("flagged", c).items for c in combos]
    assert sizes == [6, 4, 10, 3, 1, 7, 6]
    sets.refill()
    # A peer asking for every combination cannot make us hold a set for each.
    wanted = [("flagged", tuple(sorted(k for k in c if k in KINDS))) for c in combos[-MAX_READY:]]
    assert list(sets._wanted) == list(dict.fromkeys(wanted)) and set(sets._ready) <= set(sets._wanted)


def test_a_node_closes_while_session_sets_wait_for_their_prepared_sets(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    # Shutting the preparation threads down cancels what is queued, running the
    # session-sets' callbacks under the executor's own lock: they must not submit.
    import threading

    b = federation.node("lab-b")
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    release = threading.Event()
    blockers = [b.prepared_sums.submit(release.wait) for _ in range(2)]  # both preparation threads busy
    b.responder.counts.prepare_exposed()  # its prepared sets are queued behind them
    threading.Timer(1.0, release.set).start()
    closing = threading.Thread(target=b.close, daemon=True)
    closing.start()
    closing.join(timeout=60)
    assert not closing.is_alive(), "Node.close() deadlocked"
    assert all(f.done() for f in blockers)
    federation.nodes.pop("lab-b")  # closed here already


def test_no_cardinality_refusal_repeats_what_the_peer_sent(labs) -> None:  # type: ignore[no-untyped-def]
    # The marker (an email, a phone number's digits) in every field a refusal could repeat.
    email, digits = "victim.marker@example.org", 14155550123
    a, b, stub = labs()
    adversary = Adversary(stub)
    seen = {
        "open dataset": refused(lambda: stub.CardinalityOpen(pb.CardinalityOpenRequest(
            protocol_version=PROTOCOL_VERSION, dataset=email, kinds=kinds("email"), set_size=5))),
        "open version": refused(lambda: stub.CardinalityOpen(pb.CardinalityOpenRequest(
            protocol_version=digits % 2**32, dataset="flagged", kinds=kinds("email"), set_size=5))),
        "open set size": refused(lambda: adversary.open(digits)),
        "close version": refused(lambda: stub.CardinalityClose(pb.PsiCloseRequest(
            protocol_version=digits % 2**32, session_id=email))),
        "exchange session": refused(lambda: joined(stub.CardinalityExchange(chunks(email, b"x" * 4096)))),
    }
    adversary.open(5)
    seen["step"] = refused(lambda: adversary.send(email))
    adversary.open(5)
    seen["message version"] = refused(lambda: joined(stub.CardinalityExchange(chunks(adversary.sid, pb.CardinalityMessage(
        protocol_version=digits % 2**32, step="queries").SerializeToString()))))
    adversary.open(5)
    seen["point count"] = refused(lambda: adversary.queries(blinded(adversary.key, [f"x{i}" for i in range(7)])))
    for name, (code, details) in seen.items():
        assert details, name
        assert email not in details and "victim" not in details, (name, details)
        assert str(digits) not in details and str(digits % 2**32) not in details and " 7 " not in details, (name, details)


def test_open_count_sessions_are_held_to_the_per_peer_quota(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(sessions__max_open_per_peer="2")
    adversary = Adversary(stub)
    adversary.open(5)
    adversary.open(5)
    code, details = refused(lambda: adversary.open(5))  # abandoned ones hold the quota until they expire
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_open_per_peer" in details
    assert b.responder.counts.open_by_peer() == {"lab-a": 2}


def test_counts_carry_the_responders_noise_and_charge_the_peers_daily_budget(labs) -> None:  # type: ignore[no-untyped-def]
    a, b, stub = labs(privacy__enabled="true", privacy__epsilon_per_release="0.5",
                      privacy__daily_epsilon_budget="1.0", policy__min_result="3")
    b.noise_sampler = Injected(7, -48)
    # truth 50, noise +7 (scale 1/epsilon = 2): 57, clamped to the 50 items lab-a sent
    assert a.match("lab-b", kinds=["email"], mode=Mode.COUNT).count == 50
    # truth 50, noise -48: 2 is under min_result 3, applied to the noisy count: withheld
    outcome = a.match("lab-b", kinds=["email"], mode=Mode.COUNT)
    assert (outcome.count, outcome.fewer_than) == (None, 3)
    assert b.noise_sampler.scales == [2.0, 2.0]
    # the budget (1.0 = two releases of 0.5) is spent: refused before any count is computed
    adversary = Adversary(stub)
    adversary.open(50)
    session_set = adversary.queries(blinded(adversary.key, MINE))
    code, details = refused(lambda: adversary.reblinded([ec.blind_x_blob(adversary.key, p) for p in session_set]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "budget" in details
    assert b.noise_sampler.noise == []  # no third draw
    released = [e["result"] for e in load_entries(b.home.audit_path)
                if e["type"] == "disclosure" and e.get("protocol") == "cardinality" and "mechanism" in e["result"]]
    assert released == [
        {"count": 50, "mechanism": "discrete-laplace", "scale": "2.0", "sensitivity": 1, "epsilon": "1/2"},
        {"withheld": True, "fewer_than": 3, "mechanism": "discrete-laplace", "scale": "2.0", "sensitivity": 1,
         "epsilon": "1/2"},
    ]


@pytest.mark.parametrize("protocols, psi_ready, counts_ready", [
    ('["psi"]', True, False), ('["cardinality"]', False, True), ('["psi", "cardinality"]', True, True)])
def test_serve_prepares_only_what_some_peer_may_ask_for(federation, csv_file, protocols, psi_ready,
                                                        counts_ready) -> None:  # type: ignore[no-untyped-def]
    # A count-only session-set or a filter over millions of items is minutes of
    # both cores: serve start prepares one only when the defaults or some
    # peer's table grant the protocol on that dataset.
    b = federation.node("lab-b", exposure__datasets='["flagged", "other"]', policy__protocols='[]',
                        **{"policy.peers.lab-a__protocols": protocols, "policy.peers.lab-a__datasets": '["flagged"]'})
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    b.import_file("other", csv_file("o.csv", B_ROWS[:5]), None)
    federation.serve("lab-b")
    assert {key[0] for key in b.responder._setups} == ({"flagged"} if psi_ready else set())
    assert {key[0] for key in b.responder.counts.sets._wanted} == ({"flagged"} if counts_ready else set())
    assert b.responder.policy.datasets_granted("intersection-sum") == []
    with pytest.raises(ValueError, match="unknown protocol"):
        b.responder.policy.datasets_granted("telepathy")
