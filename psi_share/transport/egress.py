"""The one place every message to a peer passes through.

Both the servicer (answers) and the peer client (requests) hand each
outgoing protobuf message to :meth:`Egress.send` and send exactly the bytes
it was given back; received messages are reported with
:meth:`Egress.received`. Recorders see every message *before* it leaves, so
a recorder that writes durably (the compliance audit log) can guarantee that
no byte reaches the wire unrecorded. The default recorder only logs sizes:
log lines never contain identifiers or payload bytes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from ..events import Disclosure, Recorder, WireEvent

log = logging.getLogger("psi_share.egress")

M = TypeVar("M", bound=Message)


class LoggingRecorder:
    """Logs each message's size and digest at DEBUG (never its content)."""

    def record(self, event: WireEvent) -> None:
        log.debug(
            "%s %s/%s %s peer=%s session=%s bytes=%d items=%d",
            event.direction, event.protocol, event.step,
            "to" if event.direction == "sent" else "from",
            event.peer, event.session_id or "-", event.byte_length, event.items,
        )

    def record_disclosure(self, disclosure: Disclosure) -> None:
        log.debug(
            "disclosed %s result to peer=%s session=%s: %s",
            disclosure.protocol, disclosure.peer, disclosure.session_id or "-", sorted(disclosure.result),
        )


class Egress:
    """Passes messages through every recorder before they may be sent."""

    def __init__(self, recorders: Sequence[Recorder] = ()) -> None:
        self._recorders = list(recorders) or [LoggingRecorder()]
        # session id -> job id, learned from the messages that carry both, so
        # that later messages of a session (chunks, close) name their job too.
        self._session_jobs: dict[str, str] = {}
        self._jobs_lock = threading.Lock()

    def add_recorder(self, recorder: Recorder) -> None:
        self._recorders.append(recorder)

    def _job_of(self, session_id: str, job_id: str) -> str:
        if not session_id:
            return job_id
        with self._jobs_lock:
            if job_id:
                if len(self._session_jobs) > 100_000:  # bounded: old sessions are long closed
                    self._session_jobs.clear()
                self._session_jobs[session_id] = job_id
                return job_id
            return self._session_jobs.get(session_id, "")

    def _emit(self, direction: str, payload: bytes, **context: object) -> None:
        context["job_id"] = self._job_of(str(context.get("session_id", "")), str(context.get("job_id", "")))
        event = WireEvent(
            direction=direction,
            byte_length=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            payload=payload,
            **context,  # type: ignore[arg-type]
        )
        for recorder in self._recorders:
            recorder.record(event)

    def send(
        self,
        message: M,
        *,
        peer: str,
        protocol: str,
        step: str,
        session_id: str = "",
        items: int = 0,
        job_id: str = "",
        parameters: Mapping[str, object] | None = None,
    ) -> M:
        """Record ``message`` as sent to ``peer`` and return it for sending."""
        self._emit(
            "sent", message.SerializeToString(), peer=peer, protocol=protocol, step=step, session_id=session_id,
            items=items, job_id=job_id, parameters=dict(parameters or {}),
        )
        return message

    def received(
        self,
        message: Message,
        *,
        peer: str,
        protocol: str,
        step: str,
        session_id: str = "",
        items: int = 0,
        job_id: str = "",
    ) -> None:
        self._emit(
            "received", message.SerializeToString(), peer=peer, protocol=protocol, step=step,
            session_id=session_id, items=items, job_id=job_id, parameters={},
        )

    def send_status(
        self,
        code: str,
        details: str,
        *,
        peer: str,
        protocol: str,
        step: str,
        session_id: str = "",
    ) -> None:
        """Record an error status (code and message text) about to be sent to ``peer``.

        A refusal's text is bytes on the wire too. ``payload`` is
        ``"<CODE>: <details>"`` in UTF-8, exactly what the peer reads.
        """
        self._emit(
            "sent", f"{code}: {details}".encode(), peer=peer, protocol=protocol, step=f"{step}-status",
            session_id=session_id, items=0, job_id="", parameters={"status": code},
        )

    def disclosed(
        self,
        *,
        peer: str,
        protocol: str,
        session_id: str,
        result: Mapping[str, object],
        job_id: str = "",
    ) -> None:
        """Record that ``peer`` received ``result`` from us (before it is sent)."""
        disclosure = Disclosure(
            peer=peer, protocol=protocol, session_id=session_id, result=dict(result),
            job_id=self._job_of(session_id, job_id),
        )
        for recorder in self._recorders:
            recorder.record_disclosure(disclosure)
