"""Intersection-sum: in-memory protocol pairs, hostile messages, and real nodes over gRPC."""

from __future__ import annotations

import random
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psi_share.crypto import ec, modulus_proof
from psi_share.crypto.paillier import MAX_VALUE, PrivateKey, PublicKey, encode_ciphertexts
from psi_share.errors import OutOfOrder, PeerRefused, RemoteProtocolError
from psi_share.jobs.runner import job_lock, run_job
from psi_share.protocols.intersection_sum import (
    Matcher,
    ValueHolderParty,
    blind_own_items,
    check_message,
    control,
)
from psi_share.v1 import node_pb2 as pb

ENGINE = ec.EcEngine(workers=1)
KEY = PrivateKey.generate(2048, secrets.token_bytes)


def _rng(seed: int):
    return random.Random(seed).randbytes


def run_pair(matcher_items, holder_items, values, seed=0):
    """One whole session in memory; returns (matcher result, holder result, transcript)."""
    rb = _rng(seed)
    m_set = blind_own_items(ENGINE, ec.new_scalar(rb), matcher_items)
    h_set = blind_own_items(ENGINE, ec.new_scalar(rb), holder_items)
    matcher = Matcher(m_set, engine=ENGINE, random_bytes=rb, max_peer_set_size=10**6, key_bits=2048)
    holder = ValueHolderParty(
        h_set, values, key=KEY, encrypt=lambda v: KEY.encrypt_with(v, KEY.randomness(rb(32 * len(v)))),
        engine=ENGINE, random_bytes=rb, max_peer_set_size=10**6,
    )
    m1 = matcher.blinded_set()
    m2 = holder.on_blinded_set(m1)
    m3 = matcher.on_double_blinded(m2)
    m4, holder_result = holder.on_encrypted_sum(m3)
    matcher_result = matcher.on_sum(m4)
    return matcher_result, holder_result, (m1, m2, m3, m4)


def plaintext(matcher_items, holder_items, values):
    mine = set(matcher_items)
    matched = [v for i, v in zip(holder_items, values) if i in mine]
    return len(matched), sum(matched)


items = st.sets(st.integers(0, 40), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=items, b=items, data=st.data())
def test_result_equals_plaintext(a, b, data):
    holder_items = sorted(f"item/{i}" for i in b)
    values = [data.draw(st.sampled_from([0, 1, 7, 10**9, MAX_VALUE])) for _ in holder_items]
    matcher_items = sorted(f"item/{i}" for i in a)
    m, h, _ = run_pair(matcher_items, holder_items, values)
    count, total = plaintext(matcher_items, holder_items, values)
    assert (m.intersection_size, m.sum) == (h.intersection_size, h.sum) == (count, total)
    assert m.peer_set_size == h.own_set_size == len(holder_items)
    assert h.peer_set_size == m.own_set_size == len(matcher_items)


def test_empty_intersection_all_match_and_maximal_values():
    xs = [f"x{i}" for i in range(30)]
    m, _, _ = run_pair(xs, [f"y{i}" for i in range(30)], [5] * 30)
    assert (m.intersection_size, m.sum) == (0, 0)
    m, _, _ = run_pair(xs, xs, [MAX_VALUE] * 30)
    assert (m.intersection_size, m.sum) == (30, 30 * MAX_VALUE)  # far above 2^64: never wraps
    m, _, _ = run_pair([], xs, [1] * 30)
    assert (m.intersection_size, m.sum) == (0, 0)


def test_transcript_shuffles_and_hides_the_matcher_order():
    xs = [f"x{i}" for i in range(50)]
    _, _, (m1, m2, _, _) = run_pair(xs, xs, list(range(50)))
    assert check_message("blinded-set", m1) == 50
    assert check_message("double-blinded", m2) == 100


def _points(n: int) -> bytes:
    return b"".join(ec.hash_to_x(str(i).encode()).to_bytes(32, "big") for i in range(n))


