"""Verifying an audit log: every rule ``psi-share audit verify`` applies.

The README ("Audit log format") states the same rules for verifiers written
without this software. In the order they are checked:

1. Each line is one entry; ``seq`` counts from 0, ``prev`` is the previous
   entry's ``hash``, ``hash`` is the SHA-256 of the entry's canonical JSON
   without ``hash``; types are the known ones.
2. Entry 0 is the genesis entry; the audit key it names is the trusted key
   (pinned with ``--key``, else the public half of ``keys/audit.key``).
3. Every checkpoint states its own position (``count`` = ``seq``, ``head``
   = ``prev``), names the log's node and the trusted key, and its Ed25519
   signature verifies: it signs every entry before it.
4. No run of consecutive entries that are not checkpoints is longer than
   :data:`~.log.MAX_UNSIGNED`, and the log holds at least one checkpoint.
5. ``audit_key.pub`` holds the trusted key; ``checkpoint.json`` is present
   and the checkpoint it copies is in the log (a log cut below its last
   checkpoint contradicts it).
6. With an exported head (``--expect-head``): the log still holds exactly
   that prefix. With witnessed heads (``--witnesses``: signed heads of this
   log that peers hold), the log *extends* each: entry ``count - 1`` has hash
   ``head`` and entry ``count`` is still that checkpoint.
7. Every kept transcript matches its entry's SHA-256.

A run of 1 to MAX_UNSIGNED entries *after* the last checkpoint fails none of
these: a running node has one for a moment, a crashed node keeps one. It is
reported (:attr:`VerifyResult.uncovered`, :attr:`VerifyResult.first_unsigned`)
because only the hash chain protects it: whoever can write the folder can
cut or rewrite it, or cut the log back to an older checkpoint and append
such a run. The CLI exits 3 for it, never 0.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .log import (
    CHECKPOINT_FILE,
    ENTRY_TYPES,
    GENESIS_PREV,
    MAX_UNSIGNED,
    PUBLIC_KEY_FILE,
    TRANSCRIPTS_DIR,
    checkpoint_message,
    entry_hash,
    public_key_hex,
    read_entries,
    read_segment,
)

_HEX_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass
class VerifyResult:
    entries: int = 0
    checkpoints: int = 0
    last_checkpoint_count: int = -1
    head: str = GENESIS_PREV
    problems: list[str] = field(default_factory=list)
    first_bad: str = ""  # "line N (seq S)" of the first entry that fails
    uncovered: int = 0  # entries after the last checkpoint (signed by nothing yet)
    first_unsigned: str = ""  # "line N (seq S)" of the first of them
    log_key: str = ""  # the audit key the genesis entry names (hex), as found
    transcripts_checked: int = 0
    transcripts_pruned: int = 0
    # One per witnessed head asked about, in order: "" when the log extends it, else why not.
    witnessed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No rule is broken (an unsigned tail within the bound may remain: see :attr:`signed`)."""
        return not self.problems

    @property
    def signed(self) -> bool:
        """OK, and every entry is under a signed checkpoint."""
        return self.ok and self.uncovered == 0


def _where(number: int) -> str:
    return f"line {number} (seq {number - 1})"


def _shown_key(value: object) -> str:
    """A key from the file, printable: it may be anything an attacker wrote."""
    return value if isinstance(value, str) and _HEX_KEY.fullmatch(value) else "(not a hex Ed25519 key)"


