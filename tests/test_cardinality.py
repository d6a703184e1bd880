"""The cardinality protocol (protocols/cardinality.py) in memory, with real P-256 crypto.

Honest runs are checked against the plaintext intersection across sizes; the
requester's cheating is written here as a modified requester would write it
(messages built by hand from the proto), and the responder's checks must
refuse it or leave it with nothing but the count of a subset it chose.
"""

from __future__ import annotations

import functools
import random

import pytest
from helpers import deterministic_random_bytes

from psi_share.audit import messages as audit_messages
from psi_share.crypto import ec
from psi_share.errors import OutOfOrder, RemoteProtocolError
from psi_share.protocols import PROTOCOL_VERSION, PROTOCOLS
from psi_share.protocols.cardinality import (
    DECOYS,
    CardinalityRequester,
    CardinalityResponder,
    ProtocolViolation,
    SessionSet,
    check_message,
    make_session_set,
    release_count,
)
from psi_share.protocols.intersection_sum import BlindedSet, blind_own_items
from psi_share.v1 import node_pb2 as pb


def items(prefix: str, n: int) -> list[str]:
    return [f"psi-share/1/email/v1/{prefix}{i}@example.org" for i in range(n)]


def prepared(engine: ec.EcEngine, values: list[str], seed: int) -> BlindedSet:
    return blind_own_items(engine, ec.new_scalar(deterministic_random_bytes(seed)), values)


@pytest.fixture(scope="module")
def engine():
    e = ec.EcEngine(2)
    yield e
    e.close()


def responder(own: list[BlindedSet], engine: ec.EcEngine, set_size: int, *, min_result: int = 0, seed: int = 7,
              noise=None) -> tuple[CardinalityResponder, SessionSet]:
    session_set = make_session_set(own, engine=engine, random_bytes=deterministic_random_bytes(seed))
    party = CardinalityResponder(
        session_set, engine=engine, set_size=set_size, min_result=min_result,
        release=functools.partial(release_count, min_result=min_result, noise=noise),
    )
    return party, session_set