def test_points_off_the_curve_are_rejected():
    rb = _rng(1)
    holder = ValueHolderParty(
        blind_own_items(ENGINE, ec.new_scalar(rb), ["a"]), [1], key=KEY,
        encrypt=lambda v: KEY.encrypt_with(v, KEY.randomness(rb(32 * len(v)))), engine=ENGINE, random_bytes=rb,
        max_peer_set_size=100,
    )
    # find an x that is not on the curve
    x = next(x for x in range(1, 100) if not ec._is_x_on_curve(x))
    bad = pb.SumMessage(protocol_version=1, step="blinded-set", points=_points(2) + x.to_bytes(32, "big"))
    with pytest.raises(RemoteProtocolError, match="not on P-256"):
        holder.on_blinded_set(bad.SerializeToString())
    for payload in (b"\x00" * 31, (ec.P256_P).to_bytes(32, "big")):
        with pytest.raises(RemoteProtocolError):
            ec.check_x(payload)


def test_hostile_ciphertexts_are_rejected():
    n = KEY.public.n
    rb = _rng(2)
    matcher_items = ["a", "b"]
    m_set = blind_own_items(ENGINE, ec.new_scalar(rb), matcher_items)
    h_set = blind_own_items(ENGINE, ec.new_scalar(rb), ["a"])
    width = KEY.public.ciphertext_bytes
    proof = modulus_proof.prove(KEY, context=b"", protocol_version=1)  # a valid key: the ciphertexts are the attack
    for bad_c, why in ((0, "out of range"), (n * n, "out of range"), (n * 5, "not invertible")):
        matcher = Matcher(m_set, engine=ENGINE, random_bytes=rb, max_peer_set_size=100, key_bits=2048)
        m1 = pb.SumMessage.FromString(matcher.blinded_set())
        double = ec.blind_x_blob(h_set.scalar, m1.points)
        data = bad_c.to_bytes(width + 1, "big")[-width:] if bad_c < 256 ** width else b"\xff" * width
        message = pb.SumMessage(
            protocol_version=1, step="double-blinded", public_key=KEY.public.encode(), key_proof=proof, points=double,
            paired_points=h_set.points[0], ciphertexts=data,
        )
        with pytest.raises(RemoteProtocolError, match=why):
            matcher.on_double_blinded(message.SerializeToString())


def test_hostile_keys_and_steps_are_rejected():
    with pytest.raises(RemoteProtocolError):
        PublicKey.decode(b"\x01" + (2**2047 + 2).to_bytes(256, "big"))  # even
    with pytest.raises(RemoteProtocolError):
        PublicKey.decode(b"\x01" + (2**1023 + 1).to_bytes(128, "big"))  # too small
    with pytest.raises(RemoteProtocolError):
        PublicKey.decode(b"\x02" + KEY.public.encode()[1:])  # unknown version
    rb = _rng(3)
    matcher = Matcher(blind_own_items(ENGINE, ec.new_scalar(rb), ["a"]), engine=ENGINE, random_bytes=rb,
                      max_peer_set_size=10, key_bits=2048)
    with pytest.raises(OutOfOrder):
        matcher.on_sum(pb.SumMessage(protocol_version=1, step="sum").SerializeToString())
    with pytest.raises(RemoteProtocolError):
        check_message("blinded-set", pb.SumMessage(protocol_version=1, step="blinded-set", sum=b"\x01").SerializeToString())
    assert check_message("start", control("start")) == 0


def test_a_sum_beyond_the_bounds_is_refused_by_the_value_holder():
    rb = _rng(4)
    h_set = blind_own_items(ENGINE, ec.new_scalar(rb), ["a", "b"])
    holder = ValueHolderParty(h_set, [1, 2], key=KEY, encrypt=lambda v: KEY.encrypt_with(v, KEY.randomness(rb(32 * len(v)))),
                              engine=ENGINE, random_bytes=rb, max_peer_set_size=10)
    m_set = blind_own_items(ENGINE, ec.new_scalar(rb), ["a"])
    holder.on_blinded_set(pb.SumMessage(protocol_version=1, step="blinded-set", points=b"".join(m_set.points)).SerializeToString())
    # a matcher claiming 1 match but sending Enc(huge) cannot make us disclose it
    huge = KEY.public.encrypt(MAX_VALUE, rb)
    huge = KEY.public.add_plain(huge, MAX_VALUE)
    message = pb.SumMessage(protocol_version=1, step="encrypted-sum", count=1, ciphertexts=encode_ciphertexts(KEY.public, [huge]))
    with pytest.raises(RemoteProtocolError, match="count"):
        holder.on_encrypted_sum(message.SerializeToString())


