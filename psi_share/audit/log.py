"""The audit log: append-only, hash-chained, with signed checkpoints.

Layout (``HOME/audit/``, apart from the SQLite store)::

    log.jsonl            one entry per line, each committing to the one before
    checkpoint.json      a copy of the latest checkpoint entry (signed)
    audit_key.pub        the audit public key (raw Ed25519, hex), for verifiers
    transcripts/seg-NNNNNNNN.bin   exact bytes sent, when transcripts are on

Entry hashing (what an independent verifier reimplements)
--------------------------------------------------------
An entry is a JSON object whose values are strings, integers, booleans,
null, lists and objects -- never floats (a float such as a false-positive
rate is written as its decimal text). Its ``hash`` is the SHA-256 (hex) of
the *canonical JSON* of the entry without the ``hash`` key: keys sorted,
separators ``,`` and ``:`` without spaces, non-ASCII escaped as ``\\uXXXX``.
``seq`` counts entries from 0; ``prev`` is the previous entry's ``hash``
(64 zeros for entry 0). Editing, deleting, inserting or reordering an entry
breaks ``seq``, ``prev`` or ``hash`` at that entry.

A checkpoint entry (``type = "checkpoint"``) carries ``count`` (= its own
``seq``: the number of entries before it), ``head`` (= its ``prev``), the
audit public key and an Ed25519 signature over::

    psi-share audit checkpoint v1\\nnode=<node>\\ncount=<count>\\nhead=<head>\\n

Someone who rewrites the log and recomputes every hash cannot forge the
signature, so every entry up to the last checkpoint is protected by it.
Entries *after* the last checkpoint are protected only by the chain: they can
be cut off or rewritten by someone with write access to the folder. Copying
``psi-share audit head`` (count and head hash) somewhere the node's operators
cannot edit -- a ticket, a mail to compliance, a peer -- closes that gap:
``audit verify --expect-head COUNT:HASH`` then proves the log still holds
exactly that prefix. ``checkpoint.json`` catches truncation below the last
checkpoint, as long as it is not itself replaced by an older copy.

Appends are serialized by a thread lock and an ``flock`` on the log (the CLI
and ``serve`` may append from two processes) and are ``fsync``-ed before
:meth:`AuditLog.append` returns, so a message is on disk in the log before
its bytes can reach the wire.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import PsiShareError

LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
PUBLIC_KEY_FILE = "audit_key.pub"
TRANSCRIPTS_DIR = "transcripts"
GENESIS_PREV = "0" * 64
FORMAT_VERSION = 1
ENTRY_TYPES = frozenset({"genesis", "sent", "received", "disclosure", "checkpoint", "prune", "recovered"})
_SEGMENT_PREFIX = "seg-"
_TAIL_READ = 1 << 16


class AuditError(PsiShareError):
    """The audit log cannot be opened or written."""


def plain(value: Any) -> Any:
    """``value`` with floats turned into text, so it hashes the same everywhere."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def checkpoint_message(node: str, count: int, head: str) -> bytes:
    return f"psi-share audit checkpoint v1\nnode={node}\ncount={count}\nhead={head}\n".encode()


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_public_key_hex(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError as exc:
        raise AuditError(f"not a raw Ed25519 public key in hex: {exc}") from None


@dataclass
class _Tail:
    seq: int  # seq the next entry gets
    head: str  # hash of the last entry
    size: int  # byte size of log.jsonl after the last entry
    since_checkpoint: int


class AuditLog:
    """One node's audit log, open for appending.

    ``checkpoint_every`` entries (and at :meth:`close`) a signed checkpoint
    is appended. ``transcript_max_bytes`` bounds the transcript segments
    kept; older segments are pruned and the pruning is itself an entry.
    """

    def __init__(
        self,
        directory: Path,
        *,
        node: str,
        key: Ed25519PrivateKey,
        checkpoint_every: int = 1000,
        transcript_max_bytes: int = 1 << 30,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.node = node
        self._key = key
        self.public_key_hex = public_key_hex(key.public_key())
        self.checkpoint_every = checkpoint_every
        self.transcript_max_bytes = transcript_max_bytes
        self._segment_bytes = max(1 << 16, min(64 << 20, transcript_max_bytes // 4))
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRANSCRIPTS_DIR).mkdir(exist_ok=True)
        self._write_public_key()
        self.path = directory / LOG_FILE
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        if created:
            _fsync_dir(directory)  # the new file's name must survive a crash as well as its bytes
        self._closed = False
        with self._locked():
            if self._tail.seq == 0:
                self._append_locked({"type": "genesis", "node": node, "format": FORMAT_VERSION, "key": self.public_key_hex})

    # -- public API -------------------------------------------------------

    def append(self, entry_type: str, fields: Mapping[str, Any], transcript: bytes | None = None) -> dict[str, Any]:
        """Append one entry (and its transcript bytes) durably; return it."""
        if entry_type not in ENTRY_TYPES or entry_type in ("genesis", "checkpoint"):
            raise AuditError(f"cannot append an entry of type {entry_type!r}")
        with self._locked():
            body = dict(plain(fields))
            if transcript is not None:
                body["transcript"] = self._write_transcript(transcript)
            entry = self._append_locked({"type": entry_type, **body})
            if self.checkpoint_every and self._tail.since_checkpoint >= self.checkpoint_every:
                self._checkpoint_locked()
            return entry

    def checkpoint(self) -> dict[str, Any] | None:
        """Append a signed checkpoint unless the last entry already is one."""
        with self._locked():
            if self._tail.since_checkpoint == 0:
                return None
            return self._checkpoint_locked()

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last entry)."""
        with self._locked():
            return self._tail.seq, self._tail.head

    def close(self) -> None:
        if self._closed:
            return
        self.checkpoint()
        with self._lock:
            self._closed = True
            os.close(self._fd)

    # -- internals --------------------------------------------------------

    class _Guard:
        def __init__(self, log: AuditLog) -> None:
            self.log = log

        def __enter__(self) -> None:
            self.log._lock.acquire()
            try:
                if self.log._closed:
                    raise AuditError("the audit log is closed")
                fcntl.flock(self.log._fd, fcntl.LOCK_EX)
                self.log._tail = self.log._read_tail()
            except BaseException:
                self.log._lock.release()
                raise

        def __exit__(self, *exc: object) -> None:
            try:
                fcntl.flock(self.log._fd, fcntl.LOCK_UN)
            finally:
                self.log._lock.release()

    def _locked(self) -> AuditLog._Guard:
        return AuditLog._Guard(self)

    def _read_tail(self) -> _Tail:
        """The last entry, re-read when another process appended since."""
        size = os.fstat(self._fd).st_size
        cached: _Tail | None = getattr(self, "_tail_cache", None)
        if cached is not None and cached.size == size:
            return cached
        if size == 0:
            tail = _Tail(0, GENESIS_PREV, 0, 0)
        else:
            start = max(0, size - _TAIL_READ)
            data = os.pread(self._fd, size - start, start)
            if not data.endswith(b"\n"):
                tail = self._recover_torn(data, start, size)
            else:
                lines = data[:-1].split(b"\n")
                if start > 0:
                    lines = lines[1:]
                if not lines:
                    raise AuditError(f"{self.path}: last entry is longer than {_TAIL_READ} bytes")
                try:
                    last = json.loads(lines[-1])
                    tail = _Tail(last["seq"] + 1, last["hash"], size, self._since_checkpoint(lines))
                except (ValueError, KeyError, TypeError):
                    raise AuditError(
                        f"{self.path}: the last entry is unreadable; run 'psi-share audit verify' "
                        "(nothing is appended to a damaged log)"
                    ) from None
        self._tail_cache = tail
        return tail

    @staticmethod
    def _since_checkpoint(lines: list[bytes]) -> int:
        for n, line in enumerate(reversed(lines)):
            if b'"type":"checkpoint"' in line:
                return n
        return len(lines)

    def _recover_torn(self, data: bytes, start: int, size: int) -> _Tail:
        """A crash mid-write left a partial last line: cut it and say so."""
        cut = data.rfind(b"\n")
        torn = data[cut + 1:]
        keep = start + cut + 1
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        self._tail_cache = None
        tail = self._read_tail()
        self._tail = tail
        self._append_locked({
            "type": "recovered", "torn_bytes": len(torn), "torn_sha256": hashlib.sha256(torn).hexdigest(),
        })
        return self._tail

    def _append_locked(self, body: dict[str, Any]) -> dict[str, Any]:
        tail = self._tail
        entry = {"seq": tail.seq, "prev": tail.head, "time_ns": self._clock_ns(), **body}
        entry["hash"] = entry_hash(entry)
        line = canonical_json(entry) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise AuditError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        since = 0 if body["type"] == "checkpoint" else tail.since_checkpoint + 1
        self._tail = self._tail_cache = _Tail(tail.seq + 1, entry["hash"], tail.size + len(line), since)
        return entry

    def _checkpoint_locked(self) -> dict[str, Any]:
        count, head = self._tail.seq, self._tail.head
        signature = self._key.sign(checkpoint_message(self.node, count, head))
        entry = self._append_locked({
            "type": "checkpoint", "node": self.node, "count": count, "head": head,
            "key": self.public_key_hex, "sig": signature.hex(),
        })
        tmp = self.directory / (CHECKPOINT_FILE + ".tmp")
        tmp.write_bytes(canonical_json(entry) + b"\n")
        os.replace(tmp, self.directory / CHECKPOINT_FILE)
        return entry

    def _write_public_key(self) -> None:
        path = self.directory / PUBLIC_KEY_FILE
        text = self.public_key_hex + "\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    # -- transcripts ------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted((self.directory / TRANSCRIPTS_DIR).glob(f"{_SEGMENT_PREFIX}*.bin"))

    def _write_transcript(self, data: bytes) -> dict[str, Any]:
        segments = self._segments()
        if segments and segments[-1].stat().st_size + len(data) <= self._segment_bytes:
            segment = segments[-1]
        else:
            number = int(segments[-1].stem[len(_SEGMENT_PREFIX):]) + 1 if segments else 1
            segment = self.directory / TRANSCRIPTS_DIR / f"{_SEGMENT_PREFIX}{number:08d}.bin"
            segments.append(segment)
            self._prune_locked(segments, incoming=len(data))
        created = not segment.exists()
        fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            offset = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(segment.parent)
        return {"segment": segment.name, "offset": offset}

    def _prune_locked(self, segments: list[Path], incoming: int) -> None:
        """Drop the oldest finished segments while over the retention bound."""
        sizes = {s: s.stat().st_size if s.exists() else 0 for s in segments}
        total = sum(sizes.values()) + incoming
        dropped: list[Path] = []
        for segment in segments[:-1]:  # never the segment about to be written
            if total <= self.transcript_max_bytes:
                break
            dropped.append(segment)
            total -= sizes[segment]
        if not dropped:
            return
        # The entry is written first: a crash after it leaves a segment that
        # the log already calls pruned, which verify accepts.
        self._append_locked({
            "type": "prune", "segments": [s.name for s in dropped],
            "bytes": sum(sizes[s] for s in dropped), "retention_bytes": self.transcript_max_bytes,
        })
        for segment in dropped:
            segment.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading and verifying ----------------------------------------------------


def read_entries(directory: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line without newline); the last may be torn."""
    path = directory / LOG_FILE
    if not path.exists():
        raise AuditError(f"{directory} holds no audit log ({LOG_FILE})")
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            yield number, line


def load_entries(directory: Path) -> list[dict[str, Any]]:
    """Every parseable entry, in order (for scan and report; verify first)."""
    out = []
    for _, line in read_entries(directory):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass
class VerifyResult:
    entries: int = 0
    checkpoints: int = 0
    last_checkpoint_count: int = -1
    head: str = GENESIS_PREV
    problems: list[str] = field(default_factory=list)
    first_bad: str = ""  # "line N (seq S)" of the first entry that fails
    uncovered: int = 0  # entries after the last checkpoint
    transcripts_checked: int = 0
    transcripts_pruned: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(
    directory: Path,
    public_key: Ed25519PublicKey,
    *,
    node: str | None = None,
    expect_head: tuple[int, str] | None = None,
    check_transcripts: bool = True,
) -> VerifyResult:
    """Check chain, signatures, checkpoint file and transcripts.

    Stops the chain check at the first bad entry (everything after it would
    only repeat the damage) and names it in ``first_bad``.
    """
    result = VerifyResult()
    trusted = public_key_hex(public_key)
    prev = GENESIS_PREV
    hashes: list[str] = []
    transcripts: list[tuple[int, dict[str, Any], str, int]] = []
    pruned: set[str] = set()

    def bad(where: str, why: str) -> None:
        if not result.first_bad:
            result.first_bad = where
        result.problems.append(f"{where}: {why}")

    for number, raw in read_entries(directory):
        where = f"line {number} (seq {number - 1})"
        if not raw.endswith(b"\n"):
            bad(where, "entry is cut off (the log was truncated mid-entry)")
            break
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            bad(where, "not a JSON entry")
            break
        seq = entry.get("seq")
        if seq != number - 1:
            bad(where, f"seq is {seq!r}, expected {number - 1} (an entry was deleted, inserted or moved)")
            break
        if entry.get("prev") != prev:
            bad(where, "prev does not match the previous entry's hash (an entry before it was deleted, inserted or moved)")
            break
        if entry.get("hash") != entry_hash(entry):
            bad(where, "hash does not match the entry's content (the entry was edited)")
            break
        kind = entry.get("type")
        if kind not in ENTRY_TYPES:
            bad(where, f"unknown entry type {kind!r}")
            break
        if seq == 0 and kind != "genesis":
            bad(where, "the first entry is not the genesis entry")
            break
        if kind == "genesis" and node is not None and entry.get("node") != node:
            bad(where, f"log belongs to node {entry.get('node')!r}, not {node!r}")
            break
        if kind == "checkpoint":
            why = _check_checkpoint(entry, trusted)
            if why:
                bad(where, why)
                break
            result.checkpoints += 1
            result.last_checkpoint_count = seq
        if kind == "prune":
            pruned.update(entry.get("segments", []))
        if "transcript" in entry:
            t = entry["transcript"]
            transcripts.append((number, t, entry.get("sha256", ""), int(entry.get("bytes", 0))))
        prev = entry["hash"]
        hashes.append(prev)
        result.entries += 1
    result.head = prev
    if result.last_checkpoint_count >= 0:
        result.uncovered = result.entries - result.last_checkpoint_count - 1
    else:
        result.uncovered = result.entries
    _check_checkpoint_file(directory, hashes, result, bad)
    if expect_head is not None:
        count, head = expect_head
        if result.entries < count:
            bad("log", f"holds {result.entries} entries, fewer than the {count} of the exported head (truncated)")
        elif hashes[count - 1] != head if count else head != GENESIS_PREV:
            bad(f"line {count} (seq {count - 1})", "hash differs from the exported head (the log was rewritten)")
    if check_transcripts and not result.first_bad:
        for number, t, sha, length in transcripts:
            segment = directory / TRANSCRIPTS_DIR / str(t.get("segment", ""))
            if t.get("segment") in pruned:
                result.transcripts_pruned += 1
                continue
            data = _read_segment(segment, int(t.get("offset", 0)), length)
            if data is None or hashlib.sha256(data).hexdigest() != sha:
                bad(f"line {number} (seq {number - 1})", f"transcript bytes in {segment.name} are missing or differ from the logged SHA-256")
            else:
                result.transcripts_checked += 1
    return result


def _check_checkpoint(entry: Mapping[str, Any], trusted: str) -> str:
    if entry.get("count") != entry.get("seq") or entry.get("head") != entry.get("prev"):
        return "checkpoint's count/head do not state its own position"
    if entry.get("key") != trusted:
        return "checkpoint is signed with another key than the audit key being trusted"
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["key"]))
        key.verify(bytes.fromhex(entry["sig"]), checkpoint_message(str(entry["node"]), entry["count"], entry["head"]))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return "checkpoint signature does not verify (an entry at or before it was changed)"
    return ""


