"""One lock per job, so that two runs of one job never overlap.

A run holds ``fcntl.flock`` on ``HOME/locks/job-NAME.lock`` for its whole
duration. The kernel releases a flock when its holder exits, however it
exits (SIGKILL, OOM, power loss of the process), so a crashed run never
leaves a stale lock behind: there is no pid file to clean up by hand. The
holder writes its pid and start time into the file only so that the next
run can say who holds the lock; the content is never what decides.

flock locks belong to an open file description, so the scheduler thread of
``serve``, a ``psi-share job run`` from cron and a second thread in the same
process all exclude each other. (flock is advisory and local: a home on a
network file system shared by two hosts is not supported.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from ..errors import JobBusy
from ..timefmt import utc_text

LOCKS_DIR = "locks"


def lock_path(home: Path, job: str) -> Path:
    return home / LOCKS_DIR / f"job-{job}.lock"


class JobLock:
    """A held job lock; use :meth:`acquire` and release with ``with`` or :meth:`release`."""

    def __init__(self, path: Path, job: str, fd: int) -> None:
        self.path = path
        self.job = job
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path, job: str, *, now: float) -> JobLock:
        """Take the lock without waiting; raise :class:`JobBusy` naming the holder."""
        path = lock_path(home, job)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise JobBusy(job, holder) from None
        except BaseException:
            os.close(fd)
            raise
        since = utc_text(now)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        return cls(path, job, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the holder's note goes with the lock
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}
