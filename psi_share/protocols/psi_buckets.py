"""A bucketed setup (``PsiBucketedSetup``) read a piece at a time, each
bucket checked as soon as it has arrived.

At 10M responder items the setup is 54 MB in 11 buckets; read whole, the
requester held the message, then every bucket's decoded hashes (over 1 GiB
for a 3,000-item requester). Here the chunks' payloads go through
:class:`BucketedSetupReader` as they arrive: it cuts the message into its
fields, and once a bucket's setup and its announced size are both in, checks
that bucket (:func:`~psi_share.crypto.buckets.check_bucket`, the single
setup's check for the bucket's terms) and hands its membership test to the
caller, then drops it. With :class:`~psi_share.crypto.buckets.BucketLookup`
(our unblinded points, waiting by bucket) the requester then holds its own
points, the chunk being read and one bucket: nothing that grows with the
responder's set.

The bytes on the wire are the serialized message as before (a foreign
responder's serializer and ours write the same), and it is read as protobuf
reads it: fields in any order, ``bucket_sizes`` packed or not (or both, in
several runs), the last value of a version field wins, unknown fields (and
known numbers with another wire type, which protobuf also treats as
unknown) skipped without being buffered. Bucket j is the j-th setup with the
j-th size, whichever comes first. Only groups (wire types 3 and 4), which
no serializer writes for this message, are refused where protobuf would skip
them.

Every check is the whole message's, in the same order: a malformed
message, then the versions, the number of sizes and of setups, the sizes'
sum, then the first bucket that fails its own check (a failing bucket is
remembered and the rest of the message still read, so the error is the one
a whole-message check gives; no bucket after it is checked). A result is
only ever taken once :meth:`BucketedSetupReader.finish` has passed.

Who learns what: reading in pieces changes nothing anyone learns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from ..crypto.buckets import MAX_BUCKETS, SETUP_BUCKETS_VERSION, CheckedBuckets, Membership, check_bucket, check_shape
from ..crypto.filter_check import SetupTerms
from ..errors import RemoteProtocolError
from ..v1 import node_pb2 as pb
from . import PROTOCOL_VERSION
from .psi_stream import _varint

PROTOCOL_VERSION_FIELD, BUCKETS_VERSION_FIELD, SIZES_FIELD, SETUPS_FIELD = 1, 2, 3, 4
_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_UINT32, _UINT64 = (1 << 32) - 1, (1 << 64) - 1
_MAX_TAG_BYTES = 5  # protobuf refuses a longer tag, and one above 2^32
_MAX_LENGTH = (1 << 31) - 1  # protobuf's limit on a length-delimited field

Field = tuple[int, int | bytes]  # (field number, value): versions and sizes as ints, a setup as bytes


def bucketed_setup_bytes(sizes: Iterable[int], setups: Iterable[bytes]) -> bytes:
    """The serialized PsiBucketedSetup of built buckets, byte for byte
    protobuf's: ``setups`` is the message's last field, so the header's
    serialization followed by each bucket's tag, length and bytes is the
    whole message's. No bucket is copied into a protobuf object (building the
    message there held about four copies of the filter at once, 25 bytes per
    item at the end of a streamed setup)."""
    header = pb.PsiBucketedSetup(protocol_version=PROTOCOL_VERSION, setup_buckets_version=SETUP_BUCKETS_VERSION,
                                 bucket_sizes=list(sizes)).SerializeToString()
    pieces = [header]
    for setup in setups:
        length, prefix = len(setup), bytearray([SETUPS_FIELD << 3 | _LENGTH])
        while length > 0x7F:
            prefix.append(length & 0x7F | 0x80)
            length >>= 7
        prefix.append(length)
        pieces += [bytes(prefix), setup]
    return b"".join(pieces)


def _malformed(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"peer's PsiBucketedSetup is not a valid psi_proto.PsiBucketedSetup: {what}")


class SetupFields:
    """Cuts a serialized PsiBucketedSetup into its fields as its bytes arrive.

    :meth:`feed` returns the fields a piece completed, in order: ``(1 or 2,
    version)``, ``(3, one bucket size)``, ``(4, one bucket's serialized
    setup)``. Holds at most one field's bytes beyond the piece (a bucket's
    setup while it arrives); unknown fields are dropped as they pass.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._field = 0  # the length-delimited field whose payload is awaited (sizes, setups), or 0
        self._length = 0
        self._skip = 0  # bytes of an unknown field still to drop

    def feed(self, piece: bytes) -> list[Field]:
        self._buffer += piece
        buffer, at, end = self._buffer, 0, len(self._buffer)
        out: list[Field] = []
        while True:
            if self._skip:
                dropped = min(self._skip, end - at)
                at += dropped
                self._skip -= dropped
                if self._skip:
                    break
            elif self._field:
                if end - at < self._length:
                    break
                with memoryview(buffer) as view:
                    payload = bytes(view[at : at + self._length])
                at += self._length
                out.extend([(SETUPS_FIELD, payload)] if self._field == SETUPS_FIELD else _packed(payload))
                self._field = 0
            elif at >= end:
                break
            else:
                after = self._record(buffer, at, end, out)
                if after is None:
                    break
                at = after
        del buffer[:at]
        return out

    def _record(self, buffer: bytearray, at: int, end: int, out: list[Field]) -> int | None:
        """Read one field's key (and its value, if short) at ``at``: the
        offset after what was read, or None when the bytes end inside it."""
        key = _read_varint(buffer, at, min(end, at + _MAX_TAG_BYTES))
        if key is None:
            if end - at >= _MAX_TAG_BYTES:
                raise _malformed("a field's tag is longer than 5 bytes")
            return None
        value, after = key
        if value > _UINT32:
            raise _malformed("a field's tag is above 2^32")
        field, wire_type = value >> 3, value & 7
        if field == 0:
            raise _malformed("field number 0")
        if wire_type == _VARINT:
            number = _read_varint(buffer, after, end)
            if number is None:
                return None
            if field in (PROTOCOL_VERSION_FIELD, BUCKETS_VERSION_FIELD):
                out.append((field, number[0] & _UINT32))  # uint32: protobuf keeps the low 32 bits
            elif field == SIZES_FIELD:
                out.append((field, number[0] & _UINT64))
            return number[1]
        if wire_type == _LENGTH:
            length = _read_varint(buffer, after, end)
            if length is None:
                return None
            size, after = length
            if size > _MAX_LENGTH:
                raise _malformed(f"field {field} is longer than {_MAX_LENGTH} bytes")
            if field in (SIZES_FIELD, SETUPS_FIELD):
                self._field, self._length = field, size
            else:
                self._skip = size
            return after
        if wire_type in (_FIXED64, _FIXED32):
            self._skip = 8 if wire_type == _FIXED64 else 4
            return after
        if wire_type in (_START_GROUP, _END_GROUP):
            raise _malformed(f"field {field} is a group")
        raise _malformed(f"wire type {wire_type}")

    def finish(self) -> None:
        if self._buffer or self._field or self._skip:
            raise _malformed("it ends inside a field")