def run_honest(req: list[str], resp: list[str], engine: ec.EcEngine, *, min_result: int = 0, noise=None):
    # The responder's items come as two prepared sets under different scalars
    # (as per-kind prepared sets do); the session-set puts them under one key.
    a = prepared(engine, req, 1)
    b = [prepared(engine, resp[: len(resp) // 3], 2), prepared(engine, resp[len(resp) // 3 :], 3)]
    them, _ = responder(b, engine, len(a.points), min_result=min_result, noise=noise)
    us = CardinalityRequester(a, engine=engine, max_peer_set_size=max(len(resp), 1))
    session_set = them.on_queries(us.queries())
    them.blind_queries()
    reply, outcome = them.on_reblinded(us.on_session_set(session_set))
    return us.on_count(reply), outcome, reply


# -- releasing the count ----------------------------------------------------------


def test_release_count_applies_min_result_and_the_noise_seam() -> None:
    assert release_count(5, min_result=0) == 5
    assert release_count(0, min_result=0) == 0
    assert release_count(2, min_result=3) is None
    assert release_count(3, min_result=3) == 3
    # The threshold applies to the noisy count (so the decision is covered by the noise).
    assert release_count(3, min_result=3, noise=lambda c: c - 1) is None
    assert release_count(2, min_result=3, noise=lambda c: c + 1) == 3
    assert release_count(1, min_result=0, noise=lambda c: c - 5) == 0  # never below 0
    with pytest.raises(Exception, match="negative"):
        release_count(-1, min_result=0)


def test_registered_with_what_each_side_learns() -> None:
    spec = PROTOCOLS["cardinality"]
    assert "count" in spec.requester_learns and "exact intersection size" in spec.responder_learns


# -- honest runs against the plaintext intersection --------------------------------------


SIZES = [  # (requester, responder, shared)
    (0, 0, 0), (0, 4, 0), (4, 0, 0), (1, 1, 1), (1, 1, 0), (7, 12, 4), (12, 7, 7), (50, 50, 50),
    (200, 1000, 37), (1000, 1000, 100), (1000, 300, 300),
]


@pytest.mark.parametrize("n_req, n_resp, shared", SIZES)
def test_count_equals_plaintext_intersection(engine: ec.EcEngine, n_req: int, n_resp: int, shared: int) -> None:
    rng = random.Random(n_req * 7919 + n_resp)
    pool = items("u", n_req + n_resp)
    rng.shuffle(pool)
    req = pool[:n_req]
    resp = rng.sample(req, shared) + pool[n_req : n_req + n_resp - shared]
    truth = len(set(req) & set(resp))
    assert truth == shared
    result, outcome, _ = run_honest(req, resp, engine)
    assert result.count == outcome.true_count == outcome.released == truth
    assert (result.own_set_size, result.peer_set_size, outcome.peer_set_size) == (n_req, n_resp, n_req)


def test_count_at_10k(engine: ec.EcEngine) -> None:
    req = items("r", 10_000)
    resp = req[::7] + items("s", 10_000 - len(req[::7]))
    result, outcome, _ = run_honest(req, resp, engine)
    assert result.count == outcome.true_count == len(req[::7]) == 1429


def test_min_result_withholds_and_says_only_fewer_than_k(engine: ec.EcEngine) -> None:
    req, resp = items("u", 20), items("u", 2) + items("v", 30)
    result, outcome, reply = run_honest(req, resp, engine, min_result=3)
    assert (result.count, result.fewer_than) == (None, 3)
    assert (outcome.true_count, outcome.released) == (2, None)
    m = pb.CardinalityMessage.FromString(reply)
    assert {f.name for f, _ in m.ListFields()} == {"protocol_version", "step", "withheld", "min_result"}
    released, _, _ = run_honest(req, items("u", 3) + items("v", 30), engine, min_result=3)
    assert released.count == 3


def test_noise_callable_decides_what_leaves(engine: ec.EcEngine) -> None:
    result, outcome, _ = run_honest(items("u", 10), items("u", 6), engine, noise=lambda c: c + 2)
    assert (outcome.true_count, outcome.released, result.count) == (6, 8, 8)


def test_every_message_passes_its_audit_check(engine: ec.EcEngine) -> None:
    import psi_share.node  # noqa: F401  (registers the cardinality checks)

    a, b = prepared(engine, items("u", 30), 1), prepared(engine, items("u", 10) + items("w", 5), 2)
    them, session_set = responder([b], engine, 30)
    us = CardinalityRequester(a, engine=engine, max_peer_set_size=100)
    sent = {"queries": us.queries()}
    sent["session-set"] = them.on_queries(sent["queries"])
    sent["reblinded"] = us.on_session_set(sent["session-set"])
    sent["count"], _ = them.on_reblinded(sent["reblinded"])
    assert us.on_count(sent["count"]).count == 10
    expected_points = {"queries": 30, "session-set": 15 + DECOYS, "reblinded": 15 + DECOYS, "count": 0}
    for step, payload in sent.items():
        assert check_message(step, payload) == expected_points[step]
        assert audit_messages.check_message("cardinality", f"{step}-chunk", payload) == []
        assert audit_messages.check_message("cardinality", "reply-chunk", payload) == []
    # A message that carries what its step may not is a finding.
    smuggled = pb.CardinalityMessage(protocol_version=PROTOCOL_VERSION, step="count", count=3, key_point=b"\x01" * 32)
    assert audit_messages.check_message("cardinality", "count-chunk", smuggled.SerializeToString())


def test_session_sets_are_fresh_and_hide_decoys_among_our_points(engine: ec.EcEngine) -> None:
    b = prepared(engine, items("u", 40), 2)
    one = make_session_set([b], engine=engine, random_bytes=deterministic_random_bytes(1))
    two = make_session_set([b], engine=engine, random_bytes=deterministic_random_bytes(2))
    assert len(one.points) == len(two.points) == 40 + DECOYS and one.items == 40
    assert not set(one.points) & set(two.points)  # no point (ours or decoy) seen twice
    assert not set(one.points) & set(b.points)  # never the prepared points themselves
    assert list(one.points) == sorted(one.points)
    assert "scalar" not in repr(one) and str(one.scalar) not in repr(one)


# -- a cheating requester ------------------------------------------------------------------


def message(step: str, **fields) -> bytes:  # type: ignore[no-untyped-def]
    return pb.CardinalityMessage(protocol_version=PROTOCOL_VERSION, step=step, **fields).SerializeToString()


def blind(key: int, points: list[bytes]) -> list[bytes]:
    return [ec.blind_x_blob(key, p) for p in points]


def hashed(values: list[str]) -> list[bytes]:
    return [ec.hash_to_x(v.encode()).to_bytes(32, "big") for v in values]


class Cheat:
    """A modified requester: keys of its choice, points of its choice."""

    def __init__(self, engine: ec.EcEngine, responder_items: list[str], set_size: int, seed: int = 3) -> None:
        b = prepared(engine, responder_items, 2)
        self.party, self.session_set = responder([b], engine, set_size, seed=seed)
        self.rng = random.Random(seed)
        self.key = ec.new_scalar(self.rng.randbytes)

    def queries(self, points: list[bytes], key: int | None = None) -> list[bytes]:
        """Send ``points`` as queries under the announced key ``key``; returns the session-set."""
        key_point = ec.base_x([key or self.key])[0]
        reply = self.party.on_queries(message("queries", key_point=key_point, points=b"".join(sorted(points))))
        return ec.split_points(pb.CardinalityMessage.FromString(reply).points)

    def reblinded(self, points: list[bytes]) -> int | None:
        reply, _ = self.party.on_reblinded(message("reblinded", points=b"".join(sorted(points))))
        m = pb.CardinalityMessage.FromString(reply)
        # The responder only ever returns one number (or "withheld").
        assert {f.name for f, _ in m.ListFields()} <= {"protocol_version", "step", "count", "withheld", "min_result"}
        return None if m.withheld else m.count


def test_per_item_keys_only_count_the_items_under_the_announced_key(engine: ec.EcEngine) -> None:
    # OpenMined's attack: blind each item under its own key. Here the responder
    # counts, and returns one number: how many matching items the requester
    # blinded under the key it announced (a subset it chose), nothing per item.
    mine = items("u", 30)
    cheat = Cheat(engine, items("u", 12) + items("z", 20), 30)
    keys = [cheat.key if i % 3 == 0 else ec.new_scalar(cheat.rng.randbytes) for i in range(30)]
    queries = [ec.blind_x_blob(k, h) for k, h in zip(keys, hashed(mine))]
    session_set = cheat.queries(queries)
    count = cheat.reblinded(blind(cheat.key, session_set))
    assert count == sum(1 for i in range(12) if i % 3 == 0) == 4


def test_fanning_out_points_is_caught_as_a_violation(engine: ec.EcEngine) -> None:
    # The amplification attack: re-blind each session-set point under k keys
    # (keeping |Z| right by dropping others) and query one guess under the
    # same k keys: a member at a covered point would count k times.
    guess = items("u", 1)
    cheat = Cheat(engine, items("u", 5) + items("z", 50), 4)
    keys = [cheat.key] + [ec.new_scalar(cheat.rng.randbytes) for _ in range(3)]
    session_set = cheat.queries([ec.blind_x_blob(k, hashed(guess)[0]) for k in keys])
    covered = session_set[: len(session_set) // 4]
    fanned = [ec.blind_x_blob(k, p) for p in covered for k in keys]
    fanned += [ec.blind_x_blob(cheat.key, p) for p in session_set[len(fanned):]]
    with pytest.raises(ProtocolViolation, match="did not blind every point"):
        cheat.reblinded(fanned)


def test_a_key_other_than_the_announced_one_is_caught(engine: ec.EcEngine) -> None:
    cheat = Cheat(engine, items("u", 5), 5)
    session_set = cheat.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 5))])
    other = ec.new_scalar(cheat.rng.randbytes)
    with pytest.raises(ProtocolViolation):
        cheat.reblinded(blind(other, session_set))


