"""``psi-share audit scan``: did any form of our identifiers leave the node?

For every identifier in the lab's own data files, the scan builds every form
that would betray it -- the raw text, the canonical text, the
domain-separated item, and the MD5, SHA-1, SHA-256 and SHA-512 digests of
each of those three as raw bytes, lowercase hex, uppercase hex and base64 --
and searches every kept transcript for all of them at once. It also checks
that every transcript parses as the type its log entry names and holds only
what that type may hold (:mod:`.messages`).

Search: each form is indexed by an 8-byte anchor (its first 8 bytes; the last
8 for items, which all share the ``psi-share/1/`` prefix) read as a 64-bit
integer, in one sorted array. Every 8-byte window of the transcripts is
looked up in that array with a vectorized binary search (numpy), so the cost
is a few passes over the data whatever the number of forms; only windows
that equal an anchor are resolved to their forms and compared in full.
Text forms shorter than 8 bytes (a short handle, an IPv4 address) are not
searched as text -- in binary data such short strings occur by chance --
but their items and digests, which are long, are.

Every sent entry's own text (the parameters: names, ids, status texts, which
the egress copies there from every message) is searched too, so text that
left the node is seen even when its transcript was not kept.

Messages travel as 1 MiB ``Chunk``s: a form could straddle two chunks, so
the bytes around each boundary of a chunk stream are searched as well, and
each stream is reassembled before its message is parsed.
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..identifiers import CanonicalizationContext, domain_separated_item
from ..store.importer import parse_data_file
from .log import iter_transcripts, load_entries
from .messages import check_chunk_envelope, check_message

ANCHOR = 8
PIECE = 1 << 20
BASES = ("raw", "canonical", "item")
ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
ENCODINGS = ("bytes", "hex", "HEX", "base64")
_FORMS_PER_BASE = 1 + len(ALGORITHMS) * len(ENCODINGS)
_CODE_BITS = 6  # _FORMS_PER_BASE * len(BASES) = 51 < 64
_FILTER_BITS = 27


@dataclass(frozen=True)
class Source:
    """One identifier of the lab's data, named by file, actor and kind (never by value)."""

    path: str
    actor_id: str
    kind: str
    bases: tuple[bytes, bytes, bytes]  # raw, canonical, item (UTF-8)

    @property
    def place(self) -> str:
        return f"{self.path} (actor {self.actor_id}, {self.kind})"


def load_sources(paths: Sequence[Path], ctx: CanonicalizationContext) -> list[Source]:
    """Every identifier of the given data files, parsed exactly as an import parses them."""
    sources = []
    for path in paths:
        rows, _ = parse_data_file(path, ctx)  # a malformed file fails here, by file and line
        for row in rows:
            item = domain_separated_item(row.kind, row.canonical, row.version)
            sources.append(Source(str(path), row.actor_id, row.kind, (row.raw.encode(), row.canonical.encode(), item.encode())))
    return sources


def form_name(code: int) -> str:
    base, form = divmod(code, _FORMS_PER_BASE)
    if form == 0:
        return f"{BASES[base]} text"
    algorithm, encoding = divmod(form - 1, len(ENCODINGS))
    return f"{ALGORITHMS[algorithm]}({BASES[base]}) as {ENCODINGS[encoding]}"


def make_form(base_value: bytes, base: int, form: int) -> bytes:
    if form == 0:
        return base_value
    algorithm, encoding = divmod(form - 1, len(ENCODINGS))
    digest = hashlib.new(ALGORITHMS[algorithm], base_value).digest()
    if encoding == 0:
        return digest
    if encoding == 1:
        return digest.hex().encode()
    if encoding == 2:
        return digest.hex().upper().encode()
    return base64.b64encode(digest).rstrip(b"=")


_HASHES = tuple(getattr(hashlib, name) for name in ALGORITHMS)
_HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_B64_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)


def _encode_anchors(digests: np.ndarray) -> list[np.ndarray]:
    """The first 8 bytes of each digest as raw bytes, hex, HEX and base64 (n x 8 arrays)."""
    raw = np.ascontiguousarray(digests[:, :ANCHOR])
    head = digests[:, :4]
    nibbles = np.empty((len(digests), 8), dtype=np.uint8)
    nibbles[:, 0::2] = head >> 4
    nibbles[:, 1::2] = head & 15
    six = digests[:, :6].astype(np.uint32)
    sextets = np.empty((len(digests), 8), dtype=np.uint8)
    for group in range(2):  # 3 bytes -> 4 base64 characters
        word = six[:, 3 * group] << 16 | six[:, 3 * group + 1] << 8 | six[:, 3 * group + 2]
        for k in range(4):
            sextets[:, 4 * group + k] = (word >> (18 - 6 * k)) & 63
    return [raw, _HEX_LOWER[nibbles], _HEX_UPPER[nibbles], _B64_ALPHABET[sextets]]


