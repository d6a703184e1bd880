"""Bucketed setups (issue 15 item 3): arithmetic, sessions in memory against
the plaintext intersection, hostile responders, and two real nodes.

Sizes are small and the false-positive rate tiny, so that the single GCS
overflows OpenMined's int64 exactly as 3,000 queries over 100M items do at
1e-9 (``max(C, S) * C / f`` above 2^63) while a test blinds a few thousand items.
"""

from __future__ import annotations

import functools
import math
import random

import pytest
from private_set_intersection.python import ServerSetup

from conftest import foreign_match
from helpers import deterministic_random_bytes
from psi_share.crypto import buckets as bk
from psi_share.crypto.filters import build_setup
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
from psi_share.crypto.openmined_params import gcs_buildable
from psi_share.errors import RemoteProtocolError
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.protocols.psi import (
    BlindedSet,
    Mode,
    PsiOpened,
    PsiRequester,
    PsiResponderSession,
    blind_set,
    filter_for,
    size_class,
)
from psi_share.v1 import node_pb2 as pb
from test_psi_stream import cut

TINY_FPR = 1e-13  # 1024 queries: a single GCS overflows above ~9,000 items


def test_bucket_terms_keep_the_per_query_rate_and_bucket_count_fits_int64() -> None:
    for fpr in (1e-6, 1e-9, 1e-12):
        for queries in (1024, 4096, 1 << 20):
            for buckets in (2, 3, 10, 1000, 5000):
                rate, per_bucket = bk.bucket_terms(fpr, queries, buckets)
                assert per_bucket == math.ceil(queries / buckets)
                assert rate / per_bucket == pytest.approx(fpr / queries, rel=1e-12)
    # The case: 3,000 queries (class 4096) over 10M and 100M items at 1e-9.
    for items in (10_000_000, 100_000_000, 1_000_000_000):
        assert not gcs_buildable(1e-9, 4096, items)
        count = bk.bucket_count(1e-9, 4096, items, 1 << 20)
        rate, per_bucket = bk.bucket_terms(1e-9, 4096, count)
        assert gcs_buildable(rate, per_bucket, math.ceil(1.2 * items / count))
    # 1M queries: buckets small enough that max(Cb, Sb) * C / f fits.
    count = bk.bucket_count(1e-9, 1 << 20, 10_000_000, 1 << 20)
    assert gcs_buildable(*bk.bucket_terms(1e-9, 1 << 20, count), math.ceil(1.2 * 10_000_000 / count))
    assert bk.bucket_count(1e-9, 4096, 1 << 20, 1 << 20) == 1  # at the threshold: one setup, as today
    assert bk.bucket_count(1e-9, 4096, (1 << 20) + 1, 1 << 20) == 2
    # f / C below 2^-53: no GCS at any bucket count; buckets of the target size (Bloom or raw each).
    assert bk.bucket_count(1e-13, 2048, 9000, 1024) == 9


def _points(n: int, seed: int) -> tuple[bytes, list[bytes]]:
    key = new_private_key(deterministic_random_bytes(seed))
    return key, OpenMinedEngine().blinded_points(key, [f"r{i}" for i in range(n)])


def _session(ours: list[str], theirs: list[str], *, target: int, fpr: float = TINY_FPR, mode: Mode = Mode.REVEAL,
             workers: int = 1):  # type: ignore[no-untyped-def]
    """A requester session up to its setup, and the responder's bucketed filter."""
    random_bytes = deterministic_random_bytes(len(theirs))
    engine = OpenMinedEngine(None, workers, isolate=False)
    key, requester_key = new_private_key(random_bytes), new_private_key(random_bytes)
    queries = size_class(len(ours), 1 << 20)
    count = bk.bucket_count(fpr, queries, len(theirs), target)
    prepared = filter_for(blind_set(engine, key, theirs), false_positive_rate=fpr, max_set_size=queries,
                          buckets=count, engine=engine)
    requester = PsiRequester(ours, dataset="flagged", kinds={"email": 1}, mode=mode, key=requester_key, engine=engine)
    responder = PsiResponderSession(requester.open, key=key, max_set_size=queries, engine=engine)
    requester.on_opened(PsiOpened(
        session_id="s", false_positive_rate=fpr, max_set_size=queries, responder_set_size=len(theirs),
        setup_buckets_version=bk.SETUP_BUCKETS_VERSION if count > 1 else 0, bucket_count=count,
    ))
    requester.on_response(responder.process(requester.request()))
    return requester, prepared


