"""The audit log: append-only, hash-chained, signed at least every 1000 entries.

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

Signatures, and the bound on what is unsigned
---------------------------------------------
A checkpoint entry (``type = "checkpoint"``) carries ``count`` (= its own
``seq``: the number of entries before it), ``head`` (= its ``prev``), the
audit public key and an Ed25519 signature over::

    psi-share audit checkpoint v1\\nnode=<node>\\ncount=<count>\\nhead=<head>\\n

so it signs every entry before it. The writer keeps this promise, which
:mod:`.verify` enforces: **no run of consecutive non-checkpoint entries is
longer than** :data:`MAX_UNSIGNED` (1000) -- not before the first
checkpoint, not between two, not after the last. It signs a checkpoint
right after the genesis entry, after ``checkpoint_every`` (<= 1000) entries,
``checkpoint_seconds`` after the first entry not yet signed (so a running
node leaves nothing unsigned for long) and when it closes (end of every CLI
command, ``serve`` shutdown). A crash can leave at most 1000 unsigned
entries; the next process that appends signs them with its next checkpoint.
Someone without the key cannot produce a log that passes: rebuilding the
chain drops or breaks every checkpoint after the first change, and then an
unsigned run either exceeds the bound (verify fails) or is the log's tail
(verify flags it). What a key cannot prove: a log cut back to one of its
own checkpoints (with ``checkpoint.json`` replaced by that checkpoint's
copy) looks like the log as it was then; ``psi-share audit head`` exported
somewhere the operators cannot edit (``audit verify --expect-head``) or a
witness catches that.

The log is bound to one key: its genesis entry names it, and a node refuses
to append with another key (a swapped ``keys/audit.key`` cannot sign this
log). Appends are serialized by a thread lock and an ``flock`` on the log
(the CLI and ``serve`` may append from two processes) and are ``fsync``-ed
before :meth:`AuditLog.append` returns, so a message is on disk in the log
before its bytes can reach the wire.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
MAX_UNSIGNED = 1000  # the format's bound on a run of entries without a checkpoint (README "Audit log format")
DEFAULT_CHECKPOINT_SECONDS = 2.0  # a running node signs what it appended within this long
_SEGMENT_PREFIX = "seg-"
_TAIL_READ = 1 << 16
_CHECKPOINT_MARK = b'"type":"checkpoint"'

log = logging.getLogger(__name__)


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
    since_checkpoint: int  # entries after the last checkpoint (counted up to MAX_UNSIGNED + 1)


class AuditLog:
    """One node's audit log, open for appending.

    Signs a checkpoint right after the genesis entry, after every
    ``checkpoint_every`` entries (at most :data:`MAX_UNSIGNED`),
    ``checkpoint_seconds`` after the first unsigned entry (``None``: never
    on a timer) and at :meth:`close`. ``transcript_max_bytes`` bounds the
    transcript segments kept; older segments are pruned and the pruning is
    itself an entry.
    """

    def __init__(
        self,
        directory: Path,
        *,
        node: str,
        key: Ed25519PrivateKey,
        checkpoint_every: int = MAX_UNSIGNED,
        checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
        transcript_max_bytes: int = 1 << 30,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not 1 <= checkpoint_every <= MAX_UNSIGNED:
            raise AuditError(f"[audit] checkpoint_every must be between 1 and {MAX_UNSIGNED} "
                             f"(the bound the log format promises a verifier), not {checkpoint_every}")
        self.directory = directory
        self.node = node
        self._key = key
        self.public_key_hex = public_key_hex(key.public_key())
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.transcript_max_bytes = transcript_max_bytes
        self._segment_bytes = max(1 << 16, min(64 << 20, transcript_max_bytes // 4))
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # wakes the timed signer
        self._due: float | None = None  # monotonic time the timed signer signs at
        self._signer: threading.Thread | None = None
        self._tail_cache: _Tail | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRANSCRIPTS_DIR).mkdir(exist_ok=True)
        self.path = directory / LOG_FILE
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        if created:
            _fsync_dir(directory)  # the new file's name must survive a crash as well as its bytes
        self._closed = False
        try:
            with self._locked():
                if self._tail.seq == 0:
                    self._append_locked({"type": "genesis", "node": node, "format": FORMAT_VERSION, "key": self.public_key_hex})
                    self._checkpoint_locked()  # the genesis entry (and the key it names) is signed at once
                else:
                    self._check_key_locked()
        except BaseException:
            self._closed = True
            os.close(self._fd)
            raise
        self._write_public_key()

    # -- public API -------------------------------------------------------

    def append(self, entry_type: str, fields: Mapping[str, Any], transcript: bytes | None = None) -> dict[str, Any]:
        """Append one entry (and its transcript bytes) durably; return it."""
        if entry_type not in ENTRY_TYPES or entry_type in ("genesis", "checkpoint"):
            raise AuditError(f"cannot append an entry of type {entry_type!r}")
        with self._locked():
            body = dict(plain(fields))
            if transcript is not None:
                body["transcript"] = self._write_transcript(transcript)
            return self._append_locked({"type": entry_type, **body})

    def checkpoint(self) -> dict[str, Any] | None:
        """Append a signed checkpoint unless the last entry already is one."""
        with self._locked():
            if self._tail.since_checkpoint == 0:
                return None
            return self._checkpoint_locked()

    def signed_head(self) -> dict[str, Any]:
        """The checkpoint that signs every entry so far: the last entry when it
        is one, else a new one (what a node hands a witness)."""
        with self._locked():
            if self._tail.since_checkpoint == 0 and self._tail.seq > 0:
                last, _ = self._scan_back(self._tail.size)
                entry = json.loads(last)
                if entry.get("type") == "checkpoint":
                    return entry
            return self._checkpoint_locked()

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last entry)."""
        with self._locked():
            return self._tail.seq, self._tail.head

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.checkpoint()
        finally:
            with self._lock:
                self._closed = True
                self._wake.notify_all()
                os.close(self._fd)
            signer = self._signer
            if signer is not None and signer is not threading.current_thread():
                signer.join(timeout=5)

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
        cached = self._tail_cache
        if cached is not None and cached.size == size:
            return cached
        if size == 0:
            tail = _Tail(0, GENESIS_PREV, 0, 0)
        elif os.pread(self._fd, 1, size - 1) != b"\n":
            tail = self._recover_torn(size)
        else:
            last, since = self._scan_back(size)
            try:
                entry = json.loads(last)
                tail = _Tail(entry["seq"] + 1, entry["hash"], size, since)
            except (ValueError, KeyError, TypeError):
                raise AuditError(
                    f"{self.path}: the last entry is unreadable; run 'psi-share audit verify' "
                    "(nothing is appended to a damaged log)"
                ) from None
        self._tail_cache = tail
        return tail

    def _scan_back(self, size: int) -> tuple[bytes, int]:
        """The last line, and how many entries follow the last checkpoint.

        Reads backwards from the end until it meets a checkpoint or has
        counted more than MAX_UNSIGNED entries: the count must be exact, as
        it decides when the next checkpoint is due (a crashed process's
        unsigned entries count too).
        """
        last: bytes | None = None
        since, pos, carry = 0, size - 1, b""  # the final newline is not a line
        while True:
            start = max(0, pos - _TAIL_READ)
            parts = (os.pread(self._fd, pos - start, start) + carry).split(b"\n")
            carry = parts.pop(0) if start > 0 else b""  # maybe the end of a line that began earlier
            for line in reversed(parts):
                last = line if last is None else last
                if _CHECKPOINT_MARK in line and _is_checkpoint(line):
                    return last, since
                since += 1
                if since > MAX_UNSIGNED:
                    return last, since
            if start == 0:
                if last is None:
                    raise AuditError(f"{self.path}: no entry found")
                return last, since
            pos = start

    def _recover_torn(self, size: int) -> _Tail:
        """A crash mid-write left a partial last line: cut it and say so."""
        keep = size
        while keep > 0:
            start = max(0, keep - _TAIL_READ)
            cut = os.pread(self._fd, keep - start, start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        torn = os.pread(self._fd, size - keep, keep)
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        self._tail_cache = None
        self._tail = self._read_tail()
        if keep == 0:
            return self._tail  # the genesis entry itself was torn: the log starts again
        self._append_locked({
            "type": "recovered", "torn_bytes": len(torn), "torn_sha256": hashlib.sha256(torn).hexdigest(),
        })
        return self._tail

    def _check_key_locked(self) -> None:
        """Refuse to sign this log with any key but the one its genesis entry names."""
        first = os.pread(self._fd, _TAIL_READ, 0).split(b"\n", 1)[0]
        try:
            claimed = json.loads(first).get("key")
        except (ValueError, AttributeError):
            raise AuditError(f"{self.path}: the genesis entry is unreadable; run 'psi-share audit verify'") from None
        if claimed != self.public_key_hex:
            raise AuditError(
                f"{self.path} was started with audit key {claimed}, but the signing key given (keys/audit.key) is "
                f"{self.public_key_hex}: a log is signed by one key only. Restore the original keys/audit.key; "
                f"to start over with a new key, move {self.directory} aside (and give the compliance officer the new "
                "public key from 'psi-share audit key')"
            )

    def _append_locked(self, body: dict[str, Any]) -> dict[str, Any]:
        checkpoint = body["type"] == "checkpoint"
        if not checkpoint and self._tail.since_checkpoint >= self.checkpoint_every:
            self._checkpoint_locked()  # a run left by a crashed process is signed before it grows
        tail = self._tail
        entry = {"seq": tail.seq, "prev": tail.head, "time_ns": self._clock_ns(), **body}
        entry["hash"] = entry_hash(entry)
        line = canonical_json(entry) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise AuditError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        since = 0 if checkpoint else tail.since_checkpoint + 1
        self._tail = self._tail_cache = _Tail(tail.seq + 1, entry["hash"], tail.size + len(line), since)
        if checkpoint:
            self._due = None
        elif since >= self.checkpoint_every:
            self._checkpoint_locked()  # never more than checkpoint_every unsigned entries on disk
        elif body["type"] != "genesis":  # (a checkpoint follows the genesis entry at once)
            self._sign_soon()
        return entry

    def _checkpoint_locked(self) -> dict[str, Any]:
        count, head = self._tail.seq, self._tail.head
        signature = self._key.sign(checkpoint_message(self.node, count, head))
        entry = self._append_locked({
            "type": "checkpoint", "node": self.node, "count": count, "head": head,
            "key": self.public_key_hex, "sig": signature.hex(),
        })
        tmp = self.directory / f"{CHECKPOINT_FILE}.{os.getpid()}.tmp"
        tmp.write_bytes(canonical_json(entry) + b"\n")
        os.replace(tmp, self.directory / CHECKPOINT_FILE)
        return entry

    def _sign_soon(self) -> None:
        """Have the timed signer checkpoint ``checkpoint_seconds`` from now (lock held)."""
        if self.checkpoint_seconds is None or self._due is not None:
            return
        self._due = time.monotonic() + self.checkpoint_seconds
        if self._signer is None:
            self._signer = threading.Thread(target=self._sign_when_due, name="audit-checkpoint", daemon=True)
            self._signer.start()
        else:
            self._wake.notify()

    def _sign_when_due(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (self._due is None or self._due > time.monotonic()):
                    self._wake.wait(None if self._due is None else self._due - time.monotonic())
                if self._closed:
                    return
                self._due = None
            try:
                self.checkpoint()
            except (AuditError, OSError) as exc:
                if self._closed:
                    return
                # The next append schedules another try; close() signs in any case.
                log.error("audit: the timed checkpoint failed: %s", exc)

    def _write_public_key(self) -> None:
        path = self.directory / PUBLIC_KEY_FILE
        text = self.public_key_hex + "\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
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


def _is_checkpoint(line: bytes) -> bool:
    try:
        return json.loads(line).get("type") == "checkpoint"
    except (ValueError, AttributeError):
        return False


# -- reading (the verifier is in .verify) ------------------------------------------


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


def read_segment(path: Path, offset: int, length: int) -> bytes | None:
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
        data = read_segment(directory / TRANSCRIPTS_DIR / str(t.get("segment", "")), int(t.get("offset", 0)), int(entry.get("bytes", 0)))
        if data is not None:
            yield entry, data