class NeedleIndex:
    """Every betraying form of every source, searchable in one pass.

    Only each form's 8-byte anchor is kept (a sorted uint64 array, with the
    packed source index and form code beside it); a form is rebuilt from its
    source when its anchor occurs in a transcript.
    """

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = sources
        self.skipped_short = 0
        self.max_length = 128  # hex SHA-512
        values: list[bytes] = []
        owners = array("Q")  # source index << _CODE_BITS | base * _FORMS_PER_BASE
        for index, source in enumerate(sources):
            seen: set[bytes] = set()
            for base, value in enumerate(source.bases):
                if value not in seen:  # raw == canonical is common: one set of needles is enough
                    seen.add(value)
                    values.append(value)
                    owners.append(index << _CODE_BITS | base * _FORMS_PER_BASE)
        owner = np.frombuffer(owners.tobytes(), dtype=np.uint64)
        anchors: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        # text forms: first 8 bytes (last 8 for items)
        long_text = [i for i, v in enumerate(values) if len(v) >= ANCHOR]
        self.skipped_short = len(values) - len(long_text)
        if values:
            self.max_length = max(self.max_length, max(len(v) for v in values))
        is_item = (owner & np.uint64((1 << _CODE_BITS) - 1)) == np.uint64(2 * _FORMS_PER_BASE)  # base 2: items
        text = b"".join(values[i][-ANCHOR:] if is_item[i] else values[i][:ANCHOR] for i in long_text)
        anchors.append(np.frombuffer(text, dtype="<u8"))
        codes.append(owner[long_text] if long_text else np.zeros(0, dtype=np.uint64))
        # digest forms: raw bytes, hex, HEX and base64 anchors computed from the digests' first bytes
        for algorithm, hash_ in enumerate(_HASHES):
            size = hash_().digest_size
            digests = np.frombuffer(b"".join([hash_(v).digest() for v in values]), dtype=np.uint8).reshape(-1, size)
            first = owner + np.uint64(1 + algorithm * len(ENCODINGS))
            for encoding, encoded in enumerate(_encode_anchors(digests)):
                anchors.append(encoded.copy().view("<u8").reshape(-1))
                codes.append(first + np.uint64(encoding))
        keys = np.concatenate(anchors) if anchors else np.zeros(0, dtype="<u8")
        order = np.argsort(keys)
        self._anchors = keys[order]
        self._codes = np.concatenate(codes)[order]
        # A 2^27-bit map of the anchors' top bits: most windows of a clean
        # transcript are ruled out by one lookup before any binary search.
        self._bitmap = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)
        top = (self._anchors >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)  # sorted, as the anchors are
        if len(top):
            top = top[np.concatenate(([True], top[1:] != top[:-1]))]
            cells = top >> 3
            starts = np.flatnonzero(np.concatenate(([True], cells[1:] != cells[:-1])))
            self._bitmap[cells[starts]] = np.bitwise_or.reduceat((1 << (top & 7)).astype(np.uint8), starts)

    def __len__(self) -> int:
        return len(self._anchors)

    def needle(self, packed: int) -> tuple[bytes, int, Source, str]:
        index, code = packed >> _CODE_BITS, packed & ((1 << _CODE_BITS) - 1)
        source = self.sources[index]
        base, form = divmod(code, _FORMS_PER_BASE)
        needle = make_form(source.bases[base], base, form)
        offset = len(needle) - ANCHOR if (base == 2 and form == 0) else 0
        name = form_name(code)
        if base == 0 and source.bases[0] == source.bases[1]:
            name = name.replace("raw", "raw = canonical")
        return needle, offset, source, name

    def find(self, haystack: bytes) -> list[tuple[int, Source, str, int]]:
        """(position, source, form, length) of every form found in ``haystack``."""
        if not len(self._anchors) or len(haystack) < ANCHOR:
            return []
        positions: list[np.ndarray] = []
        for start in range(0, len(haystack), PIECE):
            piece = haystack[start:start + PIECE + ANCHOR - 1]
            for offset in range(ANCHOR):
                count = (len(piece) - offset) // ANCHOR
                if count <= 0:
                    continue
                windows = np.frombuffer(piece, dtype="<u8", count=count, offset=offset)
                top = (windows >> np.uint64(64 - _FILTER_BITS)).astype(np.int64)
                maybe = np.nonzero((self._bitmap[top >> 3] >> (top & 7).astype(np.uint8)) & 1)[0]
                candidates = windows[maybe]
                slot = np.searchsorted(self._anchors, candidates)
                slot[slot == len(self._anchors)] = 0
                found = maybe[self._anchors[slot] == candidates]
                if len(found):
                    positions.append(start + offset + found.astype(np.int64) * ANCHOR)
        hits = []
        seen: set[tuple[int, int]] = set()
        for position in sorted(set(np.concatenate(positions).tolist())) if positions else ():
            key = int.from_bytes(haystack[position:position + ANCHOR], "little")
            lo = np.searchsorted(self._anchors, np.uint64(key), side="left")
            hi = np.searchsorted(self._anchors, np.uint64(key), side="right")
            for packed in self._codes[lo:hi].tolist():
                needle, offset, source, name = self.needle(packed)
                begin = position - offset
                if begin >= 0 and haystack[begin:begin + len(needle)] == needle and (begin, packed) not in seen:
                    seen.add((begin, packed))
                    hits.append((begin, source, name, len(needle)))
        return sorted(hits, key=lambda h: h[0])


