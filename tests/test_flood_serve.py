"""A real ``psi-share serve`` under a member's flood keeps serving another member
(issue 13), within a bounded, documented audit growth; its metrics and local
health listener say so; killed with SIGKILL, it leaves no worker process behind.

The node runs with its default limits. lab-a (the attacker, a member with a
valid certificate, raw gRPC from ``flood_attacker.py``) holds 200 idle
streams (its share is 8), floods empty and 1-byte chunks, and abandons
sessions up to its quota, all at once; meanwhile lab-c (in-process) asks for
NodeInfo and runs a match. The audit bound asserted is the README's (section
"Fair share under attack"): per attacking peer, at most 4 entries per
admitted call, at most ``call_burst + calls_per_second * T`` admitted calls,
and at most 2 entries per RPC and refusal text per
``refusal_log_window_seconds`` for the calls the gate refuses.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from flood_attacker import Attacker
from grpc_health.v1 import health_pb2, health_pb2_grpc

from psi_share.audit.log import load_entries
from psi_share.transport.limits import CallLimits

pytestmark = pytest.mark.slow

ROWS = [(f"r{i}", "email", f"user{i}@example.org") for i in range(60)]
GATE_KEYS = 3 * 2  # RPCs the attacker calls (PsiOpen, PsiProcess, NodeInfo) x gate refusal texts (rate, concurrency)


def _children(pid: int) -> set[int]:
    """Every live process whose parent is ``pid`` (read from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _port(server, what: str) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(what + r"\D*(\d+)", server.output())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    pytest.fail(f"serve never logged {what!r}:\n{server.output()}")


def _served(c) -> None:  # type: ignore[no-untyped-def]
    with c.peer_client("lab-b", timeout=30) as client:
        assert client.node_info().node_name == "lab-b"
    assert c.match("lab-b", kinds=["email"]).count == len(ROWS[::3])


def test_a_serve_process_under_flood_serves_another_member_and_leaves_no_worker_behind(
    federation, csv_file, start_server, tmp_path
) -> None:
    b = federation.node("lab-b", server__health_listen='"127.0.0.1:0"', server__metrics_listen='"127.0.0.1:0"')
    amounts = tmp_path / "b.csv"  # amounts: the node starts its EC worker processes at serve start
    amounts.write_text("actor_id,kind,value,amount\n" + "".join(f"{a},{k},{v},{i}\n" for i, (a, k, v) in enumerate(ROWS)))
    b.import_file("flagged", amounts, None)
    for peer in ("lab-a", "lab-c"):
        b.store.add_peer(peer, "127.0.0.1:1", now=0)
    home = b.home.path
    b.close()
    federation.nodes.pop("lab-b")
    a = federation.node("lab-a")
    c = federation.node("lab-c")
    c.import_file("flagged", csv_file("c.csv", ROWS[::3]), None)
    server = start_server(home)
    c.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=0)
    a.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=0)
    health_port, metrics_port = _port(server, "local probes only"), _port(server, "metrics endpoint on port")
    deadline = time.monotonic() + 30
    while len(_children(server.proc.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + the resource tracker
        time.sleep(0.1)
    workers = _children(server.proc.pid)
    assert len(workers) >= 3, workers
    log_path = home / "audit" / "log.jsonl"
    assert c.match("lab-b", kinds=["email"]).count == len(ROWS[::3])  # warm: the filter is ready

    limits = CallLimits()
    with federation.channel("lab-a", "lab-b", port=server.port) as channel:
        attacker = Attacker(channel)
        started = time.monotonic()
        floods: list[str] = []
        abandoned: list[tuple[int, str]] = []
        try:
            # Phase 1: chunk floods and abandoned sessions at once; phase 2: 200 idle streams
            # (they take the attacker's whole share of calls, so they come last).
            threads = [
                threading.Thread(target=lambda: floods.extend(
                    attacker.empty_chunk_flood(chunks=2000, tiny=i % 2 == 1) for i in range(12))),
                threading.Thread(target=lambda: abandoned.append(attacker.abandon_sessions(up_to=100))),
            ]
            for t in threads:
                t.start()
            _served(c)  # the other member is served while it goes on
            for t in threads:
                t.join(timeout=120)
            idle = attacker.idle_streams(200, timeout=300)
            seen = Attacker.outcomes(idle, wait=20)
            assert seen["open"] == limits.calls_per_peer and seen["RESOURCE_EXHAUSTED"] == 200 - limits.calls_per_peer
            _served(c)
        finally:
            attacker.stop()
            seconds = time.monotonic() - started
    assert set(floods) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "open:RESOURCE_EXHAUSTED"}, floods
    assert "INVALID_ARGUMENT" in floods
    assert abandoned and abandoned[0][1] == "RESOURCE_EXHAUSTED" and abandoned[0][0] <= 16

    # Local probes: plaintext health on loopback, and the metrics show the flood by peer.
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as local:
        status = health_pb2_grpc.HealthStub(local).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    assert re.search(r'psi_share_refusals_total\{peer="lab-a",reason="concurrency",status="RESOURCE_EXHAUSTED",'
                     r'where="gate"\} (\d+)', text)
    assert 'psi_share_sessions{outcome="done",peer="lab-c",protocol="psi",role="responder"} 3.0' in text
    assert re.search(r'psi_share_budget_sessions_used\{peer="lab-a"\} \d+', text)
    assert "psi_share_audit_append_seconds_count" in text

    time.sleep(1.0)  # the handlers of the streams the attacker cancelled record their status
    entries = [e for e in load_entries(log_path.parent) if e.get("peer") == "lab-a"]
    admitted = limits.call_burst + limits.calls_per_second * seconds
    windows = seconds / limits.refusal_log_window_seconds + 2
    bound = 4 * admitted + 2 * GATE_KEYS * windows
    assert len(entries) <= bound, (len(entries), bound, seconds)

    os.kill(server.proc.pid, 9)
    server.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(workers) == set(), "worker processes outlived the node"