def _check_checkpoint_file(directory: Path, hashes: list[str], result: VerifyResult, bad) -> None:  # type: ignore[no-untyped-def]
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_bytes())
        seq = int(saved["seq"])
        saved_hash = saved["hash"]
    except (ValueError, KeyError, TypeError):
        bad(CHECKPOINT_FILE, "unreadable")
        return
    if seq >= len(hashes):
        if not result.first_bad:
            bad("log", f"ends after {len(hashes)} entries but {CHECKPOINT_FILE} states a signed checkpoint at seq {seq} (entries were cut off)")
        return
    if hashes[seq] != saved_hash:
        bad(f"line {seq + 1} (seq {seq})", f"differs from the signed checkpoint saved in {CHECKPOINT_FILE}")


def _read_segment(path: Path, offset: int, length: int) -> bytes | None:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
    except OSError:
        return None
    return data if len(data) == length else None


def iter_transcripts(directory: Path, entries: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(entry, exact bytes) for every entry whose transcript is still kept."""
    for entry in entries:
        t = entry.get("transcript")
        if not t:
            continue
        data = _read_segment(directory / TRANSCRIPTS_DIR / str(t.get("segment", "")), int(t.get("offset", 0)), int(entry.get("bytes", 0)))
        if data is not None:
            yield entry, data