@pytest.mark.parametrize("items", [1023, 1024, 1025, 2500, 9000, 12_000])
def test_sizes_around_the_threshold_and_past_the_overflow_match_the_plaintext(items: int) -> None:
    theirs = [f"m{i}@x" for i in range(items)]
    ours = [f"m{i}@x" for i in range(0, items + 400, 13)] + ["nobody@x"]  # class 1024
    requester, prepared = _session(ours, theirs, target=1024)
    want = tuple(i for i, item in enumerate(ours) if item in set(theirs))
    expected_buckets = 1 if items <= 1024 else bk.bucket_count(TINY_FPR, 1024, items, 1024)
    assert prepared.bucket_count == expected_buckets
    if items > 9000:  # a single setup could not be a GCS here; every bucket is one
        assert not gcs_buildable(TINY_FPR, 1024, items) and set(prepared.bucket_kinds) == {"gcs"}
    outcome = requester.on_setup(prepared.setup)
    assert outcome.matched == want and outcome.count == len(want)


def test_count_mode_and_parallel_bucket_building_agree() -> None:
    theirs = [f"m{i}@x" for i in range(3000)]
    ours = [f"m{i}@x" for i in range(2500, 3500)]
    requester, prepared = _session(ours, theirs, target=1024, mode=Mode.COUNT, workers=2)
    assert prepared.bucket_count >= 3
    assert requester.on_setup(prepared.setup).count == 500


# -- every way the requester reads a bucketed setup, swept ------------------------------

SWEEP_TARGET = 256  # bucket_items: a few hundred items make several buckets
SWEEP_THEIRS = [f"s{i}@x" for i in range(1600)]
SWEEP_PATHS = ("count", "pieces", "streamed", "setup-first")


@functools.lru_cache(maxsize=1)
def _sweep_points() -> tuple[bytes, tuple[bytes, ...]]:
    """The responder's key and H(y)^b of SWEEP_THEIRS, in order (blinded once)."""
    key = new_private_key(deterministic_random_bytes(77))
    engine = OpenMinedEngine(None, 2, isolate=False)
    points = engine.blind_points(key, SWEEP_THEIRS)
    assert sorted(points[:40]) == engine.blinded_points(key, SWEEP_THEIRS[:40])  # the responder's own blinding
    return key, tuple(points)


def _sweep_setup(theirs: int):  # type: ignore[no-untyped-def]
    key, points = _sweep_points()
    count = bk.bucket_count(1e-9, 1024, theirs, SWEEP_TARGET)
    return filter_for(BlindedSet(key, tuple(sorted(points[:theirs]))), false_positive_rate=1e-9, max_set_size=1024,
                      buckets=count, engine=OpenMinedEngine(None, 2, isolate=False))


