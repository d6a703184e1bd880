"""OpenMined's Request and Response, read and written a piece at a time.

A 1M-item session's request and response are 35 MB each. Read whole, the
steps of a match run one after the other: the requester blinds everything,
then the responder raises everything to its key, then the requester
unblinds everything, each side idle while the other works. Streamed, the
three overlap: the responder processes the first elements while the
requester still blinds the last, and the requester unblinds what came back
while the responder still works. The bytes on the wire are exactly the
serialized messages OpenMined's own code writes and reads (so a foreign
client that sends or reads whole messages is served the same); only their
timing changes.

The wire format of both messages is protobuf's: ``Request`` is field 1,
``reveal_intersection`` (varint), and field 2, ``encrypted_elements``
(length-delimited, repeated); ``Response`` is field 1, the elements. A
parser here accepts the fields in any order, as protobuf's does, and skips
fields it does not know; it refuses an element that is not 33 bytes before
buffering it (a peer cannot make it hold more than one element's bytes
beyond what the chunk layer already bounded).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from ..crypto import prefetch
from ..crypto.buckets import PointLookup
from ..crypto.openmined import POINT_BYTES, OpenMinedEngine
from ..errors import RemoteProtocolError

REQUEST_REVEAL_FIELD = 1
REQUEST_ELEMENTS_FIELD = 2
RESPONSE_ELEMENTS_FIELD = 1
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _tag(field: int, wire_type: int) -> bytes:
    return bytes([field << 3 | wire_type])


def element_records(field: int, elements: list[bytes]) -> bytes:
    """``elements`` serialized as repeated field ``field``: what protobuf writes."""
    tag = _tag(field, _LENGTH) + bytes([POINT_BYTES])
    return b"".join(tag + e for e in elements)


def request_header(reveal: bool) -> bytes:
    """The serialized ``reveal_intersection`` (nothing when false, as proto3 writes it)."""
    return _tag(REQUEST_REVEAL_FIELD, _VARINT) + b"\x01" if reveal else b""


def message_bytes(elements: int, *, request: bool, reveal: bool) -> int:
    """The serialized size of a Request (with ``reveal``) or Response of ``elements`` points."""
    return elements * (POINT_BYTES + 2) + (len(request_header(reveal)) if request else 0)


class ElementParser:
    """Cuts the elements of one serialized Request or Response out of pieces.

    ``feed(piece)`` returns the elements completed by that piece, in order;
    :meth:`finish` checks the message ended between fields. ``what`` names
    the message in errors ("request", "response"); ``reveal`` is the last
    ``reveal_intersection`` value read (Request only).
    """

    def __init__(self, elements_field: int, what: str, *, reveal_field: int | None = None) -> None:
        self._elements_field = elements_field
        self._reveal_field = reveal_field
        self._what = what
        self._buffer = bytearray()
        self.reveal = False
        self.count = 0

    def feed(self, piece: bytes) -> list[bytes]:
        self._buffer += piece
        out: list[bytes] = []
        buffer, at, end = self._buffer, 0, len(self._buffer)
        record = POINT_BYTES + 2
        tag = _tag(self._elements_field, _LENGTH)[0]
        while at < end:
            # The common case, element after element: no varint decoding.
            if buffer[at] == tag and at + 1 < end and buffer[at + 1] == POINT_BYTES:
                if at + record > end:
                    break
                out.append(bytes(buffer[at + 2 : at + record]))
                at += record
                continue
            parsed = self._field(buffer, at, end)
            if parsed is None:
                break
            at = parsed
        del self._buffer[:at]
        self.count += len(out)
        return out

    def _field(self, buffer: bytearray, at: int, end: int) -> int | None:
        """Read one field other than a well-formed element at ``at``: the
        offset after it, or None when the piece ends inside it."""
        key = _varint(buffer, at, end)
        if key is None:
            return None
        value, at = key
        field, wire_type = value >> 3, value & 7
        if field == 0:
            raise RemoteProtocolError(f"peer's {self._what} is not a serialized message (field number 0)")
        if wire_type == _VARINT:
            number = _varint(buffer, at, end)
            if number is None:
                return None
            if field == self._reveal_field:
                self.reveal = bool(number[0])
            return number[1]
        if wire_type == _LENGTH:
            length = _varint(buffer, at, end)
            if length is None:
                return None
            size, at = length
            if field == self._elements_field:
                raise RemoteProtocolError(
                    f"peer's {self._what} holds an element that is not a compressed P-256 point"
                )
            return at + size if at + size <= end else None
        if wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            return at + size if at + size <= end else None
        raise RemoteProtocolError(f"peer's {self._what} is not a serialized message (wire type {wire_type})")

    def finish(self) -> None:
        if self._buffer:
            raise RemoteProtocolError(f"peer's {self._what} ends inside a field")


def _varint(buffer: bytearray, at: int, end: int) -> tuple[int, int] | None:
    """``(value, offset after it)``, or None when ``buffer[at:end]`` ends inside it."""
    value, shift = 0, 0
    while at < end:
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise RemoteProtocolError("a varint is longer than 10 bytes")
    return None


def batch_spans(items: int, batch_items: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each batch of a streamed message, in order."""
    return [(start, min(items, start + batch_items)) for start in range(0, items, max(1, batch_items))]


