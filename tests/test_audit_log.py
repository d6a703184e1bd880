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
    verify_log,
)

KEY = Ed25519PrivateKey.generate()


def make_log(tmp_path: Path, n: int = 10, **kw) -> AuditLog:  # type: ignore[no-untyped-def]
    log = AuditLog(tmp_path / "audit", node="lab-a", key=KEY, **kw)
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
    # genesis + 10 entries + a checkpoint every 4 entries + one at close
    assert result.entries == len(lines(tmp_path))
    assert result.checkpoints == 3 and result.uncovered == 0
    entry = json.loads(lines(tmp_path)[1])
    assert entry["params"] == {"fpr": "1e-09"}
    assert entry["hash"] == entry_hash(entry)
    assert lines(tmp_path)[1] == canonical_json(entry) + b"\n"


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
        ("cut-mid-entry", "line 12 (seq 11)"),
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
    assert verify(tmp_path).ok  # what a checkpoint does not cover...
    result = verify(tmp_path, expect_head=(count, head))  # ...an exported head does
    assert not result.ok and "truncated" in result.problems[0]


def test_another_key_is_refused(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    result = verify_log(tmp_path / "audit", Ed25519PrivateKey.generate().public_key())
    assert not result.ok and "another key" in result.problems[0]


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