def test_sending_the_session_set_back_or_replaying_an_old_one_is_caught(engine: ec.EcEngine) -> None:
    cheat = Cheat(engine, items("u", 5), 5)
    first = cheat.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 5))])
    with pytest.raises(ProtocolViolation):
        cheat.reblinded(first)  # the responder's own points, not re-blinded
    again = Cheat(engine, items("u", 5), 5, seed=4)
    again.key = cheat.key
    again.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 5))])
    with pytest.raises(ProtocolViolation):
        again.reblinded(blind(cheat.key, first))  # a re-blinded set from another session


def test_dropping_a_decoy_is_caught_dropping_only_our_points_thins_the_count(engine: ec.EcEngine) -> None:
    # With the responder's secrets in hand (a test may), show what the check
    # rests on: any left-out decoy is caught; left-out items of ours (which a
    # requester cannot tell from decoys) only shrink the count.
    cheat = Cheat(engine, items("u", 10) + items("z", 10), 10)
    session_set = cheat.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 10))])
    decoys = set(ec.base_x(cheat.session_set.decoys))
    junk = lambda: ec.base_x([ec.new_scalar(cheat.rng.randbytes)])[0]  # noqa: E731
    z = [junk() if p == min(decoys) else ec.blind_x_blob(cheat.key, p) for p in session_set]
    with pytest.raises(ProtocolViolation, match="lacks points"):
        cheat.reblinded(z)
    cheat = Cheat(engine, items("u", 10) + items("z", 10), 10, seed=5)
    session_set = cheat.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 10))])
    decoys = set(ec.base_x(cheat.session_set.decoys))
    ours = [p for p in session_set if p not in decoys]
    assert len(ours) == 20
    dropped = set(ours[:7])
    count = cheat.reblinded([junk() if p in dropped else ec.blind_x_blob(cheat.key, p) for p in session_set])
    # Exactly the requester's items whose points it happened to keep: a count
    # that depends on positions it could not choose, never more than honest.
    kept = {p for p in ours if p not in dropped}
    k = cheat.session_set.scalar
    assert count == sum(1 for h in hashed(items("u", 10)) if ec.blind_x_blob(k, h) in kept) <= 10


