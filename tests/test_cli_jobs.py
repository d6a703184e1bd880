"""Periodic jobs through the real ``psi-share`` command: exit codes, ``--json``,
history, diff, exports, the overlap lock, and ``serve`` running a scheduled
job that was missed while the node was down."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import stix2
from cli_helpers import (
    EXPECTED_MATCHES,
    Labs,
    cli,
    csv_rows,
    failed_cleanly,
    flat,
    ok,
    ok_json,
    serve_b,
    write_job,
)

from psi_share.jobs.exports import PsiShareIdentifier  # registers x-psi-share-identifier with stix2
from psi_share.jobs.lock import JobLock

HELP = {
    ("job", "history"): "List the runs of JOB (newest last): status, timings, trigger, per-peer outcome.",
    ("job", "schedule"): "Show the scheduled jobs 'serve' runs ([jobs] scheduled), their last and next runs.",
    ("results", "diff"): "What changed from job run RUN_A to RUN_B (ids or unique prefixes).",
    ("results", "export"): "Export job run RUN_ID for this lab's own tools (CSV, JSON or STIX 2.1).",
}


@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_of_periodic_job_commands(tmp_path: Path, command: tuple[str, ...]) -> None:
    out = ok(cli(tmp_path, *command, "--help")).stdout
    assert out.startswith("Usage: psi-share " + " ".join(command)) and HELP[command] in flat(out)


def fast_retries(home: Path, attempts: int = 2) -> None:
    config = home / "config.toml"
    text = config.read_text()
    text = text.replace("peer_attempts = 3", f"peer_attempts = {attempts}")
    text = text.replace("backoff_initial_seconds = 5", "backoff_initial_seconds = 0.01")
    config.write_text(text)


@pytest.mark.slow
def test_runs_history_diff_export_and_exit_codes(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    fast_retries(labs.a)
    serve_b(labs, start_server, tmp_path)
    jobfile = write_job(tmp_path / "weekly.toml", "weekly", ["lab-a", "lab-b"])

    first = ok_json(cli(tmp_path, "job", "run", jobfile, "--json", home=labs.a))
    assert first["status"] == "ok" and first["diff"] is None and first["peers"][0]["attempts"] == 1
    assert "no previous ok run to compare with" in first["summary"]
    # lab-b's data changes: b2 (matches a2) goes, a new row matches a3.
    rows = [("b1", "email", "jsmith@googlemail.com"), ("b3", "email", "nobody@example.org"),
            ("b5", "phone", "+442079460018"), ("b6", "phone", "+1-415-555-0199"), ("b8", "email", "mixed.case@example.org")]
    (tmp_path / "b2.csv").write_text("actor_id,kind,value\n" + "".join(f"{a},{k},{v}\n" for a, k, v in rows))
    ok(cli(tmp_path, "data", "import", "flagged", tmp_path / "b2.csv", "--replace", home=labs.b))
    second = cli(tmp_path, "job", "run", jobfile, home=labs.a)  # table output for people
    assert second.returncode == 0, second.stderr
    summary = [line for line in second.stdout.splitlines() if line.startswith("job weekly run ")]
    assert len(summary) == 1 and "ok" in summary[0]
    assert f"since run {first['run_id'][:12]}: 1 newly shared, 1 no longer shared, 0 with changed peers" in summary[0]

    history = ok_json(cli(tmp_path, "job", "history", "weekly", "--json", home=labs.a))
    assert [(h["status"], h["triggered_by"], h["peers"]) for h in history] == [("ok", "manual", {"lab-b": "ok"})] * 2
    assert history[0]["actors"] == len(EXPECTED_MATCHES) and history[0]["parameters"]["kinds"] == ["email", "phone"]
    second_id = history[1]["run"]

    diff = ok_json(cli(tmp_path, "results", "diff", second_id[:10], "--json", home=labs.a))
    assert diff["base_run"] == first["run_id"]
    assert [c["actor_id"] for c in diff["newly_shared"]] == ["a3"]
    assert [(c["actor_id"], c["before"]) for c in diff["no_longer_shared"]] == [("a2", ["lab-b"])]
    same = ok_json(cli(tmp_path, "results", "diff", first["run_id"], second_id, "--json", home=labs.a))
    assert same["newly_shared"] == diff["newly_shared"]
    table = ok(cli(tmp_path, "results", "diff", first["run_id"], second_id, "--format", "csv", home=labs.a))
    assert [(r["change"], r["actor_id"]) for r in csv_rows(table.stdout)] == [("newly shared", "a3"), ("no longer shared", "a2")]

    out = tmp_path / "export" / "run.stix.json"
    out.parent.mkdir()
    ok(cli(tmp_path, "results", "export", second_id, "--format", "stix", "-o", out, home=labs.a))
    assert out.stat().st_mode & 0o777 == 0o600
    bundle = stix2.parse(out.read_text(), allow_custom=True)  # phones: extension SCOs
    assert sorted(o.count for o in bundle.objects if o.type == "sighting") == [1] * 5
    phones = [o for o in bundle.objects if isinstance(o, PsiShareIdentifier)]
    assert sorted(p.value for p in phones) == ["+44 20 7946 0018", "415.555.0199"]  # a5, a6 as lab-a wrote them
    csv_out = csv_rows(ok(cli(tmp_path, "results", "export", second_id, "--format", "csv", home=labs.a)).stdout)
    assert {r["actor_id"]: r["change_since_previous"] for r in csv_out}["a3"] == "new"

    # Exit codes: partial 3 (lab-c down, retried), failed 4, busy 5.
    ok(cli(tmp_path, "peers", "add", "lab-c", "127.0.0.1:1", home=labs.a))
    trio = write_job(tmp_path / "trio.toml", "trio", ["lab-a", "lab-b", "lab-c"])
    partial = cli(tmp_path, "job", "run", trio, "--json", home=labs.a)
    assert partial.returncode == 3, partial.stderr
    body = json.loads(partial.stdout)
    lab_c = {p["peer"]: p for p in body["peers"]}["lab-c"]
    assert lab_c["status"] == "failed" and lab_c["attempts"] == 2 and "after 2 attempts" in lab_c["error"]
    assert body["status"] == "partial" and "lab-c failed" in body["summary"]

    holder = JobLock.acquire(labs.a, "weekly", now=time.time())
    try:
        busy = cli(tmp_path, "job", "run", jobfile, "--json", home=labs.a)
    finally:
        holder.release()
    assert "is already running (pid" in failed_cleanly(busy, 5)

    ok(cli(tmp_path, "peers", "add", "lab-b", "127.0.0.1:1", "--replace", home=labs.a))
    failed = cli(tmp_path, "job", "run", jobfile, "--json", home=labs.a)
    assert failed.returncode == 4 and json.loads(failed.stdout)["status"] == "failed"
    assert "has no results to export" in failed_cleanly(
        cli(tmp_path, "results", "export", json.loads(failed.stdout)["run_id"], home=labs.a))


@pytest.mark.slow
def test_serve_runs_a_missed_scheduled_job_once_at_start(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    fast_retries(labs.a)
    serve_b(labs, start_server, tmp_path)
    jobs_dir = labs.a / "jobs"
    jobs_dir.mkdir()
    jobfile = write_job(jobs_dir / "daily.toml", "daily", ["lab-a", "lab-b"])
    jobfile.write_text(jobfile.read_text() + '\n[job.schedule]\ncron = "0 3 * * *"\ntimezone = "Europe/Berlin"\n')
    ok(cli(tmp_path, "job", "run", jobfile, home=labs.a))
    schedule = ok_json(cli(tmp_path, "job", "schedule", "--json", home=labs.a))
    assert [(s["job"], s["schedule"], s["last_status"]) for s in schedule] == [
        ("daily", "cron '0 3 * * *' (Europe/Berlin)", "ok")]
    assert schedule[0]["next_run"] != "now (missed while down)"

    # Pretend the last run was three days ago: the node was down since.
    with sqlite3.connect(labs.a / "store.sqlite3") as db:
        db.execute("UPDATE job_runs SET started_at = started_at - 3 * 86400, finished_at = finished_at - 3 * 86400")
    assert ok_json(cli(tmp_path, "job", "schedule", "--json", home=labs.a))[0]["next_run"] == "now (missed while down)"

    server = start_server(labs.a)
    deadline = time.monotonic() + 30
    while "job daily run" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.terminate() == 0, server.output()
    log = flat(server.output())
    assert "scheduled run(s) were missed" in log and "running it once now" in log
    history = ok_json(cli(tmp_path, "job", "history", "daily", "--json", home=labs.a))
    assert [(h["status"], h["triggered_by"]) for h in history] == [("ok", "manual"), ("ok", "catch-up")]
    assert history[1]["scheduled_for"]
