"""Splitting messages into Chunk streams and reassembling them (transport/chunks.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psi_share.errors import RemoteProtocolError, VersionMismatch
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.transport.chunks import CHUNK_BYTES, from_chunks, to_chunks
from psi_share.v1 import node_pb2 as pb

SMALL = 64  # chunk size used in these tests, to keep them fast


def chunks(data: bytes, sid: str = "sess-1", size: int = SMALL) -> list[pb.Chunk]:
    return list(to_chunks(sid, data, size))


@pytest.mark.parametrize(
    "size, n_chunks",
    [(0, 1), (1, 1), (SMALL - 1, 1), (SMALL, 1), (SMALL + 1, 2), (int(3.5 * SMALL), 4), (10 * SMALL, 10)],
)
def test_round_trip(size: int, n_chunks: int) -> None:
    data = os.urandom(size)
    stream = chunks(data)
    assert len(stream) == n_chunks
    assert [c.index for c in stream] == list(range(n_chunks))
    assert [c.last for c in stream] == [False] * (n_chunks - 1) + [True]
    assert stream[0].total_bytes == size
    assert all(c.total_bytes == 0 for c in stream[1:])
    assert all(c.protocol_version == PROTOCOL_VERSION and c.session_id == "sess-1" for c in stream)
    assert all(len(c.data) <= SMALL for c in stream)
    assert from_chunks(iter(stream), max_bytes=size) == ("sess-1", data)
    assert from_chunks(stream, max_bytes=size, session_id="sess-1") == ("sess-1", data)


def test_default_chunk_size_round_trip() -> None:
    data = os.urandom(CHUNK_BYTES + 1)
    stream = list(to_chunks("s", data))
    assert [len(c.data) for c in stream] == [CHUNK_BYTES, 1]
    assert from_chunks(stream, max_bytes=len(data)) == ("s", data)
    exact = list(to_chunks("s", data[:CHUNK_BYTES]))
    assert len(exact) == 1 and exact[0].last


def test_chunks_survive_serialization() -> None:
    data = os.urandom(3 * SMALL + 5)
    wire = [c.SerializeToString() for c in chunks(data)]
    assert from_chunks((pb.Chunk.FromString(w) for w in wire), max_bytes=10_000) == ("sess-1", data)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=200))
def test_round_trip_property(data: bytes, size: int) -> None:
    stream = list(to_chunks("p", data, size))
    assert len(stream) == max(1, -(-len(data) // size))
    assert from_chunks(stream, max_bytes=len(data)) == ("p", data)


def test_to_chunks_is_lazy() -> None:
    it = to_chunks("s", b"x" * (5 * SMALL), SMALL)
    assert isinstance(it, Iterator)
    assert next(it).index == 0


# -- refusals ----------------------------------------------------------------------


def test_gap_is_refused() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    with pytest.raises(RemoteProtocolError, match="out of order where chunk 1 was expected"):
        from_chunks([stream[0], stream[2]], max_bytes=10_000)


def test_reordering_is_refused() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    with pytest.raises(RemoteProtocolError):
        from_chunks([stream[0], stream[2], stream[1]], max_bytes=10_000)
    with pytest.raises(RemoteProtocolError):
        from_chunks([stream[1], stream[0], stream[2]], max_bytes=10_000)


def test_repeated_chunk_is_refused() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    with pytest.raises(RemoteProtocolError):
        from_chunks([stream[0], stream[0], stream[1], stream[2]], max_bytes=10_000)


def test_session_change_mid_stream_is_refused() -> None:
    data = os.urandom(3 * SMALL)
    a, b = chunks(data, "sess-a"), chunks(data, "sess-b")
    with pytest.raises(RemoteProtocolError, match="another session"):
        from_chunks([a[0], b[1], a[2]], max_bytes=10_000)


def test_expected_session_is_enforced_from_the_first_chunk() -> None:
    with pytest.raises(RemoteProtocolError, match="another session"):
        from_chunks(chunks(b"abc", "sess-x"), max_bytes=100, session_id="sess-y")


def test_missing_last_chunk_is_refused() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    with pytest.raises(RemoteProtocolError, match="before its last chunk"):
        from_chunks(stream[:-1], max_bytes=10_000)
    with pytest.raises(RemoteProtocolError, match="before its last chunk"):
        from_chunks([], max_bytes=10_000)


def test_more_bytes_than_announced_are_refused() -> None:
    stream = chunks(os.urandom(2 * SMALL))
    stream[0].total_bytes = SMALL + 10
    with pytest.raises(RemoteProtocolError, match="more than the bytes announced"):
        from_chunks(stream, max_bytes=10_000)


def test_more_bytes_than_announced_are_refused_before_the_stream_ends() -> None:
    # A hostile stream that never ends: the receiver must stop as soon as it
    # holds more than announced, not buffer everything first.
    def endless() -> Iterator[pb.Chunk]:
        i = 0
        while True:
            yield pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id="s", index=i, last=False,
                           total_bytes=100 if i == 0 else 0, data=b"x" * SMALL)
            i += 1
            assert i < 100, "receiver kept reading past the announced size"

    with pytest.raises(RemoteProtocolError, match="more than the bytes announced"):
        from_chunks(endless(), max_bytes=10_000)


def test_fewer_bytes_than_announced_at_last_are_refused() -> None:
    stream = chunks(os.urandom(2 * SMALL))
    stream[0].total_bytes = 2 * SMALL + 1
    with pytest.raises(RemoteProtocolError, match="ended after .* fewer than announced"):
        from_chunks(stream, max_bytes=10_000)


def test_empty_message_announcing_bytes_is_refused() -> None:
    stream = chunks(b"")
    stream[0].total_bytes = 5
    with pytest.raises(RemoteProtocolError):
        from_chunks(stream, max_bytes=10_000)


def test_announced_total_above_max_bytes_is_refused_at_once() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        from_chunks(stream, max_bytes=3 * SMALL - 1)
    # exactly at the limit is fine
    assert from_chunks(stream, max_bytes=3 * SMALL)[1] == b"".join(c.data for c in stream)


def test_total_bytes_on_later_chunks_cannot_raise_the_limit() -> None:
    stream = chunks(os.urandom(3 * SMALL))
    stream[0].total_bytes = SMALL  # announce one chunk's worth
    stream[1].total_bytes = 3 * SMALL  # ...and try to raise it later
    with pytest.raises(RemoteProtocolError):
        from_chunks(stream, max_bytes=10_000)


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1])
@pytest.mark.parametrize("position", [0, 1])
def test_wrong_protocol_version_is_refused(version: int, position: int) -> None:
    stream = chunks(os.urandom(2 * SMALL))
    stream[position].protocol_version = version
    with pytest.raises(VersionMismatch):
        from_chunks(stream, max_bytes=10_000)
