"""The PSI protocol state machines (protocols/psi.py) over real OpenMined crypto.

Requester and responder are joined in memory (tests/helpers.py), exactly as
the node joins them over gRPC. Hostile inputs are built by hand: every one
must end in a RemoteProtocolError (or a subclass), never anything else.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from private_set_intersection.python import Request, Response, ServerSetup

from helpers import (
    deterministic_random_bytes,
    make_psi_pair,
    run_psi_pair,
    run_psi_transcript,
)
from psi_share.crypto import openmined
from psi_share.crypto.openmined import (
    MIN_CHUNK_ITEMS,
    P256_ORDER,
    POINT_BYTES,
    OpenMinedEngine,
    check_key,
    new_private_key,
)
from psi_share.errors import (
    LocalProtocolError,
    OutOfOrder,
    RemoteProtocolError,
    VersionMismatch,
)
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.protocols.psi import (
    Mode,
    PsiOpen,
    PsiOpened,
    PsiRequester,
    PsiResponderSession,
    RequesterState,
    ResponderState,
    prepare_setup,
)

REPO = Path(__file__).resolve().parents[1]

# -- helpers -------------------------------------------------------------------


def expected_indices(requester_items: list[str], responder_items: list[str]) -> tuple[int, ...]:
    theirs = set(responder_items)
    return tuple(i for i, item in enumerate(requester_items) if item in theirs)


def valid_points(n: int, seed: int = 7) -> list[bytes]:
    """``n`` distinct, valid blinded points (a real requester's request)."""
    engine = OpenMinedEngine()
    key = new_private_key(deterministic_random_bytes(seed))
    return list(engine.blind(key, [f"item-{i}" for i in range(n)], True).encrypted_elements)


def open_session(set_size: int, mode: Mode = Mode.REVEAL, *, max_set_size: int = 100) -> PsiResponderSession:
    open_ = PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=set_size, mode=mode)
    key = new_private_key(deterministic_random_bytes(99))
    return PsiResponderSession(open_, key=key, max_set_size=max_set_size, engine=OpenMinedEngine())


def opened_requester(items: list[str], mode: Mode = Mode.REVEAL) -> PsiRequester:
    pair = make_psi_pair(items, ["x"], mode=mode)
    pair.requester.on_opened(pair.opened)
    return pair.requester


# -- correctness ---------------------------------------------------------------

_short = st.text(max_size=6)


