"""Forging a real node's audit log without its key, and the compliance officer catching it.

The log comes from real nodes (the audit tests' data, a reveal and a count
PSI match over mutual TLS, a NodeInfo call), closed as after ``serve``
stops. Each test copies that home, lets ``audit_attacker`` rewrite its audit
folder as someone with write access but without ``keys/audit.key`` would,
and runs ``psi-share audit verify`` in a real process, as the officer does.
Before the attack the officer has recorded ``audit key`` (to pin) and
``audit head`` (exported), as the README tells them to.

Exit codes: 0 intact and signed, 1 failed, 3 intact but with an unsigned tail.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import audit_attacker as attacker
import pytest
from conftest import Federation, write_csv
from cryptography.hazmat.primitives import serialization
from test_audit_node import A_ROWS, B_ROWS, KINDS, _cli

from psi_share import Mode


@dataclass(frozen=True)
class RealLog:
    home: Path  # lab-b's home, never attacked itself
    pinned_key: str  # the public half of keys/audit.key: what 'audit key' prints, recorded by the officer
    head: str  # 'audit head', exported by the officer


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> RealLog:
    root = tmp_path_factory.mktemp("real-log")
    fed = Federation(root)
    try:
        a = fed.node("lab-a")
        b = fed.node("lab-b", audit__checkpoint_every=6)  # several checkpoints in a short log
        a.import_file("flagged", write_csv(root / "a.csv", A_ROWS), None)
        b.import_file("flagged", write_csv(root / "b.csv", B_ROWS), None)
        fed.serve("lab-b")
        fed.connect_all()
        a.match("lab-b", kinds=KINDS)
        a.match("lab-b", kinds=["email"], mode=Mode.COUNT)
        with a.peer_client("lab-b") as client:
            client.node_info()
    finally:
        fed.close()  # lab-b's server stops and its log closes with a signed checkpoint
    home = root / "lab-b"
    head = _cli(home, "audit", "head")
    assert head.returncode == 0, head.stderr
    types = [e["type"] for e in attacker.read(home / "audit")]
    assert types.count("checkpoint") >= 4 and {"sent", "received", "disclosure"} <= set(types)
    key = serialization.load_pem_private_key((home / "keys" / "audit.key").read_bytes(), password=None)
    return RealLog(home, key.public_key().public_bytes_raw().hex(), head.stdout.strip())  # type: ignore[union-attr]


def test_the_real_log_verifies_against_the_key_audit_key_prints(real_log: RealLog) -> None:
    printed = _cli(real_log.home, "audit", "key")
    assert printed.returncode == 0 and printed.stdout.strip() == real_log.pinned_key, printed.stderr
    verified = _cli(real_log.home, "audit", "verify", "--key", real_log.pinned_key, "--expect-head", real_log.head)
    assert verified.returncode == 0 and "OK:" in verified.stdout, verified.stdout + verified.stderr
    assert f"audit key: {real_log.pinned_key} (pinned with --key)" in verified.stdout


@pytest.fixture
def victim(real_log: RealLog, tmp_path: Path) -> Path:
    """A copy of the real home for one attack."""
    home = tmp_path / "lab-b"
    shutil.copytree(real_log.home, home)
    return home


def _failed_at(result, where: str, why: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED: first bad entry at {where}\n" in result.stderr, result.stderr
    assert why in result.stderr, result.stderr


def test_issue_13_a_log_rebuilt_without_the_key_fails(victim: Path, real_log: RealLog) -> None:
    """Dropping every checkpoint, sent and disclosure entry, rechaining and deleting
    checkpoint.json passed as 'OK: 13 entries, 0 signed checkpoints' before."""
    where = attacker.issue_13(victim / "audit")
    forged = attacker.read(victim / "audit")
    assert {e["type"] for e in forged} <= {"genesis", "received"} and not (victim / "audit" / "checkpoint.json").exists()
    result = _cli(victim, "audit", "verify")  # as the tester ran it
    _failed_at(result, where, "no signed checkpoint")
    assert "hash does not match" not in result.stderr  # the chain itself is consistent: only the key is missing
    _failed_at(_cli(victim, "audit", "verify", "--key", real_log.pinned_key), where, "no signed checkpoint")


def test_an_edit_with_every_hash_recomputed_fails_at_the_next_checkpoint(victim: Path) -> None:
    where = attacker.edit_and_rechain(victim / "audit")
    _failed_at(_cli(victim, "audit", "verify"), where, "checkpoint signature does not verify")


def test_dropped_entries_with_checkpoints_moved_fail_at_the_first_moved_checkpoint(victim: Path) -> None:
    where = attacker.drop_and_rechain(victim / "audit")
    _failed_at(_cli(victim, "audit", "verify"), where, "checkpoint signature does not verify")


def test_dropped_entries_and_checkpoints_leave_an_unsigned_tail_that_is_flagged(victim: Path, real_log: RealLog) -> None:
    """Without the later checkpoints the forgery is a log cut back to an older
    checkpoint plus a rewritten tail: flagged (exit 3, never 0) with its first
    entry named; the exported head turns it into a failure."""
    first_unsigned = attacker.drop_and_cut_back(victim / "audit")
    flagged = _cli(victim, "audit", "verify", "--key", real_log.pinned_key)
    assert flagged.returncode == 3, flagged.stdout + flagged.stderr
    assert "UNSIGNED TAIL: the last " in flagged.stderr and f"from {first_unsigned}, follow" in flagged.stderr
    assert "OK" not in flagged.stdout and "intact" in flagged.stdout
    result = _cli(victim, "audit", "verify", "--key", real_log.pinned_key, "--expect-head", real_log.head)
    assert result.returncode == 1 and "fewer than the" in result.stderr and "(truncated)" in result.stderr


def test_more_forged_entries_than_the_bound_fail_at_the_first_one_beyond_it(victim: Path) -> None:
    where = attacker.forge_long_tail(victim / "audit")
    assert where == "line 1003 (seq 1002)"  # genesis, its checkpoint, then the 1001st forged entry
    _failed_at(_cli(victim, "audit", "verify"), where, "more than 1000 entries in a row without a signed checkpoint")


def test_a_log_re_signed_with_another_key_fails_at_its_genesis_naming_that_key(victim: Path, real_log: RealLog) -> None:
    key = attacker.own_key(victim / "audit")
    claimed = f"the log claims audit key {attacker.public_hex(key)}, not the trusted key"
    _failed_at(_cli(victim, "audit", "verify"), "line 1 (seq 0)", claimed)  # keys/audit.key is still the node's
    _failed_at(_cli(victim, "audit", "verify", "--key", real_log.pinned_key), "line 1 (seq 0)", claimed)


def test_a_swapped_key_file_too_is_caught_only_by_the_pinned_key(victim: Path, real_log: RealLog) -> None:
    """The attacker also replaces keys/audit.key: the node's own key then agrees
    with the forgery, which is why the officer pins the key beforehand."""
    key = attacker.own_key(victim / "audit")
    (victim / "keys" / "audit.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    unpinned = _cli(victim, "audit", "verify")
    assert unpinned.returncode == 0 and "NOT pinned" in unpinned.stdout  # nothing local tells
    assert f"audit key: {attacker.public_hex(key)} (taken from keys/audit.key, NOT pinned" in unpinned.stdout
    pinned = _cli(victim, "audit", "verify", "--key", real_log.pinned_key)
    _failed_at(pinned, "line 1 (seq 0)", f"the log claims audit key {attacker.public_hex(key)}, "
                                         f"not the trusted key {real_log.pinned_key}")
    key_file = victim / "pinned.key"
    key_file.write_text(real_log.pinned_key + "\n")
    assert _cli(victim, "audit", "verify", "--key", key_file).returncode == 1


def test_a_replaced_public_key_file_fails(victim: Path, real_log: RealLog) -> None:
    where = attacker.swap_public_key_file(victim / "audit")
    _failed_at(_cli(victim, "audit", "verify", "--key", real_log.pinned_key), where, "the file was replaced")


def test_an_old_checkpoint_replayed_at_the_end_fails_where_it_stands(victim: Path) -> None:
    where = attacker.replay_checkpoint(victim / "audit")
    _failed_at(_cli(victim, "audit", "verify"), where, "count/head do not state its own position")


def test_a_cut_back_to_an_older_checkpoint_needs_the_exported_head(victim: Path, real_log: RealLog) -> None:
    """The one forgery a local check cannot see (README): the log as it was at an
    older checkpoint, with checkpoint.json to match. The exported head sees it."""
    attacker.truncate_to_checkpoint(victim / "audit")
    assert _cli(victim, "audit", "verify", "--key", real_log.pinned_key).returncode == 0
    result = _cli(victim, "audit", "verify", "--key", real_log.pinned_key, "--expect-head", real_log.head)
    assert result.returncode == 1 and "(truncated)" in result.stderr


def test_a_cut_back_that_leaves_checkpoint_json_alone_fails(victim: Path) -> None:
    attacker.truncate_to_checkpoint(victim / "audit", replace_copy=False)
    result = _cli(victim, "audit", "verify")
    assert result.returncode == 1 and "states a signed checkpoint at seq" in result.stderr and "cut off" in result.stderr


def test_a_deleted_checkpoint_copy_fails(victim: Path) -> None:
    where = attacker.delete_checkpoint_copy(victim / "audit")
    _failed_at(_cli(victim, "audit", "verify"), where, "is missing")


def test_a_swapped_signing_key_cannot_sign_the_log(victim: Path, real_log: RealLog) -> None:
    """Replacing only keys/audit.key: the node refuses to open its log with it (so the new key
    never signs a checkpoint), 'audit key' warns instead of offering it for pinning, and
    verify names the key the log claims."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    swapped = Ed25519PrivateKey.generate()
    (victim / "keys" / "audit.key").write_bytes(swapped.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    before = (victim / "audit" / "log.jsonl").read_bytes()
    opened = _cli(victim, "node", "info")
    assert opened.returncode != 0 and "a log is signed by one key only" in opened.stderr, opened.stdout + opened.stderr
    assert (victim / "audit" / "log.jsonl").read_bytes() == before
    printed = _cli(victim, "audit", "key")
    assert printed.returncode == 1 and not printed.stdout
    assert f"but the audit log was started with key {real_log.pinned_key}" in printed.stderr
    _failed_at(_cli(victim, "audit", "verify"), "line 1 (seq 0)", f"the log claims audit key {real_log.pinned_key}")
    assert _cli(victim, "audit", "verify", "--key", real_log.pinned_key).returncode == 0  # the log itself is intact
