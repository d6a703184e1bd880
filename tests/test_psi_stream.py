"""Streamed PSI (protocols/psi_stream.py, transport/chunks.py): the request
and the response read and written a piece at a time, over real OpenMined
crypto, against the plaintext intersection; hostile streams built by hand.

The bytes on the wire must be exactly the serialized messages (a foreign
client reads and writes them whole), whatever the batch size and wherever
the pieces are cut.
"""

from __future__ import annotations

import itertools
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from private_set_intersection.python import Request, Response

from helpers import make_psi_pair
from psi_share.crypto import prefetch
from psi_share.crypto.openmined import POINT_BYTES
from psi_share.errors import LocalProtocolError, RemoteProtocolError
from psi_share.protocols.psi import Mode, RequesterState
from psi_share.protocols.psi_stream import ElementParser, element_records, message_bytes, request_header
from psi_share.transport.chunks import chunk_payloads, stream_chunks, to_chunks
from test_psi_protocol import open_session, valid_points


def cut(data: bytes, rng: random.Random, most: int = 97) -> list[bytes]:
    """``data`` in pieces of random sizes (1 to ``most`` bytes; some empty)."""
    pieces, at = [], 0
    while at < len(data):
        size = rng.choice([0, 1, 2, rng.randint(1, most)])
        pieces.append(data[at : at + size])
        at += size
    return pieces


def honest_response(ours: list[str], theirs: list[str], batch: int):  # type: ignore[no-untyped-def]
    """A streamed session up to the responder's whole, honest response:
    ``(exchange, response, requester)``, the response not yet fed back."""
    pair = make_psi_pair(ours, theirs)
    pair.requester.on_opened(pair.opened)
    pair.requester.take_setup(pair.responder.setup(pair.prepared))
    exchange = pair.requester.stream(batch)
    return exchange, b"".join(pair.responder.process_stream(exchange.request_pieces())), pair.requester


def streamed_match(ours: list[str], theirs: list[str], batch: int, seed: int, **pair_args) -> tuple[int, ...]:
    """One streamed session in memory: both directions cut at random places."""
    rng = random.Random(seed)
    pair = make_psi_pair(ours, theirs, **pair_args)
    pair.requester.on_opened(pair.opened)
    pair.requester.take_setup(pair.responder.setup(pair.prepared))
    exchange = pair.requester.stream(batch)
    request = b"".join(exchange.request_pieces())
    assert len(request) == exchange.request_bytes
    assert len(Request.FromString(request).encrypted_elements) == len(ours)  # a real serialized Request
    replies = pair.responder.process_stream(cut(request, rng), batch_items=batch)
    response = b"".join(replies)
    assert len(response) == pair.responder.response_bytes()
    for piece in cut(response, rng):
        exchange.feed(piece)
    outcome = pair.requester.on_streamed(exchange)
    assert pair.requester.state is RequesterState.DONE and outcome.count == len(outcome.matched or ())
    return outcome.matched or ()


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_streamed_matches_equal_the_plaintext_intersection(data: st.DataObject) -> None:
    """Sizes around the batch size (one batch, several, a last partial one)
    and overlaps from none to all; the truth from Python sets."""
    batch = data.draw(st.sampled_from([1, 3, 7, 64]), label="batch")
    ours_n = data.draw(st.integers(1, 3 * batch + 2), label="ours")
    theirs_n = data.draw(st.integers(0, 40), label="theirs")
    shared = data.draw(st.integers(0, min(ours_n, theirs_n)), label="shared")
    ours = [f"item-{i}" for i in range(ours_n)]
    theirs = ours[ours_n - shared:] + [f"other-{i}" for i in range(theirs_n - shared)]
    want = tuple(i for i, item in enumerate(ours) if item in set(theirs))
    assert streamed_match(ours, theirs, batch, seed=data.draw(st.integers(0, 9))) == want


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_split_across_workers_give_the_same_answer(workers: int) -> None:
    ours = [f"x{i}" for i in range(300)]
    theirs = ours[::3] + [f"y{i}" for i in range(500)]
    want = tuple(range(0, 300, 3))
    with ThreadPoolExecutor(workers) as pool:
        assert streamed_match(ours, theirs, 50, 1, workers=workers, executor=pool) == want


