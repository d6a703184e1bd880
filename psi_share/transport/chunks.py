"""Splitting serialized OpenMined messages into ``Chunk`` messages and back.

gRPC refuses messages over 4 MB by default; a 1,000,000-item request is
about 35 MB. The bytes of one OpenMined message travel as a stream of
chunks; the receiver checks order, session and the announced length before
it buffers anything, so a hostile peer cannot make it hold more than it
agreed to.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from ..errors import LocalProtocolError, RemoteProtocolError, VersionMismatch
from ..protocols import PROTOCOL_VERSION
from ..v1 import node_pb2 as pb

CHUNK_BYTES = 1 << 20  # 1 MiB of payload per message, well under gRPC's 4 MB
# Every chunk but the last of a stream we receive carries at least this much
# (we send CHUNK_BYTES): a stream of n bytes is at most n / 4 KiB + 1 chunks.
MIN_CHUNK_BYTES = 1 << 12


def to_chunks(session_id: str, data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.Chunk]:
    """Yield ``data`` as chunks; an empty payload is one empty last chunk."""
    return stream_chunks(session_id, len(data), [data], chunk_bytes)


def stream_chunks(
    session_id: str, total: int, pieces: Iterable[bytes], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.Chunk]:
    """Yield a message of ``total`` bytes that is still being produced, as
    chunks cut exactly as :func:`to_chunks` cuts the whole message: each chunk
    leaves as soon as its bytes exist. Raises LocalProtocolError when the
    pieces add up to another length than announced (our bug, not the peer's)."""
    buffer = bytearray()
    index = sent = 0

    def chunk(data: bytes) -> pb.Chunk:
        nonlocal index, sent
        sent += len(data)
        out = pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=session_id, index=index, last=sent >= total,
                       total_bytes=total if index == 0 else 0, data=data)
        index += 1
        return out

    for piece in pieces:
        buffer += piece
        if sent + len(buffer) > total:
            raise LocalProtocolError(f"message grew past the {total} bytes announced")
        while len(buffer) >= chunk_bytes and sent + chunk_bytes < total:
            yield chunk(bytes(buffer[:chunk_bytes]))
            del buffer[:chunk_bytes]
    if sent + len(buffer) != total:
        raise LocalProtocolError(f"message ended after {sent + len(buffer)} of the {total} bytes announced")
    for start in range(0, max(len(buffer), 1), chunk_bytes):
        yield chunk(bytes(buffer[start : start + chunk_bytes]))


def from_chunks(
    chunks: Iterable[pb.Chunk], *, max_bytes: int, session_id: str | None = None, min_chunk_bytes: int = 1
) -> tuple[str, bytes]:
    """Reassemble one message; return (session id, bytes). The checks are
    :func:`chunk_payloads`'; without ``session_id`` the first chunk's is taken."""
    chunks = iter(chunks)
    if session_id is None:
        first = next(chunks, None)
        if first is None:
            raise RemoteProtocolError("stream ended before its last chunk")
        session_id, chunks = first.session_id, itertools.chain([first], chunks)
    data = b"".join(chunk_payloads(chunks, max_bytes=max_bytes, session_id=session_id, min_chunk_bytes=min_chunk_bytes))
    return session_id, data


def chunk_payloads(
    chunks: Iterable[pb.Chunk], *, max_bytes: int, session_id: str, min_chunk_bytes: int = 1
) -> Iterator[bytes]:
    """The payload of each chunk of one message, each checked before it is
    handed on, and the whole stream's shape at its end.

    Raises RemoteProtocolError on a version mismatch, a gap or reordering, a
    chunk of another session, a stream that ends without ``last``, more
    bytes than ``max_bytes`` or than announced, an empty chunk (only the one
    chunk of an empty message may be empty), or a chunk other than the last
    that carries fewer than ``min_chunk_bytes`` (so a stream of n bytes has
    at most n / min_chunk_bytes + 1 chunks: every chunk is an audit entry,
    and a peer must not turn a message into a flood of them). Texts never
    repeat the peer's numbers, only ours.
    """
    received = 0
    total = -1
    expected = 0
    for chunk in chunks:
        if chunk.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(f"a chunk's protocol version is not supported (this node speaks {PROTOCOL_VERSION})")
        if chunk.index != expected:
            raise RemoteProtocolError(f"a chunk arrived out of order where chunk {expected} was expected")
        if chunk.session_id != session_id:
            raise RemoteProtocolError("chunk belongs to another session")
        if expected == 0:
            total = chunk.total_bytes
            if total > max_bytes:
                raise RemoteProtocolError(f"the announced message length exceeds the limit of {max_bytes} bytes")
        size = len(chunk.data)
        if not size and not (expected == 0 and chunk.last and total == 0):
            raise RemoteProtocolError("empty chunk: only the single chunk of an empty message may be empty")
        if not chunk.last and size < min_chunk_bytes:
            raise RemoteProtocolError(f"a chunk other than the last carries fewer than {min_chunk_bytes} bytes")
        received += size
        if received > total:
            raise RemoteProtocolError("received more than the bytes announced")
        expected += 1
        if chunk.last and received != total:
            raise RemoteProtocolError(f"stream ended after {received} bytes, fewer than announced")
        yield chunk.data
        if chunk.last:
            return
    raise RemoteProtocolError("stream ended before its last chunk")
