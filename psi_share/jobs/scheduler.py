"""Running a node's scheduled jobs inside ``psi-share serve``.

Which job files a node runs comes from ``[jobs] scheduled`` in its config
(globs relative to the home; default ``jobs/*.toml``). A file without a
``[job.schedule]`` table is skipped with a note (it can still be run by
hand or by an external cron with ``psi-share job run``).

When a job is due is computed from the store, not from memory: the time of
its last completed run (whoever started it: this scheduler, an external
cron, a person) and the schedule. A node that was down across one or more
slots runs the job ONCE when it comes back, then follows the schedule from
that run on. A job that has never run waits for its first slot after the
scheduler started.

Every run takes the job's lock first (see ``lock.py``): when an external
``psi-share job run`` of the same job is in progress, the scheduler skips
and looks again later instead of overlapping. The clock and the wait are
parameters, so tests drive the scheduler without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, JobBusy, PsiShareError
from ..node.node import Node
from ..timefmt import utc_text
from .runner import job_lock, run_job
from .spec import JobRunResult, JobSpec, load_job
from .schedule import Due, plan

log = logging.getLogger("psi_share.scheduler")

#: Longest single wait of the loop, so that runs started elsewhere (cron,
#: a person) and clock changes are noticed.
MAX_WAIT_SECONDS = 60.0
#: How long to wait before looking again at a job another process is running.
BUSY_RETRY_SECONDS = 30.0


def find_scheduled_jobs(home: Path, patterns: Sequence[str]) -> list[JobSpec]:
    """Load every job file the patterns name that carries a schedule.

    A broken job file is an error (serve refuses to start rather than
    silently not running a job); two files with the same job name too.
    """
    jobs: dict[str, JobSpec] = {}
    for pattern in patterns:
        paths = sorted(Path(pattern).parent.glob(Path(pattern).name)) if Path(pattern).is_absolute() \
            else sorted(home.glob(pattern))
        for path in paths:
            if not path.is_file():
                continue
            job = load_job(path)
            if job.schedule is None:
                log.info("job file %s has no [job.schedule]: not scheduled (run it with 'psi-share job run')", path)
                continue
            if job.name in jobs and jobs[job.name].source != job.source:
                raise ConfigError(f"{path}: job {job.name!r} is already scheduled by {jobs[job.name].source}")
            jobs[job.name] = job
    return list(jobs.values())


@dataclass(frozen=True)
class PlannedJob:
    job: JobSpec
    reference: float  # time of the last completed run, or when the scheduler started
    due: Due


class JobScheduler:
    """Runs scheduled jobs of one node when they are due.

    ``run_pending()`` does one pass (used by tests with a fake clock);
    ``start()`` runs passes in a background thread until ``stop()``.
    """

    def __init__(
        self,
        node,  # type: ignore[no-untyped-def]  # psi_share.node.node.Node
        jobs: Sequence[JobSpec],
        *,
        clock: Callable[[], float] | None = None,
        on_result: Callable[[JobRunResult], None] | None = None,
    ) -> None:
        self.node = node
        self.jobs = list(jobs)
        self.clock = clock or node.clock
        self.on_result = on_result
        self.stop_event = threading.Event()
        self.started_at = self.clock()
        self._busy_until: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def plan(self, job: JobSpec, now: float | None = None) -> PlannedJob:
        assert job.schedule is not None
        now = self.clock() if now is None else now
        last = self.node.store.last_completed_job_run(job.name)
        reference = self.started_at if last is None else max(last.started_at, last.scheduled_for or 0.0)
        return PlannedJob(job, reference, plan(job.schedule, reference, now))

    def run_pending(self) -> list[JobRunResult]:
        """Run every job that is due now, each at most once; return the results."""
        results = []
        for job in self.jobs:
            if self.stop_event.is_set():
                break
            now = self.clock()
            if self._busy_until.get(job.name, 0.0) > now or not self.plan(job, now).due.is_due:
                continue
            result = self._run_if_still_due(job)
            if result is not None:
                results.append(result)
        return results

    def _run_if_still_due(self, job: JobSpec) -> JobRunResult | None:
        try:
            lock = job_lock(self.node, job.name)
        except JobBusy as exc:
            log.info("scheduled job %s is due but %s; looking again in %.0fs", job.name, exc, BUSY_RETRY_SECONDS)
            self._busy_until[job.name] = self.clock() + BUSY_RETRY_SECONDS
            return None
        with lock:
            self.node.store.mark_interrupted_runs(job.name, now=self.clock())
            now = self.clock()
            planned = self.plan(job, now)  # again: another process may have run it meanwhile
            if not planned.due.is_due:
                return None
            due = planned.due
            trigger = due.trigger(now)
            if trigger == "catch-up":
                log.warning(
                    "job %s: %d scheduled run(s) were missed since %s; running it once now",
                    job.name, due.missed, utc_text(due.at),
                )
            try:
                result = run_job(
                    self.node, job, triggered_by=trigger, scheduled_for=due.at, cancel=self.stop_event, lock=lock,
                )
            except PsiShareError as exc:
                # Not a peer failure (those are inside the result) but e.g. a
                # dataset that is gone or a participant that is no known peer.
                # Nothing was recorded; say it once, and try again at the next slot.
                retry_at = job.schedule.next_after(self.clock())  # type: ignore[union-attr]
                log.error("scheduled job %s could not run: %s (trying again at %s)", job.name, exc, utc_text(retry_at))
                self._busy_until[job.name] = retry_at
                return None
        if self.on_result:
            self.on_result(result)
        return result

    def seconds_until_next(self) -> float:
        now = self.clock()
        nexts = [max(self.plan(j, now).due.at, self._busy_until.get(j.name, 0.0)) for j in self.jobs]
        return max(0.0, min([*nexts, now + MAX_WAIT_SECONDS]) - now)

    # -- background thread -------------------------------------------------

    def start(self) -> None:
        for job in self.jobs:
            p = self.plan(job)
            log.info("scheduled job %s: %s, next run %s", job.name, job.schedule.describe(), utc_text(p.due.at))  # type: ignore[union-attr]
        self._thread = threading.Thread(target=self._loop, name="psi-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_pending()
                wait = self.seconds_until_next()
            except Exception:  # the scheduler must outlive one bad pass
                log.exception("scheduler pass failed")
                wait = MAX_WAIT_SECONDS
            self.stop_event.wait(min(max(wait, 0.05), MAX_WAIT_SECONDS))

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the loop to stop (a run in progress ends its backoff waits); True if it ended in time."""
        self.stop_event.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def start_scheduler(node: Node, *, on_result: Callable[[JobRunResult], None] | None = None) -> JobScheduler | None:
    """Start running the scheduled job files of ``[jobs] scheduled``; None when there are none."""
    jobs = find_scheduled_jobs(node.home.path, node.config.jobs.scheduled)
    if not jobs:
        return None
    scheduler = JobScheduler(node, jobs, on_result=on_result)
    scheduler.start()
    return scheduler