def _sweep_run(path: str, ours: list[str], prepared, seed: int) -> int | tuple[int, ...]:  # type: ignore[no-untyped-def]
    """One session by ``path``: count mode on the whole setup; reveal on the
    setup in random pieces; streamed (a bucketed setup read last, in random
    pieces); streamed with the setup taken first and kept."""
    rng = random.Random(seed)
    engine = OpenMinedEngine()
    requester = PsiRequester(ours, dataset="flagged", kinds={"email": 1}, mode=Mode.COUNT if path == "count" else Mode.REVEAL,
                             key=new_private_key(deterministic_random_bytes(seed)), engine=engine)
    responder = PsiResponderSession(requester.open, key=prepared.key, max_set_size=1024, engine=engine)
    requester.on_opened(PsiOpened(
        session_id="s", false_positive_rate=1e-9, max_set_size=1024, responder_set_size=prepared.item_count,
        setup_buckets_version=bk.SETUP_BUCKETS_VERSION if prepared.bucket_count > 1 else 0,
        bucket_count=prepared.bucket_count,
    ))
    pieces = cut(prepared.setup, rng, most=700)  # buckets of ~1.5 KB: most are split
    if path in ("count", "pieces"):
        requester.on_response(responder.process(requester.request()))
        if path == "count":
            return requester.on_setup(prepared.setup).count
        return requester.on_setup_pieces(pieces).matched or ()
    last = path == "streamed" and requester.setup_last
    if not last:
        requester.take_setup(prepared.setup)
    exchange = requester.stream(rng.choice([1, 7, 64]))
    for piece in cut(b"".join(responder.process_stream(exchange.request_pieces(), batch_items=5)), rng):
        exchange.feed(piece)
    return requester.on_streamed(exchange, pieces if last else None).matched or ()


