"""The table of open responder sessions that every protocol's responder uses.

A peer opens a session, then calls again naming its id; the table finds the
session (only for the peer that opened it: another peer's id looks exactly
like an unknown one), drops sessions past their time to live, caps how many
are open at once (per peer, so that one peer's abandoned sessions exhaust
only its own quota, and in all), and records in the store how each one ended (expired,
failed, aborted at shutdown). What a peer learns from the table is only
whether an id it names is open for it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..errors import Refused, RemoteProtocolError
from ..store import SessionRecord, Store


class OpenSession(Protocol):
    id: str
    peer: str
    expires: float


S = TypeVar("S", bound=OpenSession)


class SessionTable(Generic[S]):
    """Open sessions of one protocol on the responder side, by id."""

    def __init__(
        self,
        *,
        name: str,
        store: Store,
        clock: Callable[[], float],
        max_open: int,
        max_open_per_peer: int | None = None,
        log: logging.Logger,
        not_found: str = "session",
    ) -> None:
        self.name = name  # for log lines, e.g. "PSI"
        self._store = store
        self._clock = clock
        self._max_open = max_open
        self._max_per_peer = min(max_open_per_peer or max_open, max_open)
        self._log = log
        self._not_found = not_found  # what a NOT_FOUND refusal calls the session
        self._lock = threading.Lock()
        self._sessions: dict[str, S] = {}

    def add(self, session: S, now: float, admit: Callable[[], None] | None = None) -> None:
        """Open ``session``, unless too many are open (RESOURCE_EXHAUSTED).

        ``admit`` runs under the table's lock once the session is sure to
        open (e.g. to charge the peer's daily budget for it, and only then).
        """
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self._max_open:
                raise Refused("RESOURCE_EXHAUSTED", "this node has too many open sessions; retry later")
            held = sum(1 for s in self._sessions.values() if s.peer == session.peer)
            if held >= self._max_per_peer:
                raise Refused("RESOURCE_EXHAUSTED", f"{session.peer} has {held} open {self._not_found}s here, its "
                              "limit ([sessions] max_open_per_peer): close them or let them expire")
            if admit is not None:
                admit()
            self._sessions[session.id] = session

    def get(self, peer: str, sid: str) -> S:
        """``peer``'s open session ``sid`` (NOT_FOUND for any other)."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(sid)
        if session is None or session.peer != peer:
            # Another peer's session id looks exactly like an unknown one.
            # The id is the caller's text: described, never echoed.
            raise Refused("NOT_FOUND", f"no open {self._not_found} has the id this request names "
                          "(expired, closed or never opened)")
        return session

    def pop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def count_by_peer(self) -> dict[str, int]:
        """Open sessions per peer (for metrics)."""
        with self._lock:
            out: dict[str, int] = {}
            for session in self._sessions.values():
                out[session.peer] = out.get(session.peer, 0) + 1
            return out

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            session = self._sessions.pop(sid)
            self._log.info("%s session %s with %s expired", self.name, sid, session.peer)
            self._store.finish_session(sid, "expired", now=now, error="abandoned by requester")

    def expire(self) -> None:
        """Drop sessions past their time to live (the serving node's reaper
        calls this periodically, so abandoned sessions free their memory
        even when no other call arrives)."""
        now = self._clock()
        with self._lock:
            self._expire(now)

    def abort(self, peer: str, sid: str, exc: Exception) -> None:
        """End ``sid`` as failed after a broken or hostile stream (if it is ``peer``'s)."""
        with self._lock:
            session = self._sessions.get(sid)
        if session is not None and session.peer == peer:
            self.fail(session, exc)

    def fail(self, session: S, exc: Exception) -> None:
        self.pop(session.id)
        self._store.finish_session(session.id, "failed", now=self._clock(), error=str(exc)[:500])
        self._log.warning("%s session %s with %s failed: %s", self.name, session.id, session.peer, exc)

    def close_all(self) -> None:
        """Record every open session as aborted (the node is shutting down)."""
        now = self._clock()
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        for sid in sessions:
            self._store.finish_session(sid, "aborted", now=now, error="node shut down")


def start_requester_session(store: Store, record: SessionRecord) -> None:
    """Record a session we requested, under the id the responder gave it.

    The id is the peer's choice: a peer that hands out an id this node has
    already recorded (its own earlier session, or one of ours as responder)
    gets a RemoteProtocolError naming it, never a crash or a record overwritten.
    """
    try:
        store.start_session(record)
    except sqlite3.IntegrityError:
        raise RemoteProtocolError(
            f"peer {record.peer} opened a session under an id this node has already recorded (a reused "
            "session id); the session is refused and nothing is stored"
        ) from None