# -- real nodes over gRPC ------------------------------------------------------

from pathlib import Path  # noqa: E402

from psi_share.store.db import SCHEMA_VERSION  # noqa: E402


def write_amount_csv(path: Path, rows) -> Path:  # type: ignore[no-untyped-def]
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actor_id", "kind", "value", "amount"])
        w.writerows(rows)
    return path


A_FLAGGED = [("a1", "email", "J.Smith+x@gmail.com"), ("a2", "email", "eve@example.org"),
             ("a3", "email", "mallory@example.org"), ("a4", "phone", "+1 415 555 0100")]
B_USAGE = [("b1", "email", "jsmith@gmail.com", "1200"), ("b2", "email", "eve@example.org", "30"),
           ("b9", "email", "eve@example.org", "5"),  # shares an email: the item's value is 35
           ("b3", "email", "bob@example.org", "999"), ("b4", "phone", "+14155550100", "")]


#: Exact sums for the tests that compare with plaintext truth: DP is off here
#: (tests/test_sum_privacy.py covers clipping, noise and budgets).
EXACT = {"privacy__enabled": "false"}


@pytest.fixture
def sum_pair(federation, tmp_path, csv_file):
    a = federation.node("lab-a", paillier__pool_size=64, **EXACT)
    b = federation.node("lab-b", paillier__pool_size=64, exposure__datasets='["flagged", "usage"]', **EXACT)
    a.import_file("flagged", csv_file("a.csv", A_FLAGGED), None)
    a.import_file("usage", write_amount_csv(tmp_path / "au.csv", [("a1", "email", "J.Smith+x@gmail.com", "7")]), None)
    b.import_file("usage", write_amount_csv(tmp_path / "bu.csv", B_USAGE), None)
    b.import_file("flagged", csv_file("bf.csv", [("b1", "email", "jsmith@gmail.com"), ("b5", "email", "x@y.org")]), None)
    federation.serve("lab-b")
    federation.serve("lab-a")
    federation.connect_all()
    return a, b


def test_sum_over_the_responders_values(sum_pair):
    a, b = sum_pair
    o = a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    assert (o.intersection_size, o.sum) == (2, 1200 + 35)
    assert o.own_set_size == 3 and o.peer_set_size == 3
    mine, theirs = a.store.sum_result(o.session_id), b.store.sum_result(o.session_id)
    assert mine.total == theirs.total == 1235 and mine.intersection_size == theirs.intersection_size == 2
    assert b.store.session(o.session_id).status == "done" and a.store.session(o.session_id).status == "done"
    assert a.store.matches([o.session_id]) == []  # nobody learns which actors


def test_sum_over_the_requesters_values(sum_pair):
    a, b = sum_pair
    o = a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email", value_holder="requester")
    assert (o.intersection_size, o.sum) == (1, 7)
    assert b.store.sum_result(o.session_id).total == 7


