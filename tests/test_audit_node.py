"""The audit log on real nodes over gRPC: every message logged, scanned, reported; crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psi_share import Node
from psi_share.audit.log import LOG_FILE, load_entries
from psi_share.audit.messages import check_message
from psi_share.audit.scan import ALGORITHMS, BASES, ENCODINGS, _FORMS_PER_BASE, load_sources, make_form, scan_audit
from psi_share.audit.verify import verify_log
from psi_share.errors import LocalProtocolError, PeerRefused
from psi_share.events import WireEvent
from psi_share.identifiers import DEFAULT_CONTEXT
from psi_share.jobs.runner import run_job
from psi_share.jobs.spec import load_job
from psi_share.v1 import node_pb2 as pb

A_ROWS = [
    ("a1", "email", "J.Smith+promo@GMAIL.com"),
    ("a2", "phone", "(415) 555-0123"),
    ("a3", "ip_prefix", "198.51.100.77/24"),
    ("a4", "email", "nobody@example.org"),
    ("a5", "payment_fingerprint", "FpQx81kLmn02aa"),
    ("a6", "device_id", "7F4CBBDD-B2B0-4EBA-93CB-3CD6625D7CC0"),
]
B_ROWS = [
    ("b1", "email", "jsmith@googlemail.com"),
    ("b2", "phone", "+1 415 555 0123"),
    ("b3", "ip_prefix", "198.51.100.0/24"),
    ("b4", "email", "somebody@example.org"),
]
KINDS = ["email", "phone", "ip_prefix", "payment_fingerprint", "device_id"]
ROOT = Path(__file__).resolve().parent.parent


def _verify(node: Node):  # type: ignore[no-untyped-def]
    return verify_log(node.home.audit_path, node.home.audit_key().public_key(), node=node.config.name)


@pytest.fixture
def pair(federation, csv_file):  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", audit__transcripts="true")
    b = federation.node("lab-b", audit__transcripts="true")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
    federation.serve("lab-b")
    federation.serve("lab-a")
    federation.connect_all()
    return a, b


def test_every_message_both_ways_is_logged_with_its_digest_and_bounds(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    outcome = a.match("lab-b", kinds=KINDS)
    with a.peer_client("lab-b") as client:
        client.node_info()
    ours, theirs = load_entries(a.home.audit_path), load_entries(b.home.audit_path)
    sent_a = [e for e in ours if e["type"] == "sent"]
    # (a reveal session asks for the filter first, then streams its request; after the
    # session, the two nodes exchange signed heads of their logs: witness/exchange)
    assert [e["step"] for e in sent_a] == ["open", "setup-request", "request-chunk", "close", "exchange", "info-request"]
    # What one side sent is exactly what the other logged as received (same SHA-256).
    received_b = {(e["step"], e["sha256"]) for e in theirs if e["type"] == "received"}
    assert {(e["step"], e["sha256"]) for e in sent_a} <= received_b
    sent_b = [e for e in theirs if e["type"] == "sent"]
    assert [e["step"] for e in sent_b] == ["opened", "setup-chunk", "response-chunk", "closed", "exchanged", "info"]
    received_a = {(e["step"], e["sha256"]) for e in ours if e["type"] == "received"}
    assert {(e["step"], e["sha256"]) for e in sent_b} <= received_a
    # parameters bounding what the peer learns are on every PSI message
    setup = next(e for e in sent_b if e["step"] == "setup-chunk")
    assert setup["params"]["false_positive_rate"] == "1e-09" and setup["params"]["mode"] == "reveal"
    assert setup["params"]["setup_items"] == 4 and setup["items"] == 4
    request = next(e for e in sent_a if e["step"] == "request-chunk")
    assert request["params"]["set_size"] == outcome.requester_set_size == request["items"]
    assert all(e["session"] == outcome.session_id for e in sent_a if e["protocol"] == "psi" and e["step"] != "open")
    # disclosures on both sides: our set size to b; b's filter (what a can learn) to a
    disclosed_a = [e for e in ours if e["type"] == "disclosure"]
    assert disclosed_a[0]["result"]["requester_set_size"] == outcome.requester_set_size
    disclosed_b = [e for e in theirs if e["type"] == "disclosure"]
    assert disclosed_b[0]["result"]["our_items"] == 4 and disclosed_b[0]["result"]["queries"] == 6
    for node in (a, b):
        assert _verify(node).ok


def test_a_refusal_is_logged_as_sent_status_text(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    with pytest.raises(PeerRefused):
        a.match("lab-b", dataset="flagged", peer_dataset="secret", kinds=["email"])
    status = [e for e in load_entries(b.home.audit_path) if e["type"] == "sent" and e["step"].endswith("-status")]
    assert len(status) == 1 and status[0]["params"]["status"] == "NOT_FOUND" and status[0]["peer"] == "lab-a"
    assert _verify(b).ok


def test_job_run_with_transcripts_scans_clean_against_the_raw_data(federation, csv_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a")  # transcripts off in config: the job turns them on
    b = federation.node("lab-b", audit__transcripts="true")
    a_file, b_file = csv_file("a.csv", A_ROWS), csv_file("b.csv", B_ROWS)
    a.import_file("flagged", a_file, None)
    b.import_file("flagged", b_file, None)
    federation.serve("lab-b")
    federation.connect_all()
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "weekly"\nparticipants = ["lab-a", "lab-b"]\ndataset = "flagged"\n'
        f"kinds = {json.dumps(KINDS)}\ntranscripts = true\n"
    )
    assert run_job(a, load_job(job)).status == "ok"
    with a.peer_client("lab-b") as client:
        client.node_info()  # outside the job: logged, but no transcript
    entries = load_entries(a.home.audit_path)
    sent = [e for e in entries if e["type"] == "sent"]
    assert all("transcript" in e for e in sent if e["job"]) and not any("transcript" in e for e in sent if not e["job"])
    assert {e["job"] for e in sent if e["job"]} == {e["job"] for e in entries if e.get("step") == "open"}
    for node, files in ((a, [a_file]), (b, [b_file])):
        result = scan_audit(node.home.audit_path, files, DEFAULT_CONTEXT)
        assert result.transcripts >= 4 and result.messages_checked >= 4
        assert result.clean, (result.hits, result.invalid)


def _all_forms(raw_file: Path) -> list[tuple[int, str, bytes]]:
    source = load_sources([raw_file], DEFAULT_CONTEXT)[0]
    out = []
    for code in range(len(BASES) * _FORMS_PER_BASE):
        base, form = divmod(code, _FORMS_PER_BASE)
        out.append((code, BASES[base], make_form(source.bases[base], base, form)))
    return out


def test_every_form_of_a_planted_identifier_is_found_with_its_place(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", audit__transcripts="true")
    raw = csv_file("one.csv", [("a1", "email", "J.Smith+promo@GMAIL.com")])
    sid = "ab" * 16
    forms = _all_forms(raw)
    # A buggy protocol step that puts a form of an identifier into a chunk it sends.
    for index, (code, base, needle) in enumerate(forms):
        data = os.urandom(40) + needle + os.urandom(40)
        chunk = pb.Chunk(protocol_version=1, session_id=sid, index=0, last=True, total_bytes=len(data), data=data)
        a.egress.send(chunk, peer="lab-b", protocol="psi", step="request-chunk", session_id=f"{sid}", parameters={"n": index})
    result = scan_audit(a.home.audit_path, [raw], DEFAULT_CONTEXT)
    found = {f.what.split(" of ")[0] for f in result.hits}
    expected = {"raw text"} | {f"{h}({b}) as {enc}" for h in ALGORITHMS for b in BASES for enc in ENCODINGS}
    expected |= {"canonical text", "item text"}
    assert expected <= found, expected - found
    assert all("one.csv (actor a1, email)" in f.what and "byte " in f.place for f in result.hits)
    # ...and those chunks are not OpenMined Requests either
    assert result.invalid and not result.clean


def test_a_form_split_across_two_chunks_is_found(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", audit__transcripts="true")
    raw = csv_file("one.csv", [("a1", "payment_fingerprint", "FpQx81kLmn02aa")])
    needle = _all_forms(raw)[0][2]
    data = os.urandom(100) + needle + os.urandom(100)
    cut = 100 + len(needle) // 2
    sid = "cd" * 16
    for index, part in enumerate((data[:cut], data[cut:])):
        chunk = pb.Chunk(protocol_version=1, session_id=sid, index=index, last=index == 1,
                         total_bytes=len(data) if index == 0 else 0, data=part)
        a.egress.send(chunk, peer="lab-b", protocol="psi", step="response-chunk", session_id=sid)
    result = scan_audit(a.home.audit_path, [raw], DEFAULT_CONTEXT)
    assert any("across the boundary" in f.place for f in result.hits), result.hits


def test_message_checks_know_psi_and_report_unknown_steps() -> None:
    assert check_message("psi", "closed", pb.PsiCloseResponse(protocol_version=1).SerializeToString()) == []
    assert check_message("psi", "close", pb.PsiCloseRequest(protocol_version=1, session_id="ab" * 16, outcome="x@y.z").SerializeToString())
    assert "no message check" in check_message("intersection-sum", "blinded", b"")[0]
    bad_point = b"\x02" + b"\xff" * 32  # x >= p: not on the curve
    from private_set_intersection.python import Response

    msg = Response()
    msg.encrypted_elements.append(bad_point)
    assert "not a point on P-256" in check_message("psi", "response-chunk", msg.SerializeToString())[0]
    unknown = pb.PsiCloseResponse(protocol_version=1).SerializeToString() + b"\x52\x03abc"  # field 10, bytes
    assert "fields its type does not define" in check_message("psi", "closed", unknown)[0]


_CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from psi_share import Node

    class KillBeforeSend:
        # Runs after the audit recorder appended (and fsynced) the entry, before
        # the chunk can be handed to gRPC: the worst moment to die.
        def record(self, event):
            if event.direction == "sent" and event.step == "request-chunk":
                os.kill(os.getpid(), signal.SIGKILL)
        def record_disclosure(self, disclosure):
            pass

    node = Node.open(sys.argv[1])
    node.egress.add_recorder(KillBeforeSend())
    node.match("lab-b", kinds=["email", "phone"])
    """
)


