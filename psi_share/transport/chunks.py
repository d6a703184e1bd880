"""Splitting serialized OpenMined messages into ``Chunk`` messages and back.

gRPC refuses messages over 4 MB by default; a 1,000,000-item request is
about 35 MB. The bytes of one OpenMined message travel as a stream of
chunks; the receiver checks order, session and the announced length before
it buffers anything, so a hostile peer cannot make it hold more than it
agreed to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..errors import RemoteProtocolError, VersionMismatch
from ..protocols import PROTOCOL_VERSION
from ..v1 import node_pb2 as pb

CHUNK_BYTES = 1 << 20  # 1 MiB of payload per message, well under gRPC's 4 MB
# Every chunk but the last of a stream we receive carries at least this much
# (we send CHUNK_BYTES): a stream of n bytes is at most n / 4 KiB + 1 chunks.
MIN_CHUNK_BYTES = 1 << 12


def to_chunks(session_id: str, data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.Chunk]:
    """Yield ``data`` as chunks; an empty payload is one empty last chunk."""
    total = len(data)
    view = memoryview(data)
    index = 0
    for start in range(0, max(total, 1), chunk_bytes):
        end = min(start + chunk_bytes, total)
        yield pb.Chunk(
            protocol_version=PROTOCOL_VERSION,
            session_id=session_id,
            index=index,
            last=end >= total,
            total_bytes=total if index == 0 else 0,
            data=bytes(view[start:end]),
        )
        index += 1


def from_chunks(
    chunks: Iterable[pb.Chunk], *, max_bytes: int, session_id: str | None = None, min_chunk_bytes: int = 1
) -> tuple[str, bytes]:
    """Reassemble one message; return (session id, bytes).

    Raises RemoteProtocolError on a version mismatch, a gap or reordering, a
    session change mid-stream, a stream that ends without ``last``, more
    bytes than ``max_bytes`` or than announced, an empty chunk (only the one
    chunk of an empty message may be empty), or a chunk other than the last
    that carries fewer than ``min_chunk_bytes`` (so a stream of n bytes has
    at most n / min_chunk_bytes + 1 chunks: every chunk is an audit entry,
    and a peer must not turn a message into a flood of them). Texts never
    repeat the peer's numbers, only ours.
    """
    parts: list[bytes] = []
    received = 0
    total = -1
    sid = session_id
    expected = 0
    for chunk in chunks:
        if chunk.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(f"a chunk's protocol version is not supported (this node speaks {PROTOCOL_VERSION})")
        if chunk.index != expected:
            raise RemoteProtocolError(f"a chunk arrived out of order where chunk {expected} was expected")
        if sid is None:
            sid = chunk.session_id
        elif chunk.session_id != sid:
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
        parts.append(chunk.data)
        expected += 1
        if chunk.last:
            if received != total:
                raise RemoteProtocolError(f"stream ended after {received} bytes, fewer than announced")
            return sid or "", b"".join(parts)
    raise RemoteProtocolError("stream ended before its last chunk")