@dataclass(frozen=True)
class Finding:
    place: str  # where in the audit log / transcripts
    what: str  # which form of which identifier, or which rule the message breaks


@dataclass
class ScanResult:
    identifiers: int = 0
    needles: int = 0
    skipped_short: int = 0
    transcripts: int = 0
    transcript_bytes: int = 0
    sent_without_transcript: int = 0
    entry_texts: int = 0  # sent entries whose recorded text (parameters) was searched
    messages_checked: int = 0
    hits: list[Finding] = field(default_factory=list)
    invalid: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.hits and not self.invalid


def _describe(entry: dict[str, Any]) -> str:
    session = str(entry.get("session", ""))[:12] or "-"
    return f"entry seq {entry.get('seq')} ({entry.get('protocol')}/{entry.get('step')} to {entry.get('peer')}, session {session})"


@dataclass
class _Unit:
    start: int
    end: int
    place: str


def scan_audit(directory: Path, data_files: Sequence[Path], ctx: CanonicalizationContext) -> ScanResult:
    result = ScanResult()
    index = NeedleIndex(load_sources(data_files, ctx))
    result.identifiers, result.needles, result.skipped_short = len(index.sources), len(index), index.skipped_short
    entries = load_entries(directory)
    result.sent_without_transcript = sum(1 for e in entries if e.get("type") == "sent" and "transcript" not in e)
    parts: list[bytes] = []
    units: list[_Unit] = []
    offset = 0

    def add_unit(data: bytes, place: str) -> None:
        nonlocal offset
        parts.append(data)
        units.append(_Unit(offset, offset + len(data), place))
        offset += len(data)

    margin = index.max_length - 1
    streams: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry, data in iter_transcripts(directory, entries):
        result.transcripts += 1
        result.transcript_bytes += len(data)
        add_unit(data, _describe(entry))
        step = str(entry.get("step", ""))
        if step.endswith("-chunk"):
            _chunk(entry, data, streams, result, add_unit, margin)
        else:
            result.messages_checked += 1
            for problem in check_message(str(entry.get("protocol")), step, data, entry.get("params") or {}):
                result.invalid.append(Finding(_describe(entry), problem))
    for key, stream in streams.items():
        result.invalid.append(Finding(stream["place"], "chunk stream never reached its last chunk (transcript incomplete or pruned)"))
    # The text an entry records itself (names, ids, status texts: the egress
    # copies every text field into the parameters), searched whether or not
    # the message's transcript was kept.
    for entry in entries:
        if entry.get("type") == "sent":
            texts = list(_strings(entry.get("params") or {}))
            if texts:
                result.entry_texts += 1
                add_unit("\n".join(texts).encode("utf-8", "replace"), f"{_describe(entry)}, its recorded text")
    haystack = b"".join(parts)
    starts = [u.start for u in units]
    for position, source, name, length in index.find(haystack):
        unit = units[bisect_right(starts, position) - 1]
        if position + length > unit.end:
            continue  # straddles two unrelated messages: never sent as one
        result.hits.append(Finding(f"{unit.place}, byte {position - unit.start}", f"{name} of {source.place}"))
    return result


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)


def _chunk(entry, data, streams, result, add_unit, margin) -> None:  # type: ignore[no-untyped-def]
    key = (str(entry.get("peer")), str(entry.get("session")), str(entry.get("step")))
    stream = streams.get(key)
    expected = 0 if stream is None else stream["next"]
    problems, chunk = check_chunk_envelope(data, str(entry.get("session", "")), expected)
    place = _describe(entry)
    for problem in problems:
        result.invalid.append(Finding(place, problem))
    if chunk is None:
        streams.pop(key, None)
        return
    if chunk.index == 0:
        stream = streams[key] = {"parts": [], "next": 0, "place": place, "total": chunk.total_bytes, "tail": b""}
    elif stream is None:
        return  # the stream's start was pruned: its message cannot be reassembled
    if stream["tail"]:
        add_unit(stream["tail"] + chunk.data[:margin], f"{place}, across the boundary with the chunk before")
    stream["parts"].append(chunk.data)
    stream["tail"] = chunk.data[-margin:]
    stream["next"] = chunk.index + 1
    if chunk.last:
        del streams[key]
        joined = b"".join(stream["parts"])
        result.messages_checked += 1
        if len(joined) != stream["total"]:
            result.invalid.append(Finding(stream["place"], f"chunks hold {len(joined)} bytes, the first announced {stream['total']}"))
        for problem in check_message(str(entry.get("protocol")), str(entry.get("step")), joined, entry.get("params") or {}):
            result.invalid.append(Finding(f"{stream['place']} (reassembled message)", problem))


def iter_findings(result: ScanResult) -> Iterable[tuple[str, Finding]]:
    for f in result.hits:
        yield "identifier", f
    for f in result.invalid:
        yield "message", f
