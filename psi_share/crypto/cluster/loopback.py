"""A Dask cluster on this machine, bound to 127.0.0.1 only, for tests and
benchmarks (and an operator trying the engine on one host): a scheduler and
``workers`` workers, each its own process, dashboards on 127.0.0.1 port 0,
no nanny, spilling off (``--memory-limit 0``: no task data is ever written
to disk, keys included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

_SPILL_OFF = {"DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False", "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False"}


class LoopbackCluster:
    """Started by :meth:`start`, stopped by :meth:`stop` (or ``with``)."""

    def __init__(self, root: Path, workers: int = 2, threads: int = 1) -> None:
        self.root, self.workers, self.threads = root, workers, threads
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def start(self, timeout: float = 30.0) -> LoopbackCluster:
        from distributed import Client

        self.root.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.root / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        env = {**os.environ, **_SPILL_OFF}
        log = (self.root / "cluster.log").open("ab")
        local = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", *local,
             "--scheduler-file", str(scheduler_file)], stdout=log, stderr=log, env=env, cwd=self.root))
        deadline = time.monotonic() + timeout
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                self.stop()
                raise RuntimeError(f"Dask scheduler did not start (see {self.root / 'cluster.log'})")
            time.sleep(0.05)
        self.address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(self.workers):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", *local,
                 "--no-nanny", "--nthreads", str(self.threads), "--memory-limit", "0"],
                stdout=log, stderr=log, env=env, cwd=self.root))
        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(self.workers, timeout=timeout)
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