def verify_log(
    directory: Path,
    public_key: Ed25519PublicKey,
    *,
    node: str | None = None,
    expect_head: tuple[int, str] | None = None,
    check_transcripts: bool = True,
    witnessed: Sequence[tuple[int, str]] = (),
) -> VerifyResult:
    """Apply every rule above to the log in ``directory``, trusting ``public_key``.

    Stops the chain walk at the first bad entry (everything after it would
    only repeat the damage) and names it in ``first_bad``. ``witnessed``
    heads ``(count, head)`` are checked as rule 6 says; the outcome of each is
    in :attr:`VerifyResult.witnessed` (a failed one is not in ``problems``:
    the caller names the witness).
    """
    result = VerifyResult()

    def bad(where: str, why: str) -> None:
        if not result.first_bad:
            result.first_bad = where
        result.problems.append(f"{where}: {why}")

    trusted = public_key_hex(public_key)
    hashes, transcripts, pruned, marks = _walk_chain(directory, trusted, node, result, bad)
    if result.entries and not result.checkpoints and not result.problems:
        bad(_where(1), "the log holds no signed checkpoint: nothing in it is signed by the audit key "
                       "(a log rebuilt without the key looks like this)")
    _check_key_file(directory, trusted, bad)
    _check_checkpoint_file(directory, hashes, result, bad)
    if expect_head is not None:
        count, head = expect_head
        if result.entries < count:
            bad("log", f"holds {result.entries} entries, fewer than the {count} of the exported head (truncated)")
        elif hashes[count - 1] != head if count else head != GENESIS_PREV:
            bad(_where(count), "hash differs from the exported head (the log was rewritten)")
    result.witnessed = [_extends(hashes, marks, count, head, complete=not result.first_bad) for count, head in witnessed]
    if check_transcripts and not result.first_bad:
        for number, t, sha, length in transcripts:
            segment = directory / TRANSCRIPTS_DIR / str(t.get("segment", ""))
            if t.get("segment") in pruned:
                result.transcripts_pruned += 1
                continue
            data = read_segment(segment, int(t.get("offset", 0)), length)
            if data is None or hashlib.sha256(data).hexdigest() != sha:
                bad(_where(number), f"transcript bytes in {segment.name} are missing or differ from the logged SHA-256")
            else:
                result.transcripts_checked += 1
    return result


_Bad = Callable[[str, str], None]


def _extends(hashes: list[str], marks: set[int], count: int, head: str, *, complete: bool) -> str:
    """Rule 6 for one witnessed head: "" when the log extends it, else what happened to it."""
    if len(hashes) <= count:
        if not complete:
            return f"cannot be checked: the log fails before entry seq {count}"
        return (f"the log holds {len(hashes)} entries, but this head is the signed checkpoint at seq {count}: "
                "the log was cut back below it")
    if count < 1 or hashes[count - 1] != head:
        return (f"entry seq {count - 1} has hash {hashes[count - 1] if count >= 1 else '(none)'}, not the witnessed "
                f"{head}: the signed prefix was rewritten")
    if count not in marks:
        return f"entry seq {count} is no longer the signed checkpoint the witness holds: the log was rewritten there"
    return ""


def _walk_chain(directory: Path, trusted: str, node: str | None, result: VerifyResult,
                bad: _Bad) -> tuple[list[str], list[tuple[int, dict[str, Any], str, int]], set[str], set[int]]:
    """Rules 1-4 along the chain; (entry hashes, transcripts to check, pruned segments, checkpoint seqs)."""
    prev = GENESIS_PREV
    hashes: list[str] = []
    marks: set[int] = set()
    transcripts: list[tuple[int, dict[str, Any], str, int]] = []
    pruned: set[str] = set()
    log_node: object = None
    run = 0  # entries since the last checkpoint (or the start)
    for number, raw in read_entries(directory):
        where = _where(number)
        entry, why = _parse(raw, number, prev)
        if entry is None:
            bad(where, why)
            break
        seq, kind = number - 1, entry["type"]
        if seq == 0:
            log_node, result.log_key = entry.get("node"), _shown_key(entry.get("key"))
            why = _genesis_problem(entry, trusted, node)
        elif kind == "genesis":
            why = "a second genesis entry"
        elif kind == "checkpoint":
            why = _checkpoint_problem(entry, trusted, log_node)
        if why:
            bad(where, why)
            break
        if kind == "checkpoint":
            result.checkpoints += 1
            result.last_checkpoint_count = seq
            marks.add(seq)
            run = 0
        else:
            run += 1
            if run == 1:
                result.first_unsigned = where
            if run > MAX_UNSIGNED:
                since = (f"the checkpoint at seq {result.last_checkpoint_count}" if result.last_checkpoint_count >= 0
                         else "the start of the log")
                bad(where, f"more than {MAX_UNSIGNED} entries in a row without a signed checkpoint (since {since}): "
                           f"a node signs at least every {MAX_UNSIGNED} entries, so these were not written by it")
                break
        if kind == "prune":
            pruned.update(entry.get("segments", []))
        if "transcript" in entry:
            transcripts.append((number, entry["transcript"], entry.get("sha256", ""), int(entry.get("bytes", 0))))
        prev = entry["hash"]
        hashes.append(prev)
        result.entries += 1
    result.head = prev
    result.uncovered = run
    if not run:
        result.first_unsigned = ""
    return hashes, transcripts, pruned, marks