@pytest.mark.slow
def test_a_crash_between_logging_and_sending_leaves_a_consistent_log(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    home = a.home.path
    a.close()  # the subprocess is this node now
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(home)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    entries = load_entries(home / "audit")
    last = entries[-1]
    assert last["type"] == "sent" and last["step"] == "request-chunk"  # logged...
    result = verify_log(home / "audit", a.home.audit_key().public_key(), node="lab-a")
    assert result.ok and result.uncovered > 0, result.problems  # ...consistent, the tail just not yet signed
    theirs = load_entries(b.home.audit_path)
    assert not [e for e in theirs if e["type"] == "received" and e["step"] == "request-chunk"]  # ...never sent
    with Node.open(home) as again:  # the node opens and appends after the crash
        with again.peer_client("lab-b") as client:
            client.node_info()
    assert verify_log(home / "audit", a.home.audit_key().public_key()).ok


def test_a_serving_node_signs_what_it_logged_without_being_stopped(pair) -> None:  # type: ignore[no-untyped-def]
    """The responder's log is under a signature a few seconds after a session, while it
    still serves: the compliance officer's verify passes (exit 0) on a live node."""
    import time

    from psi_share.audit.log import DEFAULT_CHECKPOINT_SECONDS

    a, b = pair
    a.match("lab-b", kinds=["email"])
    deadline = time.monotonic() + DEFAULT_CHECKPOINT_SECONDS + 60  # generous on a loaded machine
    while not _verify(b).signed and time.monotonic() < deadline:
        time.sleep(0.1)
    result = _verify(b)
    assert result.signed, (result.problems, result.uncovered)
    assert load_entries(b.home.audit_path)[-1]["type"] == "checkpoint"
    assert any(e["type"] == "disclosure" for e in load_entries(b.home.audit_path))


def test_older_homes_get_an_audit_key_and_log(federation) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a")
    home = a.home
    a.close()
    (home.keys_path / "audit.key").unlink()
    for f in sorted(home.audit_path.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    home.audit_path.rmdir()
    with Node.open(home.path):
        pass
    assert oct((home.keys_path / "audit.key").stat().st_mode & 0o777) == "0o600"
    assert (home.audit_path / LOG_FILE).exists()
    assert verify_log(home.audit_path, home.audit_key().public_key()).ok


def _cli(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), *map(str, args)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def test_cli_verify_scan_and_report_after_a_real_run(pair, csv_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    a.match("lab-b", kinds=KINDS)
    a.match("lab-b", kinds=["email"], mode=__import__("psi_share").Mode.COUNT)
    b_home = b.home.path
    b.close()  # as after 'serve' stops: a final signed checkpoint
    raw = csv_file("b-raw.csv", B_ROWS)
    verified = _cli(b_home, "audit", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr
    head = _cli(b_home, "audit", "head").stdout.strip()
    scanned = _cli(b_home, "audit", "scan", "--against", raw)
    assert scanned.returncode == 0 and "CLEAN" in scanned.stdout, scanned.stdout + scanned.stderr
    out = tmp_path / "report"
    reported = _cli(b_home, "audit", "report", "--out", out)
    assert reported.returncode == 0, reported.stderr
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    # the count goes through the cardinality protocol (the responder counts), not a PSI filter
    assert "| lab-a | psi | setup-chunk | 1 |" in markdown
    assert "| lab-a | cardinality | session-set-chunk | 1 |" in markdown
    assert "| lab-a | cardinality | count-chunk | 1 |" in markdown
    assert "fresh session key, mixed with random decoys" in markdown and "one number: the count released" in markdown
    assert "queries against our data: 2 (holding 8 of the peer's items)" in markdown
    assert "our items those queries covered: 6 in total" in markdown  # 4 items, then its 2 emails
    assert "<svg" in page and "lab-a" in page and "http" not in page.replace('http://www.w3.org/2000/svg', "")
    # a raw identifier planted in a transcript is found by the CLI, with its place
    segment = sorted((b_home / "audit" / "transcripts").iterdir())[0]
    entries = [e for e in load_entries(b_home / "audit") if e.get("step") == "response-chunk"]
    data = bytearray(segment.read_bytes())
    offset = entries[0]["transcript"]["offset"] + 20
    data[offset:offset + 20] = b"somebody@example.org"
    segment.write_bytes(bytes(data))
    tampered = _cli(b_home, "audit", "verify")
    assert tampered.returncode == 1 and "transcript bytes" in tampered.stderr
    # edit an entry: verify names it; the exported head no longer matches
    log = b_home / "audit" / LOG_FILE
    lines = log.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"peer":"lab-a"' in line)
    lines[n] = lines[n].replace(b'"peer":"lab-a"', b'"peer":"lab-c"')
    log.write_bytes(b"".join(lines))
    edited = _cli(b_home, "audit", "verify", "--expect-head", head)
    assert edited.returncode == 1 and f"first bad entry at line {n + 1} (seq {n})" in edited.stderr


def test_cli_scan_reports_a_planted_identifier_and_exits_non_zero(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", audit__transcripts="true")
    raw = csv_file("raw.csv", A_ROWS)
    leak = pb.PsiCloseRequest(protocol_version=1, session_id="ab" * 16, outcome="nobody@example.org")
    # The egress refuses to send free text that breaks its field's rule (issue 13) ...
    with pytest.raises(LocalProtocolError, match="field outcome must be lowercase letters"):
        a.egress.send(leak, peer="lab-b", protocol="psi", step="close", session_id="ab" * 16)
    # ... so the leak is planted as software without that check would have logged it.
    payload = leak.SerializeToString()
    a.audit.record(WireEvent(direction="sent", peer="lab-b", protocol="psi", step="close", session_id="ab" * 16,
                             byte_length=len(payload), sha256=hashlib.sha256(payload).hexdigest(), payload=payload))
    home = a.home.path
    a.close()
    result = _cli(home, "audit", "scan", "--against", raw)
    assert result.returncode == 1
    assert re.search(r"IDENTIFIER FOUND: entry seq \d+ \(psi/close to lab-b, session ababababab", result.stderr)
    assert "raw = canonical text of" in result.stderr and "raw.csv (actor a4, email)" in result.stderr
    assert "BAD MESSAGE" in result.stderr and "outcome holds free text" in result.stderr
    assert "nobody@example.org" not in result.stdout + result.stderr  # named by file and actor, never by value


def test_health_reflection_and_unauthenticated_callers_are_logged_too(pair, federation) -> None:  # type: ignore[no-untyped-def]
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from psi_share.transport.server import NODE_HEADER
    from psi_share.v1 import node_pb2_grpc as pb_grpc

    a, b = pair
    # Mutual TLS: only federation members connect at all; lab-c holds a valid
    # certificate but is not a peer of lab-b, so the call gate refuses every
    # call it makes, health and reflection included (issue 13), each refusal
    # on record; a member's health and reflection calls are recorded under its name.
    federation.node("lab-c")
    with federation.channel("lab-c", "lab-b") as channel:
        for call in (
            lambda: health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")),
            lambda: next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))),
            lambda: pb_grpc.PsiShareNodeStub(channel).NodeInfo(pb.NodeInfoRequest(protocol_version=1),
                                                              metadata=((NODE_HEADER, "mallory"),)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with federation.channel("lab-a", "lab-b") as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    sent = [e for e in load_entries(b.home.audit_path) if e["type"] == "sent"]
    assert [(e["protocol"], e["step"], e["peer"]) for e in sent] == [
        ("grpc-health", "Check-gate-status", "unauthenticated:lab-c"),  # its certificate's name
        ("grpc-reflection", "ServerReflectionInfo-gate-status", "unauthenticated:lab-c"),
        ("node", "NodeInfo-gate-status", "unauthenticated:lab-c"),  # not the name it claimed
        ("grpc-health", "Check", "lab-a"),
        ("grpc-reflection", "ServerReflectionInfo", "lab-a"),
    ]
    b_home = b.home.path
    b.close()
    result = scan_audit(b_home / "audit", [], DEFAULT_CONTEXT)
    assert result.messages_checked == 5 and not result.invalid  # each parses as its type