def test_missing_amounts_and_policy_refusals(federation, sum_pair, tmp_path):
    a, b = sum_pair
    with pytest.raises(PeerRefused, match="FAILED_PRECONDITION.*without an amount"):
        a.intersection_sum("lab-b", dataset="flagged", peer_dataset="flagged", kind="email", value_holder="responder")
    with pytest.raises(PeerRefused, match="NOT_FOUND"):
        a.intersection_sum("lab-b", dataset="flagged", peer_dataset="secret", kind="email", value_holder="responder")
    c = federation.node("lab-c", intersection_sum__value_holders='["requester"]', exposure__datasets='["usage"]')
    c.import_file("usage", write_amount_csv(tmp_path / "cu.csv", [("c1", "email", "eve@example.org", "3")]), None)
    federation.serve("lab-c")
    federation.connect_all()
    with pytest.raises(PeerRefused, match="PERMISSION_DENIED.*responder"):
        a.intersection_sum("lab-c", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    # the same peer accepts the other direction
    o = a.intersection_sum("lab-c", dataset="usage", peer_dataset="usage", kind="email", value_holder="requester")
    assert (o.intersection_size, o.sum) == (0, 0)


def test_hostile_message_over_grpc_fails_the_session(sum_pair):
    a, b = sum_pair
    from psi_share.identifiers import KINDS
    from psi_share.protocols.intersection_sum import SumOpen, ValueHolder

    with a.peer_client("lab-b") as client:
        opened = client.sum_open(SumOpen("usage", "email", KINDS["email"].version, 2, ValueHolder.RESPONDER, 2048))
        bad = pb.SumMessage(protocol_version=1, step="blinded-set", points=b"\x00" * 64)
        with pytest.raises(PeerRefused, match="INVALID_ARGUMENT"):
            client.sum_exchange(opened.session_id, bad.SerializeToString(), "blinded-set")
    assert b.store.session(opened.session_id).status == "failed"
    assert SCHEMA_VERSION >= 2


def test_intersection_sum_job_records_each_peer_and_retries_an_unreachable_one(federation, sum_pair, tmp_path):
    from psi_share.jobs.spec import load_job

    a, b = sum_pair
    federation.node("lab-c")  # known to lab-a, never serving: unreachable
    federation.connect_all()
    job = tmp_path / "traffic.toml"
    job.write_text('[job]\nprotocol = "intersection-sum"\nname = "traffic"\nparticipants = ["lab-a", "lab-b", "lab-c"]\n'
                   'dataset = "flagged"\npeer_dataset = "usage"\nkind = "email"\n')
    a.config = type(a.config)(**{**a.config.__dict__, "jobs": type(a.config.jobs)(
        peer_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.01)})
    result = run_job(a, load_job(job))
    assert result.status == "partial"
    by_peer = {r.peer: r for r in result.peers}
    assert (by_peer["lab-b"].count, by_peer["lab-b"].total) == (2, 1235)
    assert by_peer["lab-c"].status == "failed" and by_peer["lab-c"].attempts == 2
    rows = {r.peer: r for r in a.store.job_run_peers(result.run_id)}
    assert rows["lab-b"].status == "ok" and rows["lab-c"].status == "failed"


def test_policy_min_result_withholds_the_sum_in_both_directions(federation, tmp_path, csv_file):
    a = federation.node("lab-a", paillier__pool_size=16, exposure__datasets='["flagged", "usage"]')
    b = federation.node("lab-b", paillier__pool_size=16, exposure__datasets='["flagged", "usage"]',
                        **{"policy.peers.lab-a__min_result": 3})
    a.import_file("flagged", csv_file("a.csv", A_FLAGGED), None)
    a.import_file("usage", write_amount_csv(tmp_path / "au.csv", [("a1", "email", "eve@example.org", "7")]), None)
    b.import_file("usage", write_amount_csv(tmp_path / "bu.csv", B_USAGE), None)
    b.import_file("flagged", csv_file("bf.csv", [("b1", "email", "eve@example.org")]), None)
    federation.serve("lab-b")
    federation.connect_all()
    with pytest.raises(PeerRefused, match="PERMISSION_DENIED.*fewer than 3.*withholds the sum"):
        a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    with pytest.raises(PeerRefused, match="fewer than 3"):
        a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email", value_holder="requester")
    assert [r for r in (a.store.sum_result(s.id) for s in a.store.sessions()) if r] == []


def test_a_point_off_the_curve_is_refused_inside_the_worker_processes_too():
    # Sets of the points the parties blind are not pre-checked in the main
    # process: lifting each x in the workers refuses an off-curve one.
    engine = ec.EcEngine(workers=2)
    try:
        good = [ec.hash_to_x(str(i).encode()).to_bytes(32, "big") for i in range(2 * ec.MIN_PARALLEL + 8)]
        bad_x = next(x for x in range(1, 100) if not ec._is_x_on_curve(x)).to_bytes(32, "big")
        assert len(engine.blind(ec.new_scalar(_rng(3)), good)) == len(good)
        with pytest.raises(RemoteProtocolError, match="not on P-256"):
            engine.blind(ec.new_scalar(_rng(4)), good[:-1] + [bad_x])
    finally:
        engine.close()


def test_a_scheduled_intersection_sum_job_runs_from_the_scheduler(federation, sum_pair, tmp_path):
    # Aggregate job files take [job.schedule] like PSI job files: the
    # scheduler runs them on time, once per slot, under the job's lock.
    from psi_share.jobs.spec import load_job
    from psi_share.jobs.scheduler import JobScheduler

    a, b = sum_pair
    job_file = tmp_path / "traffic.toml"
    job_file.write_text(
        '[job]\nprotocol = "intersection-sum"\nname = "traffic"\nparticipants = ["lab-a", "lab-b"]\n'
        'dataset = "flagged"\npeer_dataset = "usage"\nkind = "email"\n'
        '[job.schedule]\ncron = "0 10 * * *"\ntimezone = "Europe/Berlin"\n'
    )
    spec = load_job(job_file)
    assert spec.schedule is not None and spec.protocol == "intersection-sum"
    now = [1_893_488_400.0]  # 2030-01-01 09:00 UTC = 10:00 Berlin: the first slot is tomorrow
    a.clock = lambda: now[0]
    scheduler = JobScheduler(a, [spec], clock=lambda: now[0])
    assert scheduler.run_pending() == []
    now[0] += 86_400 + 5
    [run] = scheduler.run_pending()
    assert run.status == "ok" and run.triggered_by == "schedule" and run.protocol == "intersection-sum"
    assert (run.peers[0].count, run.peers[0].total) == (2, 1235)
    stored = a.store.job_run(run.run_id)
    assert stored.status == "ok" and stored.scheduled_for == 1_893_488_400.0 + 86_400
    assert scheduler.run_pending() == []  # not twice for one slot
    with job_lock(a, "traffic"):  # a run holding the lock (say from cron) is never overlapped
        assert scheduler.run_pending() == []


def test_abandoned_sum_sessions_expire_without_further_calls(federation, tmp_path):
    # The serving node's reaper sweeps intersection-sum sessions too, so an
    # abandoned one frees its memory (and the pool may fill again) even when
    # no other call arrives.
    import time

    from psi_share.identifiers import KINDS
    from psi_share.protocols.intersection_sum import SumOpen, ValueHolder

    a = federation.node("lab-a")
    b = federation.node("lab-b", sessions__ttl_seconds=2, exposure__datasets='["usage"]')  # reaped every 0.5 s
    b.import_file("usage", write_amount_csv(tmp_path / "bu.csv", B_USAGE), None)
    federation.serve("lab-b")
    federation.connect_all()
    clock = [b.clock()]
    b.responder.sums._clock = lambda: clock[0]
    with a.peer_client("lab-b") as client:
        opened = client.sum_open(SumOpen("usage", "email", KINDS["email"].version, 2, ValueHolder.RESPONDER, 2048))
    assert b.responder.sums.open_count() == 1
    clock[0] += b.config.sessions.ttl_seconds + 1
    deadline = time.monotonic() + 10
    while b.responder.sums.open_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.responder.sums.open_count() == 0
    assert b.store.session(opened.session_id).status == "expired"


def test_a_broken_sum_stream_fails_its_session_at_once(federation, sum_pair):
    # As for PSI: a stream that announces more than the session may receive
    # ends the session as failed, nothing half-received kept.
    import grpc

    from psi_share.identifiers import KINDS
    from psi_share.protocols.intersection_sum import SumOpen, ValueHolder
    from psi_share.v1 import node_pb2_grpc as pb_grpc

    a, b = sum_pair
    with a.peer_client("lab-b") as client:
        opened = client.sum_open(SumOpen("usage", "email", KINDS["email"].version, 2, ValueHolder.RESPONDER, 2048))
    oversized = pb.Chunk(protocol_version=1, session_id=opened.session_id, index=0, last=False,
                         total_bytes=10**7, data=b"\x00" * 64)
    with federation.channel("lab-a", "lab-b") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(pb_grpc.PsiShareNodeStub(channel).SumExchange(iter([oversized])))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert b.responder.sums.open_count() == 0
    assert b.store.session(opened.session_id).status == "failed"
