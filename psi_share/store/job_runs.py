"""Job runs in the store: each run of a job, each peer's outcome in it, and
the history queries periodic jobs need (last run, previous ok run, when an
actor was first matched). Mixed into :class:`~psi_share.store.db.Store`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..errors import NotFound


@dataclass(frozen=True)
class JobRunRecord:
    id: str
    job_name: str
    started_at: float
    finished_at: float | None
    status: str
    parameters: dict
    error: str
    triggered_by: str = "manual"  # manual | schedule | catch-up
    scheduled_for: float | None = None  # the schedule slot this run served


@dataclass(frozen=True)
class JobRunPeerRecord:
    """One peer's outcome in one job run (attempts counts retries)."""

    run_id: str
    peer: str
    status: str  # "ok" or "failed"
    attempts: int
    session_id: str | None
    matched_items: int | None
    matched_actors: int | None
    seconds: float
    error: str


class JobRunRecords:
    """The job-run half of the store (uses the store's ``transaction`` and ``_query``)."""

    # -- job runs --------------------------------------------------------

    def start_job_run(
        self, run_id: str, job_name: str, parameters: dict, *, now: float,
        triggered_by: str = "manual", scheduled_for: float | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO job_runs(id, job_name, started_at, status, parameters, triggered_by, scheduled_for) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (run_id, job_name, now, json.dumps(parameters, sort_keys=True), triggered_by, scheduled_for),
            )

    def finish_job_run(self, run_id: str, status: str, *, now: float, error: str = "") -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE job_runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, now, error, run_id),
            )

    def job_run(self, run_id: str) -> JobRunRecord:
        rows = self._query("SELECT * FROM job_runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotFound(f"no job run {run_id!r}")
        return _job_run(rows[0])

    def job_runs(self, job_name: str | None = None) -> list[JobRunRecord]:
        if job_name is None:
            rows = self._query("SELECT * FROM job_runs ORDER BY started_at")
        else:
            rows = self._query("SELECT * FROM job_runs WHERE job_name = ? ORDER BY started_at", (job_name,))
        return [_job_run(r) for r in rows]

    # -- job run history (periodic jobs) ---------------------------------

    def record_job_run_peer(self, record: JobRunPeerRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO job_run_peers(run_id, peer, status, attempts, session_id, matched_items, "
                "matched_actors, seconds, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, record.peer, record.status, record.attempts, record.session_id,
                 record.matched_items, record.matched_actors, record.seconds, record.error),
            )

    def job_run_peers(self, run_id: str) -> list[JobRunPeerRecord]:
        rows = self._query("SELECT * FROM job_run_peers WHERE run_id = ? ORDER BY peer", (run_id,))
        return [
            JobRunPeerRecord(r["run_id"], r["peer"], r["status"], r["attempts"], r["session_id"],
                             r["matched_items"], r["matched_actors"], r["seconds"], r["error"])
            for r in rows
        ]

    def find_job_run(self, run_id: str) -> JobRunRecord:
        """A run by its id or a unique prefix of it."""
        rows = self._query("SELECT * FROM job_runs WHERE id = ?", (run_id,))
        if not rows and run_id:
            rows = self._query("SELECT * FROM job_runs WHERE substr(id, 1, length(?)) = ?", (run_id, run_id))
        if len(rows) != 1:
            raise NotFound(f"no job run {run_id!r}" + (" (ambiguous prefix)" if rows else ""))
        return _job_run(rows[0])

    def mark_interrupted_runs(self, job_name: str, *, now: float) -> int:
        """Runs of ``job_name`` still 'running' become 'interrupted'.

        Only call this while holding the job's lock: no run of it can then be
        alive, so a 'running' row is left over from a process that died.
        """
        with self.transaction() as db:
            return db.execute(
                "UPDATE job_runs SET status = 'interrupted', finished_at = ?, "
                "error = 'the process running it stopped before it finished' "
                "WHERE job_name = ? AND status = 'running'",
                (now, job_name),
            ).rowcount

    def last_completed_job_run(self, job_name: str) -> JobRunRecord | None:
        """The latest run of ``job_name`` that finished (ok, partial or failed)."""
        rows = self._query(
            "SELECT * FROM job_runs WHERE job_name = ? AND status IN ('ok', 'partial', 'failed') "
            "ORDER BY started_at DESC LIMIT 1",
            (job_name,),
        )
        return _job_run(rows[0]) if rows else None

    def previous_ok_job_run(self, run: JobRunRecord) -> JobRunRecord | None:
        """The latest fully successful run of the same job that started before ``run``."""
        rows = self._query(
            "SELECT * FROM job_runs WHERE job_name = ? AND status = 'ok' AND id != ? AND "
            "(started_at < ? OR (started_at = ? AND id < ?)) ORDER BY started_at DESC, id DESC LIMIT 1",
            (run.job_name, run.id, run.started_at, run.started_at, run.id),
        )
        return _job_run(rows[0]) if rows else None

    def first_matched(self, job_name: str, *, until: float) -> dict[str, float]:
        """actor_id -> start of the earliest run of ``job_name`` (up to ``until``)
        in which some peer matched it (completed sessions only)."""
        rows = self._query(
            "SELECT m.actor_id, MIN(r.started_at) FROM matches m "
            "JOIN sessions s ON s.id = m.session_id JOIN job_runs r ON r.id = s.job_run_id "
            "WHERE r.job_name = ? AND r.started_at <= ? AND s.role = 'requester' AND s.status = 'done' "
            "GROUP BY m.actor_id",
            (job_name, until),
        )
        return {r[0]: r[1] for r in rows}


def _job_run(r: sqlite3.Row) -> JobRunRecord:
    return JobRunRecord(
        id=r["id"], job_name=r["job_name"], started_at=r["started_at"], finished_at=r["finished_at"],
        status=r["status"], parameters=json.loads(r["parameters"]), error=r["error"],
        triggered_by=r["triggered_by"], scheduled_for=r["scheduled_for"],
    )