def _read_varint(buffer: bytes | bytearray, at: int, end: int) -> tuple[int, int] | None:
    """``(value, offset after it)``, or None when the bytes end inside it."""
    try:
        return _varint(buffer, at, end)  # type: ignore[arg-type]
    except RemoteProtocolError as exc:  # longer than 10 bytes, as protobuf refuses too
        raise _malformed(str(exc)) from None


def _packed(payload: bytes) -> list[Field]:
    """The sizes of a packed ``bucket_sizes`` run."""
    out: list[Field] = []
    at, end = 0, len(payload)
    while at < end:
        number = _read_varint(payload, at, end)
        if number is None:
            raise _malformed("a packed bucket size ends inside its varint")
        out.append((SIZES_FIELD, number[0] & _UINT64))
        at = number[1]
    return out


class BucketedSetupReader:
    """Reads and checks one PsiBucketedSetup a piece at a time.

    ``terms``: the session's announced rate, queries and responder set
    size; ``buckets``: the announced bucket count. ``on_bucket(index,
    test)`` is called once per bucket that passed its check, in bucket
    order, with its membership test (which the caller keeps or uses and
    drops). :meth:`finish` raises whatever a whole-message check raises
    (module docstring), and returns each bucket's kind.
    """

    def __init__(self, terms: SetupTerms, buckets: int, on_bucket: Callable[[int, Membership], None]) -> None:
        if not 2 <= buckets <= MAX_BUCKETS:
            check_shape(0, 0, 0, items=terms.items, buckets=buckets)  # raises: the count is out of range
        self._terms, self._buckets, self._on_bucket = terms, buckets, on_bucket
        self._fields = SetupFields()
        self._versions = {PROTOCOL_VERSION_FIELD: 0, BUCKETS_VERSION_FIELD: 0}
        self._sizes: list[int] = []  # the first ``buckets`` sizes
        self._size_count = self._size_sum = self._setup_count = 0
        self._setups: deque[bytes] = deque()  # setups arrived before their size (an unusual field order)
        self._next = 0  # the next bucket to check
        self._kinds: list[str] = []
        self._failure: RemoteProtocolError | None = None

    def feed(self, piece: bytes) -> None:
        for field, value in self._fields.feed(piece):
            if field == SIZES_FIELD:
                assert isinstance(value, int)
                self._size_count += 1
                self._size_sum += value
                if self._size_count <= self._buckets:
                    self._sizes.append(value)
            elif field == SETUPS_FIELD:
                assert isinstance(value, bytes)
                self._setup_count += 1
                if self._checking():
                    self._setups.append(value)
            else:
                assert isinstance(value, int)
                self._versions[field] = value
            self._check_ready()

    def _checking(self) -> bool:
        """Whether buckets are still worth checking: not once one failed, nor
        once the sizes or setups outnumber the buckets or the sizes add up
        to more than announced (the whole message is refused for that)."""
        return (self._failure is None and self._size_sum <= self._terms.items
                and max(self._size_count, self._setup_count) <= self._buckets)

    def _check_ready(self) -> None:
        while self._setups and self._next < len(self._sizes):
            index, data = self._next, self._setups.popleft()
            self._next += 1
            if not self._checking():
                self._setups.clear()
                return
            try:
                kind, test = check_bucket(index, self._sizes[index], data, self._terms, self._buckets)
            except RemoteProtocolError as exc:
                self._failure = exc
                self._setups.clear()
                return
            self._kinds.append(kind)
            self._on_bucket(index, test)

    def finish(self) -> tuple[str, ...]:
        self._fields.finish()
        if (self._versions[PROTOCOL_VERSION_FIELD], self._versions[BUCKETS_VERSION_FIELD]) != (
            PROTOCOL_VERSION, SETUP_BUCKETS_VERSION,
        ):
            raise RemoteProtocolError("peer's PsiBucketedSetup carries another version than the session's")
        check_shape(self._size_count, self._setup_count, self._size_sum, items=self._terms.items, buckets=self._buckets)
        if self._failure is not None:
            raise self._failure
        return tuple(self._kinds)


def read_buckets(pieces: Iterable[bytes], terms: SetupTerms, buckets: int,
                 on_bucket: Callable[[int, Membership], None]) -> tuple[str, ...]:
    """Read, check and hand on every bucket of the setup in ``pieces``
    (:class:`BucketedSetupReader`); each bucket's kind."""
    reader = BucketedSetupReader(terms, buckets, on_bucket)
    for piece in pieces:
        reader.feed(piece)
    return reader.finish()


def keep_buckets(pieces: Iterable[bytes], terms: SetupTerms, buckets: int) -> CheckedBuckets:
    """Every bucket checked and kept as its compact membership test (for a
    setup read before our points exist: 8 bytes per responder item of a GCS)."""
    tests: list[Membership] = []
    kinds = read_buckets(pieces, terms, buckets, lambda index, test: tests.append(test))
    return CheckedBuckets(tuple(tests), kinds)
