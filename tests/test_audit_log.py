"""The audit log on its own: chain, checkpoints, tampering, transcripts, retention."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from psi_share.audit.log import (
    CHECKPOINT_FILE,
    LOG_FILE,
    AuditLog,
    canonical_json,
    entry_hash,
)
from psi_share.audit.verify import verify_log

KEY = Ed25519PrivateKey.generate()


def make_log(tmp_path: Path, n: int = 10, **kw) -> AuditLog:  # type: ignore[no-untyped-def]
    log = AuditLog(tmp_path / "audit", node="lab-a", key=KEY, **{"checkpoint_seconds": None, **kw})
    for i in range(n):
        log.append("sent", {"peer": "lab-b", "protocol": "psi", "step": "open", "items": i, "params": {"fpr": 1e-9}})
    return log


def lines(tmp_path: Path) -> list[bytes]:
    return (tmp_path / "audit" / LOG_FILE).read_bytes().splitlines(keepends=True)


def write_lines(tmp_path: Path, content: list[bytes]) -> None:
    (tmp_path / "audit" / LOG_FILE).write_bytes(b"".join(content))


def verify(tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    return verify_log(tmp_path / "audit", KEY.public_key(), **kw)


def test_an_intact_log_verifies_and_floats_are_hashed_as_text(tmp_path: Path) -> None:
    make_log(tmp_path, checkpoint_every=4).close()
    result = verify(tmp_path, node="lab-a")
    assert result.ok, result.problems
    # genesis, its checkpoint, 10 entries with a checkpoint after every 4, one at close
    assert result.entries == len(lines(tmp_path)) == 15
    assert result.checkpoints == 4 and result.uncovered == 0 and result.signed
    types = [json.loads(line)["type"] for line in lines(tmp_path)]
    assert [i for i, t in enumerate(types) if t == "checkpoint"] == [1, 6, 11, 14]
    entry = json.loads(lines(tmp_path)[2])
    assert entry["params"] == {"fpr": "1e-09"}
    assert entry["hash"] == entry_hash(entry)
    assert lines(tmp_path)[2] == canonical_json(entry) + b"\n"


def _rewrite(tmp_path: Path, index: int, change) -> None:  # type: ignore[no-untyped-def]
    content = lines(tmp_path)
    entry = json.loads(content[index])
    change(entry)
    content[index] = canonical_json(entry) + b"\n"
    write_lines(tmp_path, content)


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    _rewrite(tmp_path, 5, lambda e: e.update(items=999))
    result = verify(tmp_path)
    assert not result.ok and result.first_bad == "line 6 (seq 5)"
    assert "edited" in result.problems[0]


def test_an_edit_with_every_hash_recomputed_breaks_the_signed_checkpoint(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    content = [json.loads(line) for line in lines(tmp_path)]
    content[3]["items"] = 999
    prev = content[2]["hash"]
    for entry in content[3:]:
        entry["prev"] = prev
        if entry["type"] == "checkpoint":
            entry["head"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
    write_lines(tmp_path, [canonical_json(e) + b"\n" for e in content])
    result = verify(tmp_path)
    assert not result.ok
    assert "signature" in result.problems[0]


@pytest.mark.parametrize(
    "tamper, first_bad",
    [
        ("delete", "line 5 (seq 4)"),
        ("insert", "line 5 (seq 4)"),
        ("reorder", "line 5 (seq 4)"),
        ("cut-mid-entry", "line 13 (seq 12)"),
    ],
)
def test_deleted_inserted_reordered_and_cut_entries_are_named(tmp_path: Path, tamper: str, first_bad: str) -> None:
    make_log(tmp_path).close()
    content = lines(tmp_path)
    if tamper == "delete":
        del content[4]
    elif tamper == "insert":
        content.insert(4, content[3])
    elif tamper == "reorder":
        content[4], content[5] = content[5], content[4]
    else:
        content[-1] = content[-1][:40]
    write_lines(tmp_path, content)
    result = verify(tmp_path)
    assert not result.ok and result.first_bad == first_bad, result.problems


def test_truncation_below_the_last_checkpoint_is_caught_by_the_checkpoint_file(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    write_lines(tmp_path, lines(tmp_path)[:-3])  # drop two entries and the final checkpoint, cleanly
    result = verify(tmp_path)
    assert not result.ok and "cut off" in result.problems[0]


def test_truncation_after_the_last_checkpoint_needs_the_exported_head(tmp_path: Path) -> None:
    log = make_log(tmp_path, n=3)
    log.checkpoint()
    for i in range(3):
        log.append("received", {"peer": "lab-b", "items": i})
    count, head = log.head()
    write_lines(tmp_path, lines(tmp_path)[:-2])  # the two last entries are not under any signature
    result = verify(tmp_path)
    assert result.ok and not result.signed and result.uncovered == 1  # what a checkpoint does not cover...
    result = verify(tmp_path, expect_head=(count, head))  # ...an exported head does
    assert not result.ok and "truncated" in result.problems[0]


def test_another_key_is_refused(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    result = verify_log(tmp_path / "audit", Ed25519PrivateKey.generate().public_key())
    assert not result.ok and result.first_bad == "line 1 (seq 0)"
    assert f"the log claims audit key {KEY.public_key().public_bytes_raw().hex()}, not the trusted key" in result.problems[0]


def test_concurrent_appends_from_threads_and_two_processes_keep_one_chain(tmp_path: Path) -> None:
    first = make_log(tmp_path, n=0)
    second = AuditLog(tmp_path / "audit", node="lab-a", key=KEY)  # as 'serve' and a CLI command would

    def work(log: AuditLog, k: int) -> None:
        for i in range(50):
            log.append("sent", {"peer": f"p{k}", "items": i})

    threads = [threading.Thread(target=work, args=(log, k)) for k, log in enumerate([first, second, first, second])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.close()
    second.close()
    result = verify(tmp_path)
    assert result.ok, result.problems
    assert sum(1 for line in lines(tmp_path) if b'"type":"sent"' in line) == 200


def test_transcripts_are_verified_and_retention_pruning_is_recorded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", node="lab-a", key=KEY, transcript_max_bytes=1 << 16)
    blob = bytes(range(256)) * 40  # 10 KiB
    for i in range(20):
        log.append("sent", {"peer": "lab-b", "bytes": len(blob), "sha256": __import__("hashlib").sha256(blob).hexdigest()}, blob)
    log.close()
    result = verify(tmp_path)
    assert result.ok, result.problems
    assert result.transcripts_pruned > 0 and result.transcripts_checked > 0
    prunes = [json.loads(line) for line in lines(tmp_path) if b'"type":"prune"' in line]
    assert prunes and all(p["bytes"] > 0 for p in prunes)
    kept = sum(p.stat().st_size for p in (tmp_path / "audit" / "transcripts").iterdir())
    assert kept <= 1 << 16
    # a kept transcript that is altered no longer matches its logged digest
    segment = sorted((tmp_path / "audit" / "transcripts").iterdir())[-1]
    data = bytearray(segment.read_bytes())
    data[0] ^= 1
    segment.write_bytes(bytes(data))
    assert not verify(tmp_path).ok


def test_a_torn_last_line_is_cut_and_recorded_on_the_next_open(tmp_path: Path) -> None:
    make_log(tmp_path, n=3).close()
    path = tmp_path / "audit" / LOG_FILE
    with path.open("ab") as fh:
        fh.write(b'{"seq":99,"half')  # a crash in the middle of a write
    assert not verify(tmp_path).ok
    AuditLog(tmp_path / "audit", node="lab-a", key=KEY).close()
    result = verify(tmp_path)
    assert result.ok, result.problems
    assert b'"type":"recovered"' in path.read_bytes()


def test_checkpoint_file_holds_the_last_signed_checkpoint(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    saved = json.loads((tmp_path / "audit" / CHECKPOINT_FILE).read_bytes())
    assert saved == json.loads(lines(tmp_path)[-1]) and saved["type"] == "checkpoint"


def test_audit_config_is_validated() -> None:
    import tomllib

    from psi_share.errors import ConfigError
    from psi_share.node.config import parse_config, render_config

    data = tomllib.loads(render_config("lab-a", "127.0.0.1:0"))
    assert parse_config(data, "x").audit.transcripts is False
    for key, value, message in (("transcript_max_bytes", 10, "at least 65536"), ("checkpoint_every", 0, "at least 1"),
                                ("transcripts", "yes", "must be of type bool"), ("retention", 1, "unknown key")):
        bad = {**data, "audit": {**data["audit"], key: value}}
        with pytest.raises(ConfigError, match=message):
            parse_config(bad, "x")


# -- the bound on unsigned entries, as the writer keeps it ---------------------


def _runs(tmp_path: Path) -> list[int]:
    """Lengths of the runs of non-checkpoint entries, in order (the last is the unsigned tail)."""
    runs = [0]
    for line in lines(tmp_path):
        if json.loads(line)["type"] == "checkpoint":
            runs.append(0)
        else:
            runs[-1] += 1
    return runs


@pytest.mark.parametrize("every", [1, 2, 7, 64])
@pytest.mark.parametrize("transcripts", [False, True])
def test_no_run_of_unsigned_entries_is_longer_than_checkpoint_every(tmp_path: Path, every: int, transcripts: bool) -> None:
    """Appends, prunes (which add entries of their own) and a reopen all keep the bound."""
    import hashlib

    blob = bytes(range(256)) * 100  # 25 KiB: a 64 KiB retention prunes every few appends
    fields = {"peer": "lab-b", "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    log = make_log(tmp_path, n=0, checkpoint_every=every, transcript_max_bytes=1 << 16)
    for _ in range(3 * every + 5):
        log.append("sent", fields, blob if transcripts else None)
    # a crash (no close), then another process appends to the same log
    again = AuditLog(tmp_path / "audit", node="lab-a", key=KEY, checkpoint_every=every, checkpoint_seconds=None,
                     transcript_max_bytes=1 << 16)
    for _ in range(2 * every + 3):
        again.append("sent", fields, blob if transcripts else None)
    runs = _runs(tmp_path)
    assert max(runs) <= every and runs[0] == 1  # the genesis entry is signed at once
    assert not transcripts or any(b'"type":"prune"' in line for line in lines(tmp_path))
    again.close()
    result = verify(tmp_path)
    assert result.signed, result.problems


def test_a_reopened_log_counts_a_crashed_process_unsigned_entries_exactly(tmp_path: Path) -> None:
    """Entries of ~1 KiB: the unsigned run after a crash spans far more than one read block (64 KiB)."""
    padding = "x" * 1000
    log = make_log(tmp_path, n=0)
    for i in range(700):
        log.append("received", {"peer": "lab-b", "items": i, "note": padding})
    # crash: never closed; the next process appends 400 more
    again = make_log(tmp_path, n=0)
    for i in range(400):
        again.append("received", {"peer": "lab-b", "items": i, "note": padding})
    runs = _runs(tmp_path)
    assert runs[:2] == [1, 1000] and max(runs) == 1000
    again.close()
    assert verify(tmp_path).signed


def test_checkpoint_every_above_the_format_bound_is_refused(tmp_path: Path) -> None:
    from psi_share.audit.log import MAX_UNSIGNED, AuditError

    with pytest.raises(AuditError, match=f"checkpoint_every must be between 1 and {MAX_UNSIGNED}"):
        make_log(tmp_path, n=0, checkpoint_every=MAX_UNSIGNED + 1)


def test_a_running_log_signs_what_it_appended_within_checkpoint_seconds(tmp_path: Path) -> None:
    import time

    log = make_log(tmp_path, n=0, checkpoint_seconds=0.05)
    for burst in range(3):
        for i in range(5):
            log.append("received", {"peer": "lab-b", "items": i})
        deadline = time.monotonic() + 30  # a generous bound on a loaded machine, not a speed claim
        while json.loads(lines(tmp_path)[-1])["type"] != "checkpoint" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert verify(tmp_path).signed, burst
    log.close()
    assert _runs(tmp_path) == [1, 5, 5, 5, 0]


def test_a_log_refuses_to_be_signed_with_another_key(tmp_path: Path) -> None:
    from psi_share.audit.log import AuditError

    make_log(tmp_path, n=2).close()
    before = lines(tmp_path)
    with pytest.raises(AuditError, match="was started with audit key .* a log is signed by one key only"):
        AuditLog(tmp_path / "audit", node="lab-a", key=Ed25519PrivateKey.generate())
    assert lines(tmp_path) == before
    assert (tmp_path / "audit" / "audit_key.pub").read_text().strip() == KEY.public_key().public_bytes_raw().hex()
