"""Periodic jobs on real nodes: history, diffs, retries and partial runs,
the overlap lock (with a holder killed by SIGKILL), the scheduler driven by
a fake clock, and exports (the STIX bundle parsed back by ``stix2``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import stix2

from psi_share import ImportMode, Node
from psi_share.errors import JobBusy, PsiShareError
from psi_share.jobs.exports import EXTENSION_ID, PsiShareIdentifier, collect, to_csv, to_json, to_stix
from psi_share.jobs.history import diff_runs, previous_diff, summary_line
from psi_share.jobs.runner import job_lock, run_job
from psi_share.jobs.spec import JobSpec
from psi_share.jobs.lock import JobLock, lock_path
from psi_share.jobs.retry import JobEvent
from psi_share.jobs.schedule import Schedule
from psi_share.jobs.scheduler import JobScheduler, find_scheduled_jobs
from psi_share.protocols.psi import Mode

FAST_RETRY = {"jobs__peer_attempts": 3, "jobs__backoff_initial_seconds": 0.01, "jobs__backoff_max_seconds": 0.02}


def emails(prefix: str, names: list[str]) -> list[tuple[str, str, str]]:
    return [(f"{prefix}{n}", "email", f"x{n}@example.org") for n in names]


A_ROWS = emails("a", ["1", "2", "3", "4", "5"])


def job(name: str = "weekly", participants: tuple[str, ...] = ("lab-a", "lab-b", "lab-c"), **kw) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec(name=name, participants=participants, dataset="flagged", peer_dataset="flagged",
                   kinds=("email",), **kw)


@pytest.fixture
def trio(federation, csv_file):  # type: ignore[no-untyped-def]
    """lab-a (requester, fast retries) and serving lab-b, lab-c with data of run 1."""
    a = federation.node("lab-a", **FAST_RETRY)
    b, c = federation.node("lab-b"), federation.node("lab-c")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b1.csv", [("b1", "email", "x1@example.org"), ("b2", "email", "x2@example.org")]), None)
    c.import_file("flagged", csv_file("c1.csv", [("c1", "email", "x2@example.org"), ("c2", "email", "x3@example.org")]), None)
    federation.serve("lab-b")
    federation.serve("lab-c")
    federation.connect_all()
    return a, b, c


# -- history and diff ---------------------------------------------------------


def test_history_and_diff_against_a_hand_computed_case(trio, csv_file) -> None:  # type: ignore[no-untyped-def]
    a, b, c = trio
    first = run_job(a, job())
    assert first.status == "ok"
    # Run 1 by hand: b has x1, x2; c has x2, x3.
    assert first.attribution == {"a1": ("lab-b",), "a2": ("lab-b", "lab-c"), "a3": ("lab-c",)}

    # Between the runs b replaces x2 by x4, and c adds x1 and drops x2.
    b.import_file("flagged", csv_file("b2.csv", [("b1", "email", "x1@example.org"), ("b4", "email", "x4@example.org")]), ImportMode.REPLACE)
    c.import_file("flagged", csv_file("c2.csv", [("c1", "email", "x1@example.org"), ("c2", "email", "x3@example.org")]), ImportMode.REPLACE)
    second = run_job(a, job())
    assert second.attribution == {"a1": ("lab-b", "lab-c"), "a3": ("lab-c",), "a4": ("lab-b",)}

    run1, run2 = a.store.job_run(first.run_id), a.store.job_run(second.run_id)
    d = diff_runs(a.store, run1, run2)
    # Hand-computed: a4 is new (b); a2 is gone (was b, c); a1 gained c; a3 unchanged.
    assert [(x.actor_id, x.before, x.after) for x in d.newly_shared] == [("a4", (), ("lab-b",))]
    assert [(x.actor_id, x.before, x.after) for x in d.no_longer_shared] == [("a2", ("lab-b", "lab-c"), ())]
    assert [(x.actor_id, x.before, x.after) for x in d.peers_changed] == [("a1", ("lab-b",), ("lab-b", "lab-c"))]
    assert d.compared_peers == ("lab-b", "lab-c") and d.excluded_peers == {} and not d.count_only
    # By default a run is compared with the previous ok run of its job.
    assert previous_diff(a.store, run2).base.id == run1.id
    assert previous_diff(a.store, run1) is None
    line = summary_line(second, previous_diff(a.store, run2))
    assert "ok" in line and "2/2 peers ok" in line and "1 newly shared, 1 no longer shared, 1 with changed peers" in line

    # The history keeps status, timings, parameters and per-peer outcome.
    peers = a.store.job_run_peers(second.run_id)
    assert [(p.peer, p.status, p.attempts, p.matched_actors) for p in peers] == [("lab-b", "ok", 1, 2), ("lab-c", "ok", 1, 2)]
    assert run2.parameters["kinds"] == ["email"] and run2.finished_at >= run2.started_at
    assert run2.triggered_by == "manual" and run2.scheduled_for is None


def test_count_only_runs_diff_counts_not_actors(trio) -> None:  # type: ignore[no-untyped-def]
    a, _, _ = trio
    r1 = run_job(a, job("counts", mode=Mode.COUNT))
    r2 = run_job(a, job("counts", mode=Mode.COUNT))
    d = diff_runs(a.store, a.store.job_run(r1.run_id), a.store.job_run(r2.run_id))
    assert d.count_only and d.counts == {"lab-b": (2, 2), "lab-c": (2, 2)} and d.empty
    assert "no actors" in summary_line(r2, d)
    with pytest.raises(PsiShareError, match="count-only"):
        collect(a.store, "lab-a", a.store.job_run(r2.run_id))


# -- peers down: retries, partial runs ----------------------------------------


def test_unreachable_peer_is_retried_then_failed_and_run_is_partial(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", **FAST_RETRY)
    b = federation.node("lab-b")
    federation.node("lab-c")  # never serves: its address is 127.0.0.1:1
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", emails("b", ["1", "2"])), None)
    federation.serve("lab-b")
    federation.connect_all()
    events: list[JobEvent] = []
    finished: list[tuple[str, str]] = []
    result = run_job(a, job(), on_event=events.append, on_peer=lambda r: finished.append((r.peer, r.status)))

    assert result.status == "partial"
    assert finished == [("lab-b", "ok"), ("lab-c", "failed")]  # each peer once, when it is done
    by_peer = {p.peer: p for p in result.peers}
    assert by_peer["lab-b"].status == "ok" and by_peer["lab-b"].attempts == 1
    down = by_peer["lab-c"]
    assert down.status == "failed" and down.attempts == 3 and down.session_id is None
    assert "peer lab-c is unavailable" in down.error and "after 3 attempts" in down.error
    assert [e.attempt for e in events if e.kind == "retry"] == [1, 2]
    assert [e.delay for e in events if e.kind == "waiting"] == [0.01, 0.02]
    # Nothing from the failed peer is a result: only lab-b attributes.
    assert result.attribution == {"a1": ("lab-b",), "a2": ("lab-b",)}
    assert all(s.peer == "lab-b" for s in a.store.sessions(job_run_id=result.run_id) if s.status == "done")
    run = a.store.job_run(result.run_id)
    assert run.status == "partial" and "lab-c" in run.error
    stored = {p.peer: p for p in a.store.job_run_peers(result.run_id)}
    assert stored["lab-c"].status == "failed" and stored["lab-c"].attempts == 3 and "unavailable" in stored["lab-c"].error
    assert "partial" in summary_line(result, None) and "lab-c failed: peer lab-c is unavailable" in summary_line(result, None)


def test_peer_back_during_backoff_is_matched(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", **FAST_RETRY)
    b = federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", emails("b", ["3"])), None)
    federation.connect_all()  # lab-b not serving yet: 127.0.0.1:1

    def bring_b_up(event: JobEvent) -> None:
        if event.kind == "retry" and event.peer == "lab-b":
            server = federation.serve("lab-b")
            a.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=a.clock(), replace=True)

    result = run_job(a, job(participants=("lab-a", "lab-b")), on_event=bring_b_up)
    assert result.status == "ok" and result.peers[0].attempts == 2
    assert result.attribution == {"a3": ("lab-b",)}


def test_diff_of_a_partial_run_does_not_report_the_down_peer_as_change(trio) -> None:  # type: ignore[no-untyped-def]
    a, _, _ = trio
    first = run_job(a, job())
    a.store.add_peer("lab-c", "127.0.0.1:1", now=a.clock(), replace=True)  # lab-c goes away
    second = run_job(a, job())
    assert second.status == "partial"
    d = previous_diff(a.store, a.store.job_run(second.run_id))
    assert d is not None and d.base.id == first.run_id
    assert d.compared_peers == ("lab-b",) and "lab-c" in d.excluded_peers and "failed in run" in d.excluded_peers["lab-c"]
    assert d.empty  # a3 (matched only by lab-c) is not "no longer shared"
    # A later run compares with the last *ok* run, not the partial one.
    third = run_job(a, job())
    assert previous_diff(a.store, a.store.job_run(third.run_id)).base.id == first.run_id


# -- the overlap lock -----------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from psi_share.jobs.lock import JobLock
    lock = JobLock.acquire(Path(sys.argv[1]), "weekly", now=time.time())
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_excludes_and_survives_a_holder_killed_by_sigkill(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(JobBusy) as exc:
            JobLock.acquire(tmp_path, "weekly", now=0)
        assert exc.value.holder["pid"] == holder.pid
        assert f"job 'weekly' is already running (pid {holder.pid}, since " in str(exc.value)
        # Another job's lock is independent.
        JobLock.acquire(tmp_path, "daily", now=0).release()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    # The kernel released the flock with the process: no stale lock to clean up.
    assert lock_path(tmp_path, "weekly").exists()
    with JobLock.acquire(tmp_path, "weekly", now=0):
        assert json.loads(lock_path(tmp_path, "weekly").read_text())["pid"] == os.getpid()
        # Two locks in one process exclude each other too (scheduler thread vs a manual run).
        with pytest.raises(JobBusy):
            JobLock.acquire(tmp_path, "weekly", now=0)
    assert lock_path(tmp_path, "weekly").read_text() == ""
    JobLock.acquire(tmp_path, "weekly", now=0).release()


def test_run_job_refuses_to_overlap_and_cleans_up_after_a_crashed_run(trio) -> None:  # type: ignore[no-untyped-def]
    a, _, _ = trio
    with job_lock(a, "weekly"):
        with pytest.raises(JobBusy):
            run_job(a, job())
    assert a.store.job_runs("weekly") == []  # nothing was started
    # A run whose process died stays 'running' in the store; the next run
    # (holding the lock, so that run cannot be alive) marks it interrupted.
    a.store.start_job_run("deadbeef" * 4, "weekly", {"mode": "reveal"}, now=a.clock() - 100)
    run_job(a, job())
    statuses = {r.id: r.status for r in a.store.job_runs("weekly")}
    assert statuses.pop("deadbeef" * 4) == "interrupted" and list(statuses.values()) == ["ok"]


# -- the scheduler, with a fake clock -----------------------------------------


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_scheduler_runs_on_time_and_once_after_downtime(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(1_893_488_400.0)  # 2030-01-01 09:00 UTC
    federation.node("lab-a", **FAST_RETRY).close()
    a = federation.nodes["lab-a"] = Node.open(federation.root / "lab-a", clock=clock)
    b = federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", emails("b", ["1"])), None)
    federation.serve("lab-b")
    federation.connect_all()
    daily = job(participants=("lab-a", "lab-b"), schedule=Schedule(cron="0 10 * * *"))

    scheduler = JobScheduler(a, [daily])
    assert scheduler.run_pending() == []  # 09:00: first slot is 10:00
    assert scheduler.seconds_until_next() == 60  # never waits more than a minute at once
    clock.now += 3600 + 3  # 10:00:03
    [run] = scheduler.run_pending()
    assert run.status == "ok" and run.triggered_by == "schedule"
    assert a.store.job_run(run.run_id).scheduled_for == 1_893_492_000.0
    assert scheduler.run_pending() == []  # not twice for one slot

    # The node is down until Jan 4 15:00 (three 10:00 slots missed). A new
    # scheduler (a restarted serve) runs the job ONCE, from the stored history.
    clock.now = 1_893_769_200.0  # 2030-01-04 15:00 UTC
    restarted = JobScheduler(a, [daily])
    planned = restarted.plan(daily)
    assert planned.due.missed == 3
    [caught_up] = restarted.run_pending()
    assert caught_up.triggered_by == "catch-up"
    assert a.store.job_run(caught_up.run_id).scheduled_for == 1_893_578_400.0  # Jan 2 10:00, first missed slot
    assert restarted.run_pending() == []
    assert restarted.plan(daily).due.at == 1_893_837_600.0  # next: Jan 5 10:00

    # When a run of the job holds the lock (an external cron run), the
    # scheduler does not overlap; it looks again later.
    clock.now = 1_893_837_600.0 + 1
    with job_lock(a, "weekly"):
        assert restarted.run_pending() == []
    assert restarted.run_pending() == []  # backing off for 30 s
    clock.now += 31
    [later] = restarted.run_pending()
    assert later.triggered_by == "schedule"
    assert [r.triggered_by for r in a.store.job_runs("weekly")] == ["schedule", "catch-up", "schedule"]


def test_scheduled_job_files_from_config(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    base = '[job]\nname = "{name}"\nparticipants = ["lab-a", "lab-b"]\ndataset = "flagged"\nkinds = ["email"]\n'
    (jobs_dir / "daily.toml").write_text(base.format(name="daily") + '[job.schedule]\ncron = "0 3 * * *"\n')
    (jobs_dir / "adhoc.toml").write_text(base.format(name="adhoc"))  # no schedule: skipped
    (jobs_dir / "notes.txt").write_text("not a job")
    found = find_scheduled_jobs(tmp_path, ["jobs/*.toml"])
    assert [j.name for j in found] == ["daily"]
    (jobs_dir / "copy.toml").write_text((jobs_dir / "daily.toml").read_text())
    with pytest.raises(PsiShareError, match="already scheduled by"):
        find_scheduled_jobs(tmp_path, ["jobs/*.toml"])


def test_scheduler_stop_cancels_backoff(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    a = federation.node("lab-a", jobs__peer_attempts=5, jobs__backoff_initial_seconds=30, jobs__backoff_max_seconds=30)
    federation.node("lab-b")
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    federation.connect_all()  # lab-b unreachable
    cancel = threading.Event()
    events: list[JobEvent] = []

    def on_event(e: JobEvent) -> None:
        events.append(e)
        if e.kind == "waiting":
            cancel.set()  # SIGTERM arrives during the 30 s backoff

    result = run_job(a, job(participants=("lab-a", "lab-b")), on_event=on_event, cancel=cancel)
    assert result.status == "failed" and "shutting down" in result.peers[0].error


# -- exports --------------------------------------------------------------------


def test_exports_and_stix_bundle_parse_back(trio, csv_file) -> None:  # type: ignore[no-untyped-def]
    a, b, c = trio
    a.import_file("flagged", csv_file("a-more.csv", [
        ("a1", "phone", "+1 415 555 0100"), ("a2", "ip_prefix", "198.51.100.7/24"), ("a3", "account_handle", "@Mallory"),
    ]), ImportMode.APPEND)
    kinds = ("email", "phone", "ip_prefix", "account_handle")
    spec = JobSpec(name="weekly", participants=("lab-a", "lab-b", "lab-c"), dataset="flagged",
                   peer_dataset="flagged", kinds=kinds)
    first = run_job(a, spec)
    c.import_file("flagged", csv_file("c2.csv", [("c1", "email", "x1@example.org"), ("c2", "email", "x3@example.org")]),
                  ImportMode.REPLACE)
    second = run_job(a, spec)
    run = a.store.job_run(second.run_id)
    export = collect(a.store, "lab-a", run)
    by_actor = {x.actor_id: x for x in export.actors}
    # Run 2 by hand: b has x1, x2; c now x1, x3.
    assert {x: e.peers for x, e in by_actor.items()} == {
        "a1": ("lab-b", "lab-c"), "a2": ("lab-b",), "a3": ("lab-c",)}
    assert {x: e.change for x, e in by_actor.items()} == {"a1": "changed", "a2": "changed", "a3": ""}
    first_start = a.store.job_run(first.run_id).started_at
    assert {e.first_seen for e in by_actor.values()} == {first_start}  # all matched since run 1
    assert export.base_run == first.run_id
    assert by_actor["a1"].identifiers == (("email", "x1@example.org"), ("phone", "+1 415 555 0100"))

    rows = to_csv(export).splitlines()
    assert rows[0] == "actor_id,peer_count,peers,matched_kinds,first_seen,change_since_previous,identifiers"
    assert rows[1].startswith("a1,2,lab-b;lab-c,lab-b:email;lab-c:email,")
    assert rows[1].endswith(",changed,email:x1@example.org;phone:+1 415 555 0100")
    doc = json.loads(to_json(export))
    assert doc["run"]["id"] == second.run_id and "keep inside the lab" in doc["warning"]
    assert doc["actors"][2]["identifiers"] == [
        {"kind": "account_handle", "value": "@Mallory"}, {"kind": "email", "value": "x3@example.org"}]

    text = to_stix(export)
    with pytest.raises(stix2.exceptions.STIXError):
        stix2.parse(text, allow_custom=False)  # the phone is an extension SCO: custom for the library
    bundle = stix2.parse(text, allow_custom=True)
    objects = {o.id: o for o in bundle.objects}
    by_type: dict[str, list] = {}
    for o in bundle.objects:
        by_type.setdefault(o.type, []).append(o)
    assert {i.name for i in by_type["identity"]} == {"lab-a", "lab-b", "lab-c"}
    sightings = {objects[s.sighting_of_ref].name: s for s in by_type["sighting"]}
    assert set(sightings) == {"flagged/a1", "flagged/a2", "flagged/a3"}
    s1 = sightings["flagged/a1"]
    assert s1.count == 2 and {objects[r].name for r in s1.where_sighted_refs} == {"lab-b", "lab-c"}
    assert s1.first_seen.timestamp() == pytest.approx(first_start, abs=1e-3)
    assert sightings["flagged/a2"].count == 1 and sightings["flagged/a3"].count == 1
    observed = objects[s1.observed_data_refs[0]]
    refs = [objects[r] for r in observed.object_refs]
    assert [(o.type, o.value) for o in refs] == [("email-addr", "x1@example.org"), ("x-psi-share-identifier", "+1 415 555 0100")]
    assert isinstance(refs[1], PsiShareIdentifier) and refs[1].kind == "phone"  # validated by its registered class
    assert [o.id for o in by_type["extension-definition"]] == [EXTENSION_ID]
    a2_refs = [objects[r] for r in objects[sightings["flagged/a2"].observed_data_refs[0]].object_refs]
    assert [(o.type, o.value) for o in a2_refs] == [("email-addr", "x2@example.org"), ("ipv4-addr", "198.51.100.0/24")]
    a3_refs = [objects[r] for r in objects[sightings["flagged/a3"].observed_data_refs[0]].object_refs]
    assert [o.type for o in a3_refs] == ["user-account", "email-addr"] and a3_refs[0].account_login == "@Mallory"
    # Every object is TLP:RED; observable ids are hashes of the values (the README's warning).
    assert all(stix2.TLP_RED.id in o.object_marking_refs for o in bundle.objects if o.type != "marking-definition")
    assert stix2.EmailAddress(value="x1@example.org").id == observed.object_refs[0]
    assert text == to_stix(collect(a.store, "lab-a", run))  # deterministic


def test_stix_bundle_of_standard_kinds_parses_strictly(trio) -> None:  # type: ignore[no-untyped-def]
    a, _, _ = trio
    result = run_job(a, job())  # email only: no extension object needed
    bundle = stix2.parse(to_stix(collect(a.store, "lab-a", a.store.job_run(result.run_id))), allow_custom=False)
    assert sorted(o.count for o in bundle.objects if o.type == "sighting") == [1, 1, 2]
    assert not [o for o in bundle.objects if o.type == "extension-definition"]


def test_scheduler_logs_a_job_that_cannot_start_once_per_slot(federation, csv_file, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(1_893_488_400.0)  # 2030-01-01 09:00 UTC
    federation.node("lab-a").close()
    a = federation.nodes["lab-a"] = Node.open(federation.root / "lab-a", clock=clock)
    a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
    hourly = job(participants=("lab-a", "lab-x"), schedule=Schedule(cron="0 * * * *"))  # lab-x: no such peer
    scheduler = JobScheduler(a, [hourly])
    clock.now += 3600
    assert scheduler.run_pending() == []
    assert "could not run: unknown peer 'lab-x'" in caplog.text and "trying again at 2030-01-01 11:00:00Z" in caplog.text
    caplog.clear()
    clock.now += 600
    assert scheduler.run_pending() == [] and "could not run" not in caplog.text  # quiet until the next slot
    assert a.store.job_runs("weekly") == []


def test_store_from_before_job_history_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from psi_share.jobs.history import peer_outcomes
    from psi_share.store import Store
    from psi_share.store.db import _SCHEMA

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA + "PRAGMA user_version=1;")
    db.execute("INSERT INTO job_runs(id, job_name, started_at, finished_at, status, parameters) "
               "VALUES ('r1', 'weekly', 1.0, 2.0, 'ok', '{\"mode\": \"reveal\"}')")
    db.execute("INSERT INTO sessions(id, role, protocol, peer, local_dataset, peer_dataset, kinds, mode, job_run_id, "
               "status, started_at, matched_count) VALUES ('s1', 'requester', 'psi', 'lab-b', 'flagged', 'flagged', "
               "'{}', 'reveal', 'r1', 'done', 1.0, 4)")
    db.commit()
    db.close()
    with Store(path) as store:
        run = store.job_run("r1")
        assert (run.triggered_by, run.scheduled_for, run.status) == ("manual", None, "ok")
        assert store.job_run_peers("r1") == []
        assert peer_outcomes(store, run) == {"lab-b": ("ok", 4)}  # from its sessions
        assert store.last_completed_job_run("weekly").id == "r1"
