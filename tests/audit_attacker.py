#!/usr/bin/env python3
"""An attacker who can write a node's audit folder but does not hold keys/audit.key.

Written from the published log format alone (README, "Audit log format"),
without importing psi_share: it parses ``log.jsonl``, drops, edits or forges
entries, recomputes every ``seq``, ``prev`` and ``hash`` over canonical JSON,
and rewrites ``checkpoint.json`` and ``audit_key.pub`` as it likes. The only
signatures it can make are with a key of its own.

Every attack rewrites one audit folder in place and returns what the
compliance officer's ``audit verify`` should then name (a line of the log or
a file). As a script::

    python tests/audit_attacker.py ATTACK HOME/audit
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LOG, CHECKPOINT, PUBLIC_KEY = "log.jsonl", "checkpoint.json", "audit_key.pub"
ZERO = "0" * 64
Entry = dict[str, Any]


def canonical(entry: Entry) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def digest(entry: Entry) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def read(audit: Path) -> list[Entry]:
    return [json.loads(line) for line in (audit / LOG).read_bytes().splitlines()]


def write(audit: Path, entries: list[Entry]) -> None:
    (audit / LOG).write_bytes(b"".join(canonical(e) + b"\n" for e in entries))


def where(index: int) -> str:
    """How verify names entry ``index`` (0-based) of the file."""
    return f"line {index + 1} (seq {index})"


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


def rechain(entries: list[Entry], sign_with: Ed25519PrivateKey | None = None) -> list[Entry]:
    """Renumber, relink and rehash everything. Checkpoints get the count and
    head of their new place; only with ``sign_with`` (the attacker's own key)
    do they get a signature that matches, and the genesis entry that key."""
    prev = ZERO
    for seq, entry in enumerate(entries):
        entry["seq"], entry["prev"] = seq, prev
        if sign_with is not None and entry["type"] in ("genesis", "checkpoint"):
            entry["key"] = public_hex(sign_with)
        if entry["type"] == "checkpoint":
            entry["count"], entry["head"] = seq, prev
            if sign_with is not None:
                message = f"psi-share audit checkpoint v1\nnode={entry['node']}\ncount={seq}\nhead={prev}\n"
                entry["sig"] = sign_with.sign(message.encode()).hex()
        entry["hash"] = prev = digest(entry)
    return entries


def save_checkpoint_copy(audit: Path, entries: list[Entry]) -> None:
    """checkpoint.json as the node writes it: a copy of the last checkpoint entry."""
    last = [e for e in entries if e["type"] == "checkpoint"][-1]
    (audit / CHECKPOINT).write_bytes(canonical(last) + b"\n")


def _checkpoints(entries: list[Entry]) -> list[int]:
    return [i for i, e in enumerate(entries) if e["type"] == "checkpoint"]


# -- the attacks --------------------------------------------------------------


def issue_13(audit: Path) -> str:
    """Exactly as reported: drop every checkpoint and every sent and disclosure
    entry, recompute the hash chain, delete checkpoint.json."""
    kept = [e for e in read(audit) if e["type"] not in ("checkpoint", "sent", "disclosure")]
    write(audit, rechain(kept))
    (audit / CHECKPOINT).unlink()
    return where(0)


def edit_and_rechain(audit: Path) -> str:
    """Halve the bytes of the first message sent and recompute every later hash;
    every checkpoint is kept, restating its new head under its old signature."""
    entries = read(audit)
    edited = next(i for i, e in enumerate(entries) if e["type"] == "sent")
    entries[edited]["bytes"] //= 2
    write(audit, rechain(entries))
    save_checkpoint_copy(audit, entries)
    return where(next(i for i in _checkpoints(entries) if i > edited))


def drop_and_rechain(audit: Path) -> str:
    """Drop every disclosure (what peers learned); keep every checkpoint, moved to its new place."""
    entries = read(audit)
    first = next(i for i, e in enumerate(entries) if e["type"] == "disclosure")
    entries = rechain([e for e in entries if e["type"] != "disclosure"])
    write(audit, entries)
    save_checkpoint_copy(audit, entries)
    return where(next(i for i in _checkpoints(entries) if i >= first))


def drop_and_cut_back(audit: Path) -> str:
    """Drop every disclosure and every checkpoint from the first drop on (they
    cannot be re-signed): the log now looks cut back to an older checkpoint,
    with a rewritten unsigned tail, and checkpoint.json is that checkpoint's copy.
    Returns the first entry of the unsigned tail."""
    entries = read(audit)
    first = next(i for i, e in enumerate(entries) if e["type"] == "disclosure")
    kept = entries[:first] + [e for e in entries[first:] if e["type"] not in ("disclosure", "checkpoint")]
    write(audit, rechain(kept))
    save_checkpoint_copy(audit, kept)
    return where(_checkpoints(kept)[-1] + 1)


def forge_long_tail(audit: Path, forged: int = 1001) -> str:
    """Keep the genesis entry and its checkpoint, then write ``forged`` received
    entries of the attacker's own (copies of real ones) and nothing signed."""
    entries = read(audit)
    cut = _checkpoints(entries)[0] + 1
    model = next(e for e in entries if e["type"] == "received")
    tail = [dict(model, items=i) for i in range(forged)]
    kept = rechain(entries[:cut] + tail)
    write(audit, kept)
    save_checkpoint_copy(audit, kept)
    return where(cut + 1000)  # the 1001st entry in a row without a checkpoint


def own_key(audit: Path) -> Ed25519PrivateKey:
    """Rebuild the log without sent and disclosure entries and sign it with a
    key of the attacker's own: genesis, checkpoints, audit_key.pub and
    checkpoint.json all agree on that key. Returns it."""
    key = Ed25519PrivateKey.generate()
    entries = rechain([e for e in read(audit) if e["type"] not in ("sent", "disclosure")], sign_with=key)
    write(audit, entries)
    save_checkpoint_copy(audit, entries)
    (audit / PUBLIC_KEY).write_text(public_hex(key) + "\n")
    return key


def swap_public_key_file(audit: Path) -> str:
    """Only replace audit_key.pub (what a careless officer would copy)."""
    (audit / PUBLIC_KEY).write_text(public_hex(Ed25519PrivateKey.generate()) + "\n")
    return PUBLIC_KEY


def replay_checkpoint(audit: Path) -> str:
    """Drop what follows the second-to-last checkpoint and append, as the new last
    entry, a copy of an earlier signed checkpoint (signature intact, renumbered)."""
    entries = read(audit)
    marks = _checkpoints(entries)
    kept = entries[:marks[-2] + 1] + [e for e in entries[marks[-2] + 1:] if e["type"] == "received"][:2]
    replayed = dict(entries[marks[1]])
    kept.append(replayed)
    prev = ZERO
    for seq, entry in enumerate(kept):  # renumber without touching the replayed count/head/sig
        entry["seq"], entry["prev"] = seq, prev
        entry["hash"] = prev = digest(entry)
    write(audit, kept)
    (audit / CHECKPOINT).write_bytes(canonical(replayed) + b"\n")
    return where(len(kept) - 1)


def truncate_to_checkpoint(audit: Path, replace_copy: bool = True) -> str:
    """Cut the log right after its second-to-last checkpoint; with
    ``replace_copy``, checkpoint.json becomes that checkpoint's copy too."""
    entries = read(audit)
    kept = entries[:_checkpoints(entries)[-2] + 1]
    write(audit, kept)
    if replace_copy:
        save_checkpoint_copy(audit, kept)
    return where(len(kept) - 1)


def delete_checkpoint_copy(audit: Path) -> str:
    (audit / CHECKPOINT).unlink()
    return CHECKPOINT


ATTACKS: dict[str, Callable[[Path], object]] = {
    "issue-13": issue_13, "edit-and-rechain": edit_and_rechain, "drop-and-rechain": drop_and_rechain,
    "drop-and-cut-back": drop_and_cut_back, "forge-long-tail": forge_long_tail, "own-key": own_key,
    "swap-public-key-file": swap_public_key_file, "replay-checkpoint": replay_checkpoint,
    "truncate-to-checkpoint": truncate_to_checkpoint, "delete-checkpoint-copy": delete_checkpoint_copy,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ATTACKS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(ATTACKS)}}} AUDIT_DIR")
    print(ATTACKS[sys.argv[1]](Path(sys.argv[2])))
