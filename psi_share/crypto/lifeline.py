"""Worker processes die with the node.

A node's worker processes (``spawn``, see :class:`psi_share.crypto.ec.EcEngine`)
wait for work on a pipe from the node. When the node is killed (SIGKILL, OOM
killer) nobody closes that pipe for them in a way they notice, and they used
to stay behind, about 78 MiB each, with the multiprocessing resource tracker.
:func:`watch_parent` is the pool's initializer: a daemon thread in each
worker polls its parent pid and ends the worker (``os._exit``) as soon as the
node is gone (the worker is re-parented, so ``getppid`` changes). The
resource tracker exits by itself once no process holds its pipe.

Why not ``prctl(PR_SET_PDEATHSIG)``: the kernel sends it when the *thread*
that started the worker exits, and the pool starts workers from whichever
thread submits first (a gRPC thread, a thread of a short-lived executor):
workers would be killed while the node runs.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def watch_parent(parent_pid: int, every: float = POLL_SECONDS) -> None:
    """Run in a new worker: exit the worker when ``parent_pid`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os._exit(0)  # no cleanup to do: the work it held belonged to the dead node

    threading.Thread(target=watch, name="psi-parent-watch", daemon=True).start()