class StreamedExchange:
    """The requester's half of a streamed PSI exchange (reveal mode).

    :meth:`request_pieces` is the serialized Request, its batches blinded
    ahead of the wire on a thread of their own; :meth:`feed` takes the
    Response as it arrives, unblinds every ``batch_items`` of its elements
    (to ``H(x)^b``, with our key's inverse) and hands them to ``lookup``:
    looked up at once in the responder's filter checked before anything was
    sent (``FilterLookup``), or kept by bucket for a bucketed setup read
    after the response (``BucketLookup``). :meth:`finish` checks the whole
    response has come (exactly one element per item sent, else
    RemoteProtocolError); :meth:`found` is then the indices of our items
    that matched.
    """

    def __init__(
        self,
        engine: OpenMinedEngine,
        key: bytes,
        items: Sequence[str],
        lookup: PointLookup,
        batch_items: int,
    ) -> None:
        self._engine, self._key, self._items = engine, key, items
        self._lookup = lookup
        self._batch = max(1, batch_items)
        self._parser = ElementParser(RESPONSE_ELEMENTS_FIELD, "response")
        self._pending: list[bytes] = []
        self._looked_up = 0
        self.request_bytes = message_bytes(len(items), request=True, reveal=True)

    def request_pieces(self) -> Iterator[bytes]:
        blinded = (
            self._engine.blind_points(self._key, self._items[a:b], True)
            for a, b in batch_spans(len(self._items), self._batch)
        )
        yield request_header(True)
        for points in prefetch(blinded, depth=2):
            yield element_records(REQUEST_ELEMENTS_FIELD, points)

    def feed(self, piece: bytes) -> None:
        self._pending += self._parser.feed(piece)
        if self._looked_up + len(self._pending) > len(self._items):
            raise RemoteProtocolError(f"peer's response has more elements than the {len(self._items)} we sent")
        if len(self._pending) >= self._batch:
            self._look_up()

    def _look_up(self) -> None:
        self._lookup.add(self._looked_up, self._engine.unblind(self._key, self._pending))
        self._looked_up += len(self._pending)
        self._pending = []

    def finish(self) -> None:
        self._parser.finish()
        if self._pending:
            self._look_up()
        if self._looked_up != len(self._items):
            raise RemoteProtocolError(
                f"peer's response has {self._looked_up} elements, we sent {len(self._items)}"
            )

    def found(self) -> tuple[int, ...]:
        self.finish()
        return self._lookup.found()


def process_stream(
    engine: OpenMinedEngine, key: bytes, pieces: Iterable[bytes], *, expected: int, reveal: bool, batch_items: int
) -> Iterator[bytes]:
    """The responder's half: the serialized Response to a Request that
    arrives in ``pieces``, each batch of ``batch_items`` elements raised to
    ``key`` and sent on before the next is read (reveal: in request order);
    in count mode every element is kept until the end and the response sent
    sorted, as OpenMined's count mode answers.

    The request is checked as it is read: elements of exactly 33 bytes, no
    element twice, never more than ``expected`` (so a requester gets at
    most the elements it announced processed), exactly ``expected`` at the
    end, and a ``reveal_intersection`` that matches the session's mode.
    """
    parser = ElementParser(REQUEST_ELEMENTS_FIELD, "request", reveal_field=REQUEST_REVEAL_FIELD)
    seen: set[bytes] = set()
    pending: list[bytes] = []
    kept: list[bytes] = []

    def batch() -> list[bytes]:
        nonlocal pending
        out = engine.process_points(key, pending, reveal)
        pending = []
        return out

    for piece in prefetch(pieces, depth=8):
        for element in parser.feed(piece):
            if element in seen:
                raise RemoteProtocolError("request holds duplicate elements")
            seen.add(element)
            pending.append(element)
        if parser.count > expected:
            raise RemoteProtocolError(f"request has more elements than the {expected} the session announced")
        if len(pending) >= batch_items:
            if reveal:
                yield element_records(RESPONSE_ELEMENTS_FIELD, batch())
            else:
                kept += batch()
    parser.finish()
    if parser.count != expected:
        raise RemoteProtocolError(f"request has {parser.count} elements, session announced {expected}")
    if parser.reveal != reveal:
        raise RemoteProtocolError("request's reveal_intersection does not match the session's mode")
    if reveal:
        yield element_records(RESPONSE_ELEMENTS_FIELD, batch())
    else:
        kept += batch()
        kept.sort()  # hide which request position each element came from
        yield element_records(RESPONSE_ELEMENTS_FIELD, kept)