@st.composite
def two_sets(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Two sets drawn from one pool, so overlaps (and all-match) are common."""
    pool = draw(st.lists(_short, unique=True, max_size=24))
    requester = [x for x in pool if draw(st.booleans())]
    responder = [x for x in pool if draw(st.booleans())]
    responder += draw(st.lists(_short, unique=True, max_size=6).map(lambda xs: [x for x in xs if x not in pool]))
    return requester, responder


@settings(max_examples=25, deadline=None)
@given(two_sets())
@example(([], ["a", "b"]))  # empty requester set
@example((["a", "b"], []))  # empty responder set
@example(([], []))
@example((["a", "b", "c"], ["d", "e"]))  # disjoint
@example((["a", "b", "c"], ["c", "b", "a"]))  # all match
@example((["", "é", "a b", "💥"], ["", "💥", "zz"]))  # odd strings
def test_reveal_and_count_match_the_plaintext_intersection(sets: tuple[list[str], list[str]]) -> None:
    requester_items, responder_items = sets
    want = expected_indices(requester_items, responder_items)

    revealed = run_psi_pair(requester_items, responder_items, mode=Mode.REVEAL)
    assert revealed.matched == want
    assert revealed.count == len(want)
    assert revealed.requester_set_size == len(requester_items)

    counted = run_psi_pair(requester_items, responder_items, mode=Mode.COUNT, seed=1)
    assert counted.matched is None
    assert counted.count == len(want)
    assert counted.requester_set_size == len(requester_items)


def test_outcome_carries_the_responders_false_positive_rate() -> None:
    outcome = run_psi_pair(["a"], ["a"], fpr=1e-6)
    assert outcome.false_positive_rate == 1e-6
    assert outcome.matched == (0,)


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.submitted = 0

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.submitted += 1
        return super().submit(*args, **kwargs)


def test_chunked_run_on_two_workers_equals_one_worker_run() -> None:
    n = 5000
    assert n // MIN_CHUNK_ITEMS >= 2, "the set must be large enough to be split into chunks"
    requester_items = [f"r-{i}" for i in range(n)]
    # every 4th requester item is on the responder's side too, at known positions
    shared = {f"r-{i}" for i in range(0, n, 4)}
    responder_items = sorted(shared) + [f"s-{i}" for i in range(n - len(shared))]
    want = tuple(range(0, n, 4))

    single = run_psi_pair(requester_items, responder_items, max_set_size=n)
    assert single.matched == want

    with CountingExecutor(max_workers=2) as executor:
        parallel = run_psi_pair(requester_items, responder_items, workers=2, executor=executor, max_set_size=n)
        submitted_reveal = executor.submitted
        counted = run_psi_pair(
            requester_items, responder_items, mode=Mode.COUNT, workers=2, executor=executor, max_set_size=n
        )
    assert parallel == single
    assert counted.count == len(want) and counted.matched is None
    # blind, process and intersect each ran as (at least) two chunks on the executor
    assert submitted_reveal >= 6


def test_count_mode_response_is_sorted_even_when_chunked() -> None:
    items = [f"c-{i}" for i in range(2 * MIN_CHUNK_ITEMS + 10)]
    with ThreadPoolExecutor(max_workers=2) as executor:
        _, count_tx = run_psi_transcript(
            items, items[::3], mode=Mode.COUNT, workers=2, executor=executor, max_set_size=len(items)
        )
    count_elements = list(Response.FromString(count_tx.response).encrypted_elements)
    assert len(count_elements) == len(items)
    assert count_elements == sorted(count_elements)

    # In reveal mode the response keeps the request's order, which is not sorted:
    # so the check above really distinguishes the two.
    _, reveal_tx = run_psi_transcript(items[:50], items[:10], mode=Mode.REVEAL)
    reveal_elements = list(Response.FromString(reveal_tx.response).encrypted_elements)
    assert reveal_elements != sorted(reveal_elements)


def test_count_mode_small_response_is_sorted_and_request_has_no_reveal_flag() -> None:
    items = [f"k-{i}" for i in range(40)]
    _, tx = run_psi_transcript(items, items[:20], mode=Mode.COUNT)
    request = Request.FromString(tx.request)
    assert request.reveal_intersection is False
    elements = list(Response.FromString(tx.response).encrypted_elements)
    assert elements == sorted(elements)
    assert all(len(e) == POINT_BYTES for e in elements)


def test_messages_never_carry_the_items_in_clear() -> None:
    items = ["alice@example.com", "bob@example.com", "carol@example.com"]
    _, tx = run_psi_transcript(items, ["bob@example.com", "dave@example.com"])
    for blob in (tx.request, tx.response, tx.setup):
        for item in items + ["dave@example.com"]:
            assert item.encode() not in blob


# -- state machines ------------------------------------------------------------


def test_requester_walks_its_states_in_order() -> None:
    pair = make_psi_pair(["a", "b"], ["b"])
    r = pair.requester
    assert r.state is RequesterState.NEW
    r.on_opened(pair.opened)
    assert r.state is RequesterState.OPENED
    request = r.request()
    assert r.state is RequesterState.REQUEST_SENT
    r.on_response(pair.responder.process(request))
    assert r.state is RequesterState.RESPONSE_RECEIVED
    assert r.on_setup(pair.responder.setup(pair.prepared)).matched == (1,)
    assert r.state is RequesterState.DONE


def test_requester_refuses_steps_out_of_order() -> None:
    pair = make_psi_pair(["a", "b"], ["b"])
    r = pair.requester
    with pytest.raises(LocalProtocolError):
        r.request()  # before opened
    with pytest.raises(LocalProtocolError):
        r.on_response(b"")
    with pytest.raises(LocalProtocolError):
        r.on_setup(pair.prepared.setup)
    r.on_opened(pair.opened)
    with pytest.raises(LocalProtocolError):
        r.on_opened(pair.opened)  # twice
    with pytest.raises(LocalProtocolError):
        r.on_setup(pair.prepared.setup)  # before the response
    request = r.request()
    with pytest.raises(LocalProtocolError):
        r.request()  # twice
    response = pair.responder.process(request)
    r.on_response(response)
    with pytest.raises(LocalProtocolError):
        r.on_response(response)  # twice
    r.on_setup(pair.responder.setup(pair.prepared))
    with pytest.raises(LocalProtocolError):
        r.on_setup(pair.prepared.setup)  # after done


def test_local_protocol_errors_are_not_remote_ones() -> None:
    pair = make_psi_pair(["a"], ["a"])
    with pytest.raises(LocalProtocolError) as info:
        pair.requester.request()
    assert not isinstance(info.value, RemoteProtocolError)


def test_requester_refuses_duplicate_items() -> None:
    key = new_private_key(deterministic_random_bytes(1))
    with pytest.raises(LocalProtocolError, match="distinct"):
        PsiRequester(["a", "b", "a"], dataset="flagged", kinds={"email": 1}, mode=Mode.REVEAL,
                     key=key, engine=OpenMinedEngine())


def test_requester_refuses_an_invalid_key() -> None:
    with pytest.raises(LocalProtocolError):
        PsiRequester(["a"], dataset="flagged", kinds={"email": 1}, mode=Mode.REVEAL,
                     key=b"\x00" * 32, engine=OpenMinedEngine())


def test_requester_that_rejected_psi_opened_refuses_to_send_its_request() -> None:
    pair = make_psi_pair(["a", "b", "c"], ["a"])
    bad = PsiOpened(session_id="s", false_positive_rate=1e-9, max_set_size=1)
    with pytest.raises(RemoteProtocolError):
        pair.requester.on_opened(bad)
    with pytest.raises(LocalProtocolError):
        pair.requester.request()


def test_responder_transitions_follow_its_table() -> None:
    pair = make_psi_pair(["a", "b"], ["b"])
    s = pair.responder
    assert s.state is ResponderState.OPEN
    # The requester may fetch the filter before its request is processed.
    setup = s.setup(pair.prepared)
    assert s.state is ResponderState.OPEN and setup == pair.prepared.setup
    pair.requester.on_opened(pair.opened)
    s.process(pair.requester.request())
    assert s.state is ResponderState.PROCESSED
    s.setup(pair.prepared)  # and again afterwards
    assert s.state is ResponderState.PROCESSED
    s.close()
    assert s.state is ResponderState.CLOSED
    s.close()  # closing twice is harmless
    assert s.state is ResponderState.CLOSED


def test_responder_refuses_process_twice_and_steps_after_close() -> None:
    pair = make_psi_pair(["a", "b"], ["b"])
    pair.requester.on_opened(pair.opened)
    request = pair.requester.request()
    pair.responder.process(request)
    with pytest.raises(OutOfOrder):
        pair.responder.process(request)
    pair.responder.close()
    with pytest.raises(OutOfOrder):
        pair.responder.setup(pair.prepared)
    with pytest.raises(OutOfOrder):
        pair.responder.process(request)


def test_responder_refuses_process_after_close_without_processing() -> None:
    session = open_session(2)
    session.close()
    with pytest.raises(OutOfOrder):
        session.process(Request(reveal_intersection=True, encrypted_elements=valid_points(2)).SerializeToString())


def test_responder_refuses_a_filter_built_under_another_key() -> None:
    pair = make_psi_pair(["a"], ["a"])
    other = make_psi_pair(["a"], ["a"], seed=5)
    with pytest.raises(LocalProtocolError):
        pair.responder.setup(other.prepared)
    assert pair.responder.state is ResponderState.OPEN


def test_responder_refuses_a_set_above_its_limit() -> None:
    open_ = PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=11, mode=Mode.REVEAL)
    key = new_private_key(deterministic_random_bytes(3))
    with pytest.raises(RemoteProtocolError):
        PsiResponderSession(open_, key=key, max_set_size=10, engine=OpenMinedEngine())


# -- hostile requests (responder side) ----------------------------------------


def _request(elements: list[bytes], reveal: bool = True) -> bytes:
    return Request(reveal_intersection=reveal, encrypted_elements=elements).SerializeToString()


def test_responder_answers_a_well_formed_hand_built_request() -> None:
    # The baseline for the hostile cases below: three valid points pass.
    session = open_session(3)
    response = Response.FromString(session.process(_request(valid_points(3))))
    assert len(response.encrypted_elements) == 3


@pytest.mark.parametrize(
    "name, data",
    [
        ("garbage bytes", b"\xff\xff\xff\xff"),
        ("truncated message", b"\x08\x01\x12\x21\x02"),
        ("33-byte element that is not a point", _request([b"\x02" + b"\xff" * 32, b"\x03" + b"\x01" * 32, b"\x04" + b"\x00" * 32])),
        ("33-byte element with a bad prefix", _request([b"\x05" + b"\x01" * 32] * 1 + [b"\x06" + b"\x01" * 32, b"\x07" + b"\x01" * 32])),
        ("element of 32 bytes", _request([b"\x02" * 32, b"\x03" * 32, b"\x02" * 31 + b"\x01"])),
        ("element of 34 bytes", _request([b"\x02" * 34, b"\x03" * 34, b"\x02" * 33 + b"\x01"])),
        ("no elements", _request([])),
    ],
)
def test_responder_rejects_malformed_requests(name: str, data: bytes) -> None:
    session = open_session(3)
    with pytest.raises(RemoteProtocolError):
        session.process(data)


def test_responder_rejects_a_request_with_a_point_and_a_non_point() -> None:
    points = valid_points(2)
    session = open_session(3)
    with pytest.raises(RemoteProtocolError):
        session.process(_request(points + [b"\x02" + b"\xff" * 32]))


def test_responder_rejects_more_elements_than_announced() -> None:
    session = open_session(3)
    with pytest.raises(RemoteProtocolError):
        session.process(_request(valid_points(4)))


def test_responder_rejects_fewer_elements_than_announced() -> None:
    session = open_session(3)
    with pytest.raises(RemoteProtocolError, match="2 elements"):
        session.process(_request(valid_points(2)))


def test_responder_rejects_duplicate_elements() -> None:
    p = valid_points(2)
    session = open_session(3)
    with pytest.raises(RemoteProtocolError, match="duplicate"):
        session.process(_request([p[0], p[1], p[0]]))


@pytest.mark.parametrize("mode, flag", [(Mode.REVEAL, False), (Mode.COUNT, True)])
def test_responder_rejects_a_reveal_flag_that_differs_from_the_session(mode: Mode, flag: bool) -> None:
    session = open_session(3, mode)
    with pytest.raises(RemoteProtocolError, match="reveal"):
        session.process(_request(valid_points(3), reveal=flag))


def test_responder_rejects_requests_above_max_request_bytes() -> None:
    session = open_session(3)
    limit = session.max_request_bytes()
    honest = _request(valid_points(3))
    assert len(honest) <= limit  # an honest request always fits
    # Padded with an unknown field so that it would still parse: the size is what is refused.
    padded = honest + b"\x1a" + bytes([limit - len(honest)]) + b"\x00" * (limit - len(honest))
    assert len(padded) > limit
    with pytest.raises(RemoteProtocolError, match="larger"):
        session.process(padded)


def test_empty_session_accepts_only_an_empty_request() -> None:
    session = open_session(0)
    assert Response.FromString(session.process(_request([]))).encrypted_elements == []
    with pytest.raises(RemoteProtocolError):
        open_session(0).process(_request(valid_points(1)))


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=120))
def test_responder_fuzz_random_bytes_only_raise_remote_protocol_error(data: bytes) -> None:
    session = open_session(3)
    try:
        response = session.process(data)
    except RemoteProtocolError:
        return
    assert len(Response.FromString(response).encrypted_elements) == 3


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([b"\x02", b"\x03", b"\x00", b"\x04"]), st.binary(min_size=32, max_size=32)),
        min_size=3,
        max_size=3,
    ),
    st.booleans(),
)
def test_responder_fuzz_random_points_only_raise_remote_protocol_error(
    parts: list[tuple[bytes, bytes]], reveal: bool
) -> None:
    session = open_session(3, Mode.REVEAL if reveal else Mode.COUNT)
    try:
        response = session.process(_request([a + b for a, b in parts], reveal=reveal))
    except RemoteProtocolError:
        return
    assert len(Response.FromString(response).encrypted_elements) == 3


# -- hostile responses (requester side) ---------------------------------------


def test_requester_rejects_a_garbage_response() -> None:
    r = opened_requester(["a", "b"])
    r.request()
    with pytest.raises(RemoteProtocolError):
        r.on_response(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_requester_rejects_a_response_with_the_wrong_element_count(count: int) -> None:
    r = opened_requester(["a", "b"])
    r.request()
    with pytest.raises(RemoteProtocolError, match="elements"):
        r.on_response(Response(encrypted_elements=valid_points(count)).SerializeToString())


def test_requester_rejects_a_response_of_non_points_when_intersecting() -> None:
    pair = make_psi_pair(["a", "b"], ["a"])
    pair.requester.on_opened(pair.opened)
    pair.requester.request()
    pair.requester.on_response(Response(encrypted_elements=[b"\x02" + b"\xff" * 32, b"junk"]).SerializeToString())
    with pytest.raises(RemoteProtocolError):
        pair.requester.on_setup(pair.prepared.setup)


@pytest.mark.parametrize("mode", [Mode.REVEAL, Mode.COUNT])
@pytest.mark.parametrize("setup", [b"", b"\xff\xff\xff", b"\x12\x05ab"], ids=["no-filter", "garbage", "truncated"])
def test_requester_rejects_a_setup_without_a_valid_filter(mode: Mode, setup: bytes) -> None:
    pair = make_psi_pair(["a", "b"], ["a"], mode=mode)
    pair.requester.on_opened(pair.opened)
    pair.requester.on_response(pair.responder.process(pair.requester.request()))
    with pytest.raises(RemoteProtocolError):
        pair.requester.on_setup(setup)


@pytest.mark.parametrize("setup", [b"", b"\xff\xff\xff"], ids=["no-filter", "garbage"])
def test_requester_with_an_empty_set_still_checks_the_setup(setup: bytes) -> None:
    # With nothing to intersect, OpenMined is never called: the check must be ours.
    pair = make_psi_pair([], ["a"])
    pair.requester.on_opened(pair.opened)
    pair.requester.on_response(pair.responder.process(pair.requester.request()))
    with pytest.raises(RemoteProtocolError):
        pair.requester.on_setup(setup)


_HOSTILE_SETUP_SCRIPT = textwrap.dedent(
    """
    import random, sys
    from private_set_intersection.python import ServerSetup
    from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
    from psi_share.errors import RemoteProtocolError
    from psi_share.protocols.psi import Mode, PsiOpened, PsiRequester, PsiResponderSession

    rb = random.Random(0).randbytes
    engine = OpenMinedEngine()
    requester = PsiRequester(["a", "b"], dataset="flagged", kinds={"email": 1}, mode=Mode.REVEAL,
                             key=new_private_key(rb), engine=engine)
    responder = PsiResponderSession(requester.open, key=new_private_key(rb), max_set_size=10, engine=engine)
    requester.on_opened(PsiOpened(session_id="s", false_positive_rate=1e-9, max_set_size=10))
    requester.on_response(responder.process(requester.request()))
    setup = ServerSetup()
    exec(sys.argv[1])
    try:
        requester.on_setup(setup.SerializeToString())
    except RemoteProtocolError:
        print("REFUSED")
    """
)


@pytest.mark.parametrize(
    "build",
    [
        "setup.gcs.div = 3; setup.gcs.hash_range = 0; setup.gcs.bits = b'xx'",
        "setup.bloom_filter.num_hash_functions = 3; setup.bloom_filter.bits = b''",
    ],
    ids=["gcs-hash-range-0", "bloom-no-bits"],
)
def test_requester_survives_a_degenerate_filter(build: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _HOSTILE_SETUP_SCRIPT, build],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"requester process died with {proc.returncode}: {proc.stderr[-400:]}"
    assert "REFUSED" in proc.stdout


def _opened(**overrides: object) -> PsiOpened:
    fields: dict[str, object] = dict(session_id="s-1", false_positive_rate=1e-9, max_set_size=10)
    fields.update(overrides)
    return PsiOpened(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "opened, error",
    [
        (_opened(max_set_size=2), RemoteProtocolError),  # smaller than our 3 items
        (_opened(false_positive_rate=math.nan), RemoteProtocolError),
        (_opened(false_positive_rate=0.0), RemoteProtocolError),
        (_opened(false_positive_rate=1.0), RemoteProtocolError),
        (_opened(false_positive_rate=-1e-9), RemoteProtocolError),
        (_opened(false_positive_rate=math.inf), RemoteProtocolError),
        (_opened(session_id=""), RemoteProtocolError),
        (_opened(protocol_version=PROTOCOL_VERSION + 1), VersionMismatch),
        (_opened(protocol_version=0), VersionMismatch),
    ],
    ids=["max-set-size-too-small", "fpr-nan", "fpr-0", "fpr-1", "fpr-negative", "fpr-inf", "no-session-id",
         "version-newer", "version-0"],
)
def test_requester_rejects_a_bad_psi_opened(opened: PsiOpened, error: type[Exception]) -> None:
    pair = make_psi_pair(["a", "b", "c"], ["a"])
    with pytest.raises(error):
        pair.requester.on_opened(opened)


def test_requester_accepts_a_psi_opened_exactly_at_its_set_size() -> None:
    pair = make_psi_pair(["a", "b", "c"], ["a"])
    pair.requester.on_opened(_opened(max_set_size=3))
    assert pair.requester.opened is not None


# -- PsiOpen validation ----------------------------------------------------------


def test_psi_open_validation() -> None:
    good = PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=0, mode=Mode.COUNT)
    assert good.protocol_version == PROTOCOL_VERSION
    with pytest.raises(VersionMismatch):
        PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=1, mode=Mode.REVEAL, protocol_version=2)
    with pytest.raises(RemoteProtocolError):
        PsiOpen(dataset="", kinds={"email": 1}, set_size=1, mode=Mode.REVEAL)
    with pytest.raises(RemoteProtocolError):
        PsiOpen(dataset="flagged", kinds={}, set_size=1, mode=Mode.REVEAL)
    with pytest.raises(RemoteProtocolError):
        PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=-1, mode=Mode.REVEAL)


def test_requester_open_describes_its_set() -> None:
    pair = make_psi_pair(["a", "b"], ["a"], mode=Mode.COUNT)
    assert pair.requester.open.set_size == 2
    assert pair.requester.open.mode is Mode.COUNT
    assert dict(pair.requester.open.kinds) == {"email": 1}


# -- keys and setup parameters -----------------------------------------------------


def test_new_private_key_rejects_out_of_range_candidates() -> None:
    valid = (12345).to_bytes(32, "big")
    candidates = [b"\xff" * 32, b"\x00" * 32, P256_ORDER.to_bytes(32, "big"), valid]
    calls: list[int] = []

    def random_bytes(n: int) -> bytes:
        calls.append(n)
        return candidates[len(calls) - 1]

    assert new_private_key(random_bytes) == valid
    assert calls == [32, 32, 32, 32]


def test_new_private_key_accepts_the_largest_scalar() -> None:
    top = (P256_ORDER - 1).to_bytes(32, "big")
    assert new_private_key(lambda n: top) == top


def test_check_key() -> None:
    check_key((1).to_bytes(32, "big"))
    check_key((P256_ORDER - 1).to_bytes(32, "big"))
    for bad in (
        b"",
        b"\x00" * 32,
        P256_ORDER.to_bytes(32, "big"),
        b"\xff" * 32,
        (5).to_bytes(31, "big"),
        (5).to_bytes(33, "big"),
    ):
        with pytest.raises(LocalProtocolError):
            check_key(bad)


def test_prepare_setup_validates_its_parameters() -> None:
    engine = OpenMinedEngine()
    key = new_private_key(deterministic_random_bytes(4))
    for fpr in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(LocalProtocolError):
            prepare_setup(engine, key, ["a"], false_positive_rate=fpr, max_set_size=10)
    with pytest.raises(LocalProtocolError):
        prepare_setup(engine, key, ["a"], max_set_size=0)
    with pytest.raises(LocalProtocolError):
        prepare_setup(engine, b"\x00" * 32, ["a"], max_set_size=10)
    prepared = prepare_setup(engine, key, ["a", "b"], false_positive_rate=1e-6, max_set_size=10)
    assert (prepared.item_count, prepared.false_positive_rate, prepared.max_set_size) == (2, 1e-6, 10)
    assert ServerSetup.FromString(prepared.setup).WhichOneof("data_structure") == "gcs"
    assert "key=" not in repr(prepared) and key.hex() not in repr(prepared) and repr(key) not in repr(prepared)


def test_spans_cover_every_item_once() -> None:
    for n, workers in [(0, 4), (1, 4), (MIN_CHUNK_ITEMS * 2, 2), (MIN_CHUNK_ITEMS * 3 + 7, 2), (10_000, 3)]:
        spans = openmined._spans(n, workers)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a <= b for a, b in spans)
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
        assert len(spans) <= max(1, workers)
