"""Running native code on a peer's data where a crash cannot take the node down.

Every filter a peer sends is checked in Python first
(:mod:`psi_share.crypto.filter_check`), so that OpenMined only ever reads
what its own encoder could have written. The check is the defence; this is
the backstop. OpenMined is C++ that trusts its input, and a crash there
(SIGSEGV, abort) kills the whole process: a ``serve`` with every other
peer's sessions, a scheduled job. So the step that reads the peer's filter
runs in worker processes of its own, one pool per call: a crash fails that
one session with :class:`RemoteProtocolError` and touches nothing else (a
pool shared across sessions would break every session using it at that
moment, so one cheating peer could fail another peer's match).

Workers are forked from a ``forkserver`` (never from the node itself, which
runs gRPC threads) that has imported OpenMined and psi-share once, so a pool
costs tens of milliseconds rather than a fresh interpreter per call
(``scripts/bench_filters.py`` measures it). Only bytes, ints and the
session's private key cross the process boundary (a pipe to a child of
this node); nothing is logged.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import RemoteProtocolError

_PRELOAD = ["private_set_intersection.python", "psi_share.crypto.openmined"]
_lock = threading.Lock()
_context: Any = None
_starter: threading.Thread | None = None


def _forkserver() -> Any:
    global _context
    with _lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _context = context
        return _context


def warm_up() -> None:
    """Start the fork server now (serve start) rather than on the first call."""
    run_isolated(_ready, [()], what="warm-up")


def start_in_background() -> None:
    """Start the fork server on a background thread (once), so that its
    imports overlap the work before the first isolated call (a requester
    blinding its set) instead of delaying it."""
    global _starter
    with _lock:
        if _starter is not None:
            return
        _starter = threading.Thread(target=_start, name="psi-forkserver-start", daemon=True)
    _starter.start()


def _start() -> None:
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()


def _ready() -> bool:
    return True


def run_isolated(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, what: str) -> list[Any]:
    """``[fn(*args) for args in calls]``, each call in its own worker process
    of a pool that lives for this call only. Exceptions ``fn`` raises come
    back as they are; a worker that dies (signal, abort) raises
    RemoteProtocolError naming ``what`` was being read."""
    if not calls:
        return []
    with ProcessPoolExecutor(max_workers=len(calls), mp_context=_forkserver()) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool:
            raise RemoteProtocolError(
                f"{what} crashed OpenMined in an isolated worker process; the session is refused, the node unharmed"
            ) from None


def run_in_processes(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, workers: int) -> list[Any]:
    """``[fn(*args) for args in calls]`` on ``workers`` forkserver processes
    (pure-Python work that threads would serialize on the GIL: building
    filters). Our own data only; the pool lives for this call."""
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(calls))), mp_context=_forkserver()) as pool:
        return list(pool.map(fn, *zip(*calls)))