def test_a_streamed_response_is_what_processing_the_whole_request_gives() -> None:
    """The responder's streamed answer, batch by batch, is byte for byte the
    Response OpenMined's own server writes for the whole request."""
    points = valid_points(23)
    session = open_session(23)
    whole = session._engine.process(session._key, Request(reveal_intersection=True, encrypted_elements=points), True)
    streamed = b"".join(session.process_stream([Request(reveal_intersection=True, encrypted_elements=points).SerializeToString()], batch_items=4))
    assert streamed == whole.SerializeToString()


def test_count_mode_is_answered_sorted_at_the_end_only() -> None:
    points = valid_points(20)
    session = open_session(20, Mode.COUNT)
    request = Request(reveal_intersection=False, encrypted_elements=points).SerializeToString()
    replies = list(session.process_stream(cut(request, random.Random(3)), batch_items=3))
    assert len(replies) == 1  # nothing leaves before the last element is in
    elements = list(Response.FromString(replies[0]).encrypted_elements)
    assert elements == sorted(elements) and len(elements) == 20


@pytest.mark.parametrize("order", ["reveal first", "reveal last", "unknown fields between"])
def test_the_parser_reads_fields_in_any_order(order: str) -> None:
    points = valid_points(5)
    body = element_records(2, points)
    if order == "reveal first":
        data = request_header(True) + body
    elif order == "reveal last":
        data = body + request_header(True)
    else:  # field 7 varint, field 9 bytes, field 11 fixed32: skipped as protobuf skips them
        data = body[:35] + b"\x38\x05" + b"\x4a\x03abc" + b"\x5d\x00\x00\x00\x00" + body[35:] + request_header(True)
    assert Request.FromString(data).encrypted_elements == points  # protobuf reads the same message
    for size in (1, 2, 34, 35, 36, len(data)):
        parser = ElementParser(2, "request", reveal_field=1)
        got = [e for i in range(0, len(data), size) for e in parser.feed(data[i : i + size])]
        parser.finish()
        assert got == points and parser.reveal


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x12\x20" + b"\x02" * 32, "not a compressed P-256 point"),  # a 32-byte element
        (b"\x12\x22" + b"\x02" * 34, "not a compressed P-256 point"),
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "wire type 3"),  # a group
        (b"\x12\x21\x02", "ends inside a field"),
        (b"\x12", "ends inside a field"),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
    ],
)
def test_the_parser_refuses_what_is_not_a_request(data: bytes, reason: str) -> None:
    parser = ElementParser(2, "request", reveal_field=1)
    with pytest.raises(RemoteProtocolError, match=reason):
        parser.feed(data)
        parser.finish()


def test_a_requester_never_gets_more_elements_processed_than_it_announced() -> None:
    """A cheating requester announces 10 and streams 12: the responder stops
    at the 11th, before processing it, and nothing of the batch in hand leaves."""
    points = valid_points(12)
    session = open_session(10)
    request = Request(reveal_intersection=True, encrypted_elements=points).SerializeToString()
    out = []
    with pytest.raises(RemoteProtocolError, match="more elements than the 10"):
        for piece in session.process_stream([request[i : i + 35] for i in range(0, len(request), 35)], batch_items=4):
            out.append(piece)
    assert sum(len(p) for p in out) == 8 * (POINT_BYTES + 2)  # two batches of 4, then refused