def _parse(raw: bytes, number: int, prev: str) -> tuple[dict[str, Any] | None, str]:
    """Rule 1 for one line: (entry, "") or (None, why not)."""
    if not raw.endswith(b"\n"):
        return None, "entry is cut off (the log was truncated mid-entry)"
    try:
        entry = json.loads(raw)
    except ValueError:
        return None, "not a JSON entry"
    if not isinstance(entry, dict):
        return None, "not a JSON entry"
    seq = entry.get("seq")
    if seq != number - 1:
        return None, f"seq is {seq!r}, expected {number - 1} (an entry was deleted, inserted or moved)"
    if entry.get("prev") != prev:
        return None, "prev does not match the previous entry's hash (an entry before it was deleted, inserted or moved)"
    if entry.get("hash") != entry_hash(entry):
        return None, "hash does not match the entry's content (the entry was edited)"
    if entry.get("type") not in ENTRY_TYPES:
        return None, f"unknown entry type {str(entry.get('type'))[:40]!r}"
    if number == 1 and entry["type"] != "genesis":
        return None, "the first entry is not the genesis entry"
    return entry, ""


def _genesis_problem(entry: Mapping[str, Any], trusted: str, node: str | None) -> str:
    if node is not None and entry.get("node") != node:
        return f"log belongs to node {str(entry.get('node'))[:64]!r}, not {node!r}"
    if entry.get("key") != trusted:
        return (f"the log claims audit key {_shown_key(entry.get('key'))}, not the trusted key {trusted} "
                "(the signing key was swapped, or this is another node's log)")
    return ""


def _checkpoint_problem(entry: Mapping[str, Any], trusted: str, log_node: object) -> str:
    if entry.get("count") != entry.get("seq") or entry.get("head") != entry.get("prev"):
        return "checkpoint's count/head do not state its own position (a checkpoint copied from elsewhere)"
    if entry.get("key") != trusted:
        return f"checkpoint is signed with key {_shown_key(entry.get('key'))}, not the trusted key {trusted}"
    if entry.get("node") != log_node:
        return "checkpoint names another node than the genesis entry"
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["key"]))
        key.verify(bytes.fromhex(entry["sig"]), checkpoint_message(str(entry["node"]), entry["count"], entry["head"]))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return "checkpoint signature does not verify (an entry at or before it was changed)"
    return ""


def _check_key_file(directory: Path, trusted: str, bad: _Bad) -> None:
    """Rule 5: the node rewrites audit_key.pub from its key whenever it opens the log."""
    path = directory / PUBLIC_KEY_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        bad(PUBLIC_KEY_FILE, "is missing (the node writes it whenever it opens the log)")
        return
    if text != trusted:
        bad(PUBLIC_KEY_FILE, f"holds key {_shown_key(text)}, not the trusted key {trusted} (the file was replaced)")


def _check_checkpoint_file(directory: Path, hashes: list[str], result: VerifyResult, bad: _Bad) -> None:
    """Rule 5: checkpoint.json names a checkpoint that is still in the log."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        if result.checkpoints:
            bad(CHECKPOINT_FILE, "is missing (the node keeps a copy of its latest checkpoint there): it was deleted")
        return
    try:
        saved = json.loads(path.read_bytes())
        seq = int(saved["seq"])
        saved_hash = saved["hash"]
        if saved.get("type") != "checkpoint":
            raise ValueError
    except (ValueError, KeyError, TypeError):
        bad(CHECKPOINT_FILE, "unreadable, or not a checkpoint entry")
        return
    if seq >= len(hashes):
        if not result.first_bad:
            bad("log", f"ends after {len(hashes)} entries but {CHECKPOINT_FILE} states a signed checkpoint at seq {seq} "
                       "(entries were cut off)")
        return
    if seq < 0 or hashes[seq] != saved_hash:
        bad(_where(seq + 1), f"differs from the signed checkpoint saved in {CHECKPOINT_FILE}")


def genesis_key(directory: Path) -> str | None:
    """The audit key the log's genesis entry names (hex), None if unreadable."""
    for _, raw in read_entries(directory):
        try:
            key = json.loads(raw).get("key")
        except (ValueError, AttributeError):
            return None
        return key if isinstance(key, str) and _HEX_KEY.fullmatch(key) else None
    return None
