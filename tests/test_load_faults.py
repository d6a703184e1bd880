"""Load and faults against real ``psi-share serve`` processes over mutual TLS.

* 32 concurrent sessions from four peers against one node: every result is
  right for its own set (no cross-talk), nothing crashes.
* A responder killed (SIGKILL) mid-job: the requester's job fails with a
  clear error and stores nothing partial; a rerun succeeds once it is back.
* ``kill -9`` never corrupts a store (mid-import and mid-session).
* SIGTERM: health goes NOT_SERVING, in-flight sessions finish or fail
  cleanly, the process exits 0 with its store closed.

Peers are in-process nodes; their egress hook (every message passes it
before it is sent) is where a fault is injected at an exact protocol step.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from psi_share import Node, load_job
from psi_share.errors import PeerUnavailable, PsiShareError
from psi_share.events import WireEvent
from psi_share.jobs.runner import run_job
from psi_share.transport.server import SERVICE_NAME

RESPONDER_EMAILS = [f"shared{i}@example.org" for i in range(60)]


class ServeProcess:
    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log = home, log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "serve", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._fh,
        )
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ports = re.findall(r"listening on port (\d+)", self.log.read_text(errors="replace"))
            if ports and self.proc.poll() is None:
                return int(ports[-1])
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited early:\n{self.log.read_text()}")
            time.sleep(0.05)
        pytest.fail(f"serve did not start:\n{self.log.read_text()}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill9()
        self._fh.close()


@pytest.fixture
def processes():  # type: ignore[no-untyped-def]
    started: list[ServeProcess] = []

    def start(home: Path, log: Path) -> ServeProcess:
        # A log per start: the port line of an earlier run must not be read.
        p = ServeProcess(home, log.with_name(f"{log.stem}-{len(started)}.log"))
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def _csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("actor_id,kind,value\n" + "".join(f"{a},{k},{v}\n" for a, k, v in rows))
    return path


def _responder_home(federation, tmp_path: Path, peers: list[str]) -> Path:  # type: ignore[no-untyped-def]
    # Each peer runs 8 sessions at once: calls_per_peer above 8, since the gate counts a call
    # until its handler returns, a moment after the peer already holds the reply and sends its
    # next call (the fair-share tests hold peers to the default of 8).
    r = federation.node("lab-r", server__calls_per_peer="12")
    r.import_file("flagged", _csv(tmp_path / "r.csv", [(f"r{i}", "email", e) for i, e in enumerate(RESPONDER_EMAILS)]), None)
    for p in peers:
        r.store.add_peer(p, "127.0.0.1:1", now=0)
    home = r.home.path
    r.close()  # the serve process owns it from here
    return home


def _check_store(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()


class _KillAt:
    """An egress recorder that runs ``action`` once, when ``step`` is first sent."""

    def __init__(self, step: str, action, after: int = 1) -> None:  # type: ignore[no-untyped-def]
        self.step, self.action, self.after, self.seen = step, action, after, 0
        self._lock = threading.Lock()

    def record(self, event: WireEvent) -> None:
        if event.direction == "sent" and event.step == self.step:
            with self._lock:
                self.seen += 1
                if self.seen == self.after:
                    self.action()

    def record_disclosure(self, disclosure) -> None:  # type: ignore[no-untyped-def]
        pass


def test_32_concurrent_sessions_from_four_peers(federation, tmp_path, processes) -> None:
    peers = [f"lab-p{i}" for i in range(4)]
    home = _responder_home(federation, tmp_path, peers)
    server = processes(home, tmp_path / "r.log")
    nodes: dict[str, Node] = {}
    expected: dict[tuple[str, int], set[str]] = {}
    for pi, name in enumerate(peers):
        node = federation.node(name)
        node.store.add_peer("lab-r", f"127.0.0.1:{server.port}", now=0)
        for s in range(8):
            shared = 1 + (pi * 8 + s) % 17
            rows = [(f"{name}-s{s}-own{j}", "email", f"{name}.s{s}.{j}@example.net") for j in range(5)]
            rows += [(f"{name}-s{s}-hit{j}", "email", RESPONDER_EMAILS[(pi * 7 + s + j) % 60]) for j in range(shared)]
            node.import_file(f"s{s}", _csv(tmp_path / f"{name}-s{s}.csv", rows), None)
            expected[(name, s)] = {f"{name}-s{s}-hit{j}" for j in range(shared)}
        nodes[name] = node

    def one(key: tuple[str, int]) -> tuple[tuple[str, int], set[str], int]:
        name, s = key
        outcome = nodes[name].match("lab-r", dataset=f"s{s}", peer_dataset="flagged", kinds=["email"])
        actors = {m.actor_id for m in nodes[name].store.matches([outcome.session_id])}
        return key, actors, outcome.count  # type: ignore[return-value]

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, list(expected)))
    assert len(results) == 32
    for key, actors, count in results:
        assert actors == expected[key] and count == len(expected[key]), key
    assert server.proc.poll() is None  # still serving
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    with Node.open(home) as r:
        mine = [s for s in r.store.sessions(limit=100) if s.role == "responder"]
        assert len(mine) == 32 and {s.status for s in mine} == {"done"}
        assert sorted(s.requester_set_size for s in mine) == sorted(5 + len(v) for v in expected.values())
    _check_store(home / "store.sqlite3")


def _job(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    path.write_text('[job]\nname = "weekly"\nparticipants = ["lab-a", "lab-r"]\ndataset = "flagged"\n'
                    'kinds = ["email"]\nmode = "reveal"\n')
    return path


def test_responder_killed_mid_job_fails_cleanly_and_rerun_succeeds(federation, tmp_path, processes) -> None:
    home = _responder_home(federation, tmp_path, ["lab-a"])
    server = processes(home, tmp_path / "r.log")
    a = federation.node("lab-a")
    a.import_file("flagged", _csv(tmp_path / "a.csv", [(f"a{i}", "email", e) for i, e in enumerate(RESPONDER_EMAILS[:9])]
                                   + [("z", "email", "nobody@example.net")]), None)
    a.store.add_peer("lab-r", f"127.0.0.1:{server.port}", now=0)
    a.egress.add_recorder(_KillAt("request-chunk", server.kill9))  # dies as our blinded set is about to go out
    job = load_job(_job(tmp_path))

    result = run_job(a, job)
    assert result.status == "failed" and result.attribution == {}
    [peer] = result.peers
    assert peer.status == "failed" and "lab-r" in peer.error and "unavailable" in peer.error
    sessions = [s for s in a.store.sessions() if s.role == "requester"]
    assert [s.status for s in sessions] == ["failed"] and sessions[0].matched_count is None
    assert a.store.matches([s.id for s in sessions]) == []
    _check_store(home / "store.sqlite3")

    again = processes(home, tmp_path / "r.log")  # back, on a new port
    a.store.add_peer("lab-r", f"127.0.0.1:{again.port}", now=0, replace=True)
    rerun = run_job(a, job)
    assert rerun.status == "ok" and set(rerun.attribution) == {f"a{i}" for i in range(9)}
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(timeout=30) == 0
    with Node.open(home) as r:
        statuses = sorted(s.status for s in r.store.sessions() if s.role == "responder")
    assert statuses == ["done", "interrupted"]  # the killed run's session, recorded at restart


def test_kill_9_never_corrupts_the_store(federation, tmp_path, processes) -> None:
    """SIGKILL mid-import (all or nothing) and mid-session (store stays consistent)."""
    home = _responder_home(federation, tmp_path, ["lab-a"])
    big = _csv(tmp_path / "big.csv", [(f"x{i}", "email", f"bulk{i}@example.org") for i in range(40_000)])
    for delay in (0.4, 0.9, 1.6):
        proc = subprocess.Popen([sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "data", "import",
                                 "customers", str(big), "--replace"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=10)
        _check_store(home / "store.sqlite3")
        with Node.open(home) as r:
            names = {d.name: d for d in r.store.datasets()}
            assert names["flagged"].actors == len(RESPONDER_EMAILS)
            assert "customers" not in names or names["customers"].actors == 40_000  # all or nothing

    server = processes(home, tmp_path / "r.log")
    a = federation.node("lab-a")
    for s in range(6):
        a.import_file(f"s{s}", _csv(tmp_path / f"a{s}.csv", [(f"a{s}-{i}", "email", e) for i, e in enumerate(RESPONDER_EMAILS[s:s + 20])]), None)
    a.store.add_peer("lab-r", f"127.0.0.1:{server.port}", now=0)
    a.egress.add_recorder(_KillAt("request-chunk", server.kill9, after=4))
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(a.match, "lab-r", dataset=f"s{s}", peer_dataset="flagged", kinds=["email"]) for s in range(6)]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except PsiShareError as exc:
                outcomes.append(exc)
    assert any(isinstance(o, PeerUnavailable) for o in outcomes)
    for o in outcomes:  # whatever finished is right; whatever failed stored nothing
        if not isinstance(o, Exception):
            assert o.count == 20
    for s in a.store.sessions():
        if s.status != "done":
            assert s.status == "failed" and a.store.matches([s.id]) == []
    _check_store(home / "store.sqlite3")
    again = processes(home, tmp_path / "r.log")
    a.store.add_peer("lab-r", f"127.0.0.1:{again.port}", now=0, replace=True)
    assert a.match("lab-r", dataset="s0", peer_dataset="flagged", kinds=["email"]).count == 20


def test_sigterm_drains_and_exits_cleanly(federation, tmp_path, processes) -> None:
    home = _responder_home(federation, tmp_path, ["lab-a"])
    server = processes(home, tmp_path / "r.log")
    a = federation.node("lab-a")
    a.import_file("flagged", _csv(tmp_path / "a.csv", [(f"a{i}", "email", e) for i, e in enumerate(RESPONDER_EMAILS[:5])]), None)
    a.store.add_peer("lab-r", f"127.0.0.1:{server.port}", now=0)
    # A session left open by a peer that went quiet, and one in flight at SIGTERM.
    from psi_share.protocols.psi import Mode, PsiOpen

    with a.peer_client("lab-r") as client:
        idle = client.psi_open(PsiOpen(dataset="flagged", kinds={"email": 1}, set_size=3, mode=Mode.COUNT))
    a.egress.add_recorder(_KillAt("request-chunk", lambda: server.proc.send_signal(signal.SIGTERM)))
    try:
        outcome = a.match("lab-r", kinds=["email"])
        assert outcome.count == 5  # finished within the grace period
    except PeerUnavailable:
        session = [s for s in a.store.sessions() if s.role == "requester"][0]
        assert session.status == "failed" and a.store.matches([session.id]) == []
    assert server.proc.wait(timeout=30) == 0
    log = server.log.read_text()
    assert "shutting down" in log and "Traceback" not in log
    # The store was closed: SQLite checkpoints and removes the WAL when its last connection closes.
    assert not (home / "store.sqlite3-wal").exists()
    _check_store(home / "store.sqlite3")
    with Node.open(home) as r:
        assert r.store.session(idle.session_id).status == "aborted"  # recorded, not left open


def test_graceful_stop_reports_not_serving_while_draining(federation, csv_file) -> None:
    b = federation.node("lab-b")
    b.import_file("flagged", csv_file("b.csv", [("b1", "email", "x@example.org")]), None)
    federation.node("lab-a")
    server = federation.serve("lab-b")
    federation.connect_all()
    from psi_share.protocols import PROTOCOL_VERSION
    from psi_share.v1 import node_pb2 as pb
    from psi_share.v1 import node_pb2_grpc as pb_grpc

    release = threading.Event()
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        opened = stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                                kinds=[pb.KindVersion(kind="email", version=1)], set_size=1), timeout=10)

        def slow():  # type: ignore[no-untyped-def]
            yield pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=opened.session_id, index=0,
                           last=False, total_bytes=35, data=b"\x0a")
            release.wait(20)

        call = stub.PsiProcess(slow(), timeout=30)
        time.sleep(0.3)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 2})
        stopper.start()
        time.sleep(0.3)
        check = server._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), None)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopper.join(timeout=20)
        release.set()
        with pytest.raises(Exception):
            list(call)
    assert b.store.session(opened.session_id).status in ("failed", "aborted")
    assert b.responder.open_sessions() == 0
    del federation.servers["lab-b"]  # already stopped