def off_curve() -> bytes:
    return next(x for x in range(2, 1000) if not ec._is_x_on_curve(x)).to_bytes(32, "big")


@pytest.mark.parametrize("mutate, error", [
    (lambda z: z[:-1], "holds fewer points than were announced"),
    (lambda z: z + [ec.base_x([12345])[0]], "holds more points than were announced"),
    (lambda z: [b"".join(z)[:-1]], "not a whole number of 32-byte points"),
    (lambda z: z[:-1] + [z[0]], "repeats a point"),
    (lambda z: z[:-1] + [off_curve()], "not on P-256"),
])
def test_malformed_reblinded_sets_are_refused(engine: ec.EcEngine, mutate, error: str) -> None:  # type: ignore[no-untyped-def]
    cheat = Cheat(engine, items("u", 5), 5)
    session_set = cheat.queries([ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 5))])
    with pytest.raises(RemoteProtocolError, match=error):
        cheat.reblinded(mutate(blind(cheat.key, session_set)))


def test_unsorted_sets_and_bad_queries_are_refused(engine: ec.EcEngine) -> None:
    cheat = Cheat(engine, items("u", 5), 3)
    queries = sorted(ec.blind_x_blob(cheat.key, h) for h in hashed(items("u", 3)))
    with pytest.raises(RemoteProtocolError, match="generator"):
        cheat.party.on_queries(message("queries", key_point=ec.base_x([1])[0], points=b"".join(queries)))
    cheat = Cheat(engine, items("u", 5), 3)
    with pytest.raises(RemoteProtocolError, match="holds fewer points than were announced"):
        cheat.queries(queries[:2])
    cheat = Cheat(engine, items("u", 5), 3)
    with pytest.raises(RemoteProtocolError, match="ascending order"):
        cheat.party.on_queries(message("queries", key_point=ec.base_x([cheat.key])[0],
                                       points=b"".join(reversed(queries))))
    cheat = Cheat(engine, items("u", 5), 3)
    session_set = cheat.queries(queries)
    z = sorted(blind(cheat.key, session_set))
    with pytest.raises(RemoteProtocolError, match="ascending order"):
        cheat.party.on_reblinded(message("reblinded", points=b"".join(reversed(z))))
    with pytest.raises(OutOfOrder):
        cheat.party.on_queries(message("queries", key_point=ec.base_x([cheat.key])[0], points=b"".join(queries)))


def test_a_count_message_cannot_smuggle_anything(engine: ec.EcEngine) -> None:
    with pytest.raises(RemoteProtocolError, match="may not carry"):
        check_message("count", message("count", count=2, points=b"\x00" * 32))
    with pytest.raises(RemoteProtocolError, match="withheld count carries a count"):
        check_message("count", message("count", withheld=True, count=2, min_result=3))


# -- a hostile responder, as the requester sees it ---------------------------------------------


def test_requester_refuses_a_malformed_session_set_or_count(engine: ec.EcEngine) -> None:
    a = prepared(engine, items("u", 5), 1)
    rng = random.Random(1)
    points = sorted(ec.base_x([ec.new_scalar(rng.randbytes) for _ in range(8)]))
    us = CardinalityRequester(a, engine=engine, max_peer_set_size=5)
    us.queries()
    with pytest.raises(RemoteProtocolError, match="ascending order"):
        us.on_session_set(message("session-set", points=b"".join(reversed(points))))
    us = CardinalityRequester(a, engine=engine, max_peer_set_size=5)
    us.queries()
    with pytest.raises(RemoteProtocolError, match="more decoys"):
        us.on_session_set(message("session-set", points=b"".join(points), decoys=9))
    us = CardinalityRequester(a, engine=engine, max_peer_set_size=5)
    us.queries()
    us.on_session_set(message("session-set", points=b"".join(points), decoys=4))
    with pytest.raises(RemoteProtocolError, match="6 matches for our 5 items"):
        us.on_count(message("count", count=6))