@pytest.mark.parametrize("case", ["duplicate", "fewer", "reveal flag"])
def test_a_bad_request_is_refused_when_it_shows(case: str) -> None:
    points = valid_points(6)
    if case == "duplicate":
        points = points[:3] + points[:1] + points[4:]
    session = open_session(7 if case == "fewer" else 6)
    data = Request(reveal_intersection=case != "reveal flag", encrypted_elements=points).SerializeToString()
    with pytest.raises(RemoteProtocolError, match={"duplicate": "duplicate", "fewer": "6 elements, session announced 7",
                                                   "reveal flag": "reveal_intersection"}[case]):
        b"".join(session.process_stream([data], batch_items=2))


@pytest.mark.parametrize("case", ["one more", "one fewer", "a short element"])
def test_the_requester_refuses_a_response_of_another_shape(case: str) -> None:
    ours = [f"item-{i}" for i in range(9)]
    exchange, response, requester = honest_response(ours, ours[:4], 4)
    if case == "one more":
        response += response[:35]
    elif case == "one fewer":
        response = response[:-35]
    else:
        response = response[:-35] + b"\x0a\x20" + response[-32:]
    with pytest.raises(RemoteProtocolError, match="more elements|has 8 elements, we sent 9|not a compressed"):
        for piece in cut(response, random.Random(5)):
            exchange.feed(piece)
        requester.on_streamed(exchange)


def test_count_sessions_are_not_streamed() -> None:
    pair = make_psi_pair(["a"], ["a"], mode=Mode.COUNT)
    pair.requester.on_opened(pair.opened)
    with pytest.raises(LocalProtocolError, match="only reveal"):
        pair.requester.take_setup(pair.responder.setup(pair.prepared))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 2000), st.randoms(use_true_random=False))
def test_streamed_chunks_are_cut_exactly_as_whole_ones(data: bytes, chunk_bytes: int, rng: random.Random) -> None:
    pieces = cut(data, rng, most=700)
    assert list(stream_chunks("s", len(data), pieces, chunk_bytes)) == list(to_chunks("s", data, chunk_bytes))
    assert b"".join(chunk_payloads(to_chunks("s", data, chunk_bytes), max_bytes=len(data), session_id="s")) == data


@pytest.mark.parametrize("pieces, total", [([b"abc", b"d"], 3), ([b"ab"], 3)])
def test_a_stream_of_another_length_than_announced_is_our_bug(pieces: list[bytes], total: int) -> None:
    with pytest.raises(LocalProtocolError, match="announced"):
        list(stream_chunks("s", total, pieces, 2))


def test_message_sizes_are_the_serialized_sizes() -> None:
    points = valid_points(3)
    for reveal in (True, False):
        assert message_bytes(3, request=True, reveal=reveal) == len(
            Request(reveal_intersection=reveal, encrypted_elements=points).SerializeToString())
    assert message_bytes(3, request=False, reveal=True) == len(Response(encrypted_elements=points).SerializeToString())


def test_prefetch_hands_on_items_errors_and_stops_its_producer() -> None:
    assert list(prefetch(range(100), 3)) == list(range(100))

    def failing():
        yield 1
        raise RemoteProtocolError("boom")

    got = prefetch(failing(), 2)
    assert next(got) == 1
    with pytest.raises(RemoteProtocolError, match="boom"):
        next(got)
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    early = prefetch(endless(), 2)
    assert next(early) == 0
    early.close()  # the consumer gives up: the producer stops within its poll interval
    time.sleep(0.5)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled <= 5


def test_a_response_point_off_the_curve_is_refused_not_crashed_on() -> None:
    """The requester unblinds the responder's points in this process: a
    point whose x is not on P-256 (well formed, prefix and length right) is
    the peer's error, raised before anything is learned."""
    from psi_share.crypto.ec import P256_P, _is_x_on_curve

    x = next(x for x in range(1, 100) if not _is_x_on_curve(x))
    ours = [f"item-{i}" for i in range(5)]
    exchange, response, requester = honest_response(ours, ours[:2], 8)
    forged = response[:-33] + b"\x02" + x.to_bytes(32, "big")
    assert x < P256_P
    with pytest.raises(RemoteProtocolError):
        exchange.feed(forged)
        requester.on_streamed(exchange)