@pytest.mark.parametrize("theirs", [255, 256, 257, 512, 513, 1025, 1600])
def test_every_read_of_a_bucketed_setup_matches_the_plaintext_around_bucket_boundaries(theirs: int) -> None:
    """Responder sizes at and around the bucket threshold and its multiples
    (1 to 7 buckets), requester sizes from 1 to 300, each session by all four
    paths; ours hold the responder's first and last items, the ones just past
    its end, and random others. Truth from Python sets."""
    prepared = _sweep_setup(theirs)
    assert prepared.bucket_count == (1 if theirs <= SWEEP_TARGET else -(-theirs // SWEEP_TARGET))
    held = set(SWEEP_THEIRS[:theirs])
    rng = random.Random(theirs)
    edges = [SWEEP_THEIRS[i] for i in (0, theirs - 1, theirs, theirs + 1) if i < len(SWEEP_THEIRS)]
    for size in (1, 2, 97, 300):
        pool = edges + rng.sample(SWEEP_THEIRS, 150) + [f"nobody{i}@x" for i in range(200)]
        ours = list(dict.fromkeys(pool))[:size] if size <= 2 else rng.sample(list(dict.fromkeys(pool)), size)
        want = tuple(i for i, item in enumerate(ours) if item in held)
        for path in SWEEP_PATHS:
            got = _sweep_run(path, ours, prepared, seed=theirs * 1000 + size)
            assert got == (len(want) if path == "count" else want), (path, size)


def test_a_bucketed_setup_read_last_moves_the_requester_only_along_its_steps() -> None:
    """Streamed with a bucketed setup: the request first, the setup with the
    response's end; any other order is our bug (LocalProtocolError)."""
    from psi_share.errors import LocalProtocolError
    from psi_share.protocols.psi import RequesterState

    theirs = [f"m{i}@x" for i in range(2500)]
    ours = [f"m{i}@x" for i in range(2400, 2600)]
    requester, prepared = _session(ours, theirs, target=1024)  # its response already taken: a fresh one below
    fresh = PsiRequester(ours, dataset="flagged", kinds={"email": 1}, mode=Mode.REVEAL,
                         key=new_private_key(deterministic_random_bytes(3)), engine=OpenMinedEngine())
    fresh.on_opened(requester.opened)
    assert fresh.setup_last
    responder = PsiResponderSession(fresh.open, key=prepared.key, max_set_size=1024, engine=OpenMinedEngine())
    exchange = fresh.stream(64)
    assert fresh.state is RequesterState.STREAMING_SETUP_LAST
    with pytest.raises(LocalProtocolError):
        fresh.take_setup(prepared.setup)  # too late: the setup comes last
    for piece in responder.process_stream(exchange.request_pieces(), batch_items=64):
        exchange.feed(piece)
    with pytest.raises(LocalProtocolError):
        fresh.on_streamed(exchange)  # the setup is missing
    assert fresh.state is RequesterState.STREAMING_SETUP_LAST  # a refused step moves nothing
    outcome = fresh.on_streamed(exchange, [prepared.setup[:1000], prepared.setup[1000:]])
    assert outcome.matched == tuple(range(100)) and fresh.state is RequesterState.DONE
    counting = PsiRequester(ours, dataset="flagged", kinds={"email": 1}, mode=Mode.COUNT,
                            key=new_private_key(deterministic_random_bytes(4)), engine=OpenMinedEngine())
    counting.on_opened(requester.opened)
    with pytest.raises(LocalProtocolError):
        counting.stream(64)  # count mode answers sorted: never streamed


# -- a hostile responder ---------------------------------------------------------


def _message(prepared) -> pb.PsiBucketedSetup:  # type: ignore[no-untyped-def]
    return pb.PsiBucketedSetup.FromString(prepared.setup)


def _forge(change) -> RemoteProtocolError:  # type: ignore[no-untyped-def]
    theirs = [f"m{i}@x" for i in range(2500)]
    requester, prepared = _session([f"m{i}@x" for i in range(50)], theirs, target=1024)
    message = _message(prepared)
    change(message, prepared)
    with pytest.raises(RemoteProtocolError) as caught:
        requester.on_setup(message.SerializeToString())
    return caught.value


def _denser(message, prepared) -> None:  # type: ignore[no-untyped-def]
    """Bucket 0 carries many more points than announced (a filter that claims guesses)."""
    rate, per_bucket = bk.bucket_terms(TINY_FPR, 1024, prepared.bucket_count)
    _, extra = _points(3 * message.bucket_sizes[0], 5)
    message.setups[0] = build_setup(extra, rate, per_bucket).SerializeToString()


def _single_terms(message, prepared) -> None:  # type: ignore[no-untyped-def]
    """Bucket 0 built for the single setup's terms (another per-query rate)."""
    _, pts = _points(message.bucket_sizes[0], 6)
    message.setups[0] = build_setup(pts, 1e-6, 1024).SerializeToString()


def _all_ones_bloom(message, prepared) -> None:  # type: ignore[no-untyped-def]
    setup = ServerSetup.FromString(message.setups[1])
    setup.bloom_filter.num_hash_functions = 40
    setup.bloom_filter.bits = b"\xff" * 1000
    message.setups[1] = setup.SerializeToString()


@pytest.mark.parametrize("change, says", [
    (_denser, "bucket 0 of"),
    (_single_terms, "bucket 0 of"),
    (_all_ones_bloom, "bucket 1 of"),
    (lambda m, p: m.setups.__setitem__(2, b"\xff\xff\xff"), "bucket 2 is not"),
    (lambda m, p: m.bucket_sizes.__setitem__(0, m.bucket_sizes[0] + 1), "add up to"),
    (lambda m, p: (m.bucket_sizes.__setitem__(0, m.bucket_sizes[0] + 1),
                   m.bucket_sizes.__setitem__(1, m.bucket_sizes[1] - 1)), "bucket 0 of"),
    (lambda m, p: m.setups.pop(), "buckets announced"),
    (lambda m, p: setattr(m, "setup_buckets_version", 2), "another version"),
    (lambda m, p: setattr(m, "protocol_version", PROTOCOL_VERSION + 1), "another version"),
])
def test_malformed_or_too_dense_buckets_are_refused(change, says: str) -> None:  # type: ignore[no-untyped-def]
    assert says in str(_forge(change))


def test_bucket_announcements_outside_the_contract_are_refused() -> None:
    engine = OpenMinedEngine()
    for version, count in ((1, 1), (1, 0), (1, bk.MAX_BUCKETS + 1), (2, 4), (0, 3)):
        requester = PsiRequester(["a"], dataset="flagged", kinds={"email": 1}, mode=Mode.REVEAL,
                                 key=new_private_key(deterministic_random_bytes(1)), engine=engine)
        with pytest.raises(RemoteProtocolError, match="bucket"):
            requester.on_opened(PsiOpened(session_id="s", false_positive_rate=1e-9, max_set_size=1024,
                                          responder_set_size=5, setup_buckets_version=version, bucket_count=count))


# -- real nodes --------------------------------------------------------------------


def test_nodes_match_over_buckets_and_a_foreign_client_gets_one_setup(federation, csv_file) -> None:
    theirs = [(f"m{i}", "email", f"m{i}@example.org") for i in range(3000)]
    ours = [(f"a{i}", "email", f"m{i}@example.org") for i in range(2900, 3100, 3)]
    b = federation.node("lab-b", matching__bucket_items=1024, audit__transcripts="true")
    a = federation.node("lab-a")
    b.import_file("flagged", csv_file("b.csv", theirs), None)
    a.import_file("flagged", csv_file("a.csv", ours), None)
    federation.serve("lab-b")
    federation.connect_all()
    outcome = a.match("lab-b", kinds=["email"])
    held = {v for _, _, v in theirs}
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == {x for x, _, v in ours if v in held}
    assert b.store.session(outcome.session_id).status == "done"
    # The responder's compliance officer: the bucketed setup it sent is logged and checked as such.
    from psi_share.audit.verify import verify_log

    verdict = verify_log(b.home.audit_path, b.home.audit_key().public_key(), node="lab-b")
    assert not verdict.problems and verdict.transcripts_checked > 0, verdict.problems
    # A foreign OpenMined client reads one setup only, and gets one: it still matches.
    values = [v for _, _, v in ours]
    found, kind = foreign_match(federation, "lab-a", "lab-b", values)
    assert found == [i for i, v in enumerate(values) if v in held] and kind in ("gcs", "raw", "bloom_filter")


def test_the_audit_check_reads_a_bucketed_setup_only_as_the_log_describes_it() -> None:
    from psi_share.audit.messages import check_message

    _, prepared = _session([f"m{i}@x" for i in range(20)], [f"m{i}@x" for i in range(2500)], target=1024)
    params = {"setup_buckets": prepared.bucket_count, "setup_items": 2500}
    assert check_message("psi", "setup-chunk", prepared.setup, params) == []
    assert check_message("psi", "setup-chunk", prepared.setup, {"setup_items": 2500})  # read as one ServerSetup: refused
    assert any("add up to" in p for p in check_message("psi", "setup-chunk", prepared.setup, {**params, "setup_items": 2499}))
    assert check_message("psi", "setup-chunk", prepared.setup, {**params, "setup_buckets": prepared.bucket_count + 1})


@pytest.mark.parametrize("lengths", [[0, 0], [1, 127], [128, 16383, 16384], [5, 2_097_152, 300], [70_000] * 7])
def test_a_bucketed_setup_written_piece_by_piece_is_protobufs_serialization(lengths: list[int]) -> None:
    # Lengths on both sides of every varint width; the bytes need not be setups for the framing.
    from psi_share.crypto.buckets import SETUP_BUCKETS_VERSION
    from psi_share.protocols import PROTOCOL_VERSION
    from psi_share.protocols.psi_buckets import bucketed_setup_bytes
    from psi_share.v1 import node_pb2 as pb

    setups = [bytes([i % 251]) * n for i, n in enumerate(lengths)]
    sizes = [n * 3 + 1 for n in lengths]
    whole = pb.PsiBucketedSetup(protocol_version=PROTOCOL_VERSION, setup_buckets_version=SETUP_BUCKETS_VERSION,
                                bucket_sizes=sizes, setups=setups).SerializeToString()
    assert bucketed_setup_bytes(sizes, setups) == whole
