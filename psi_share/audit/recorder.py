"""The egress recorder that writes the audit log.

Registered on the node's :class:`~psi_share.transport.egress.Egress`, it
appends one entry per message *before* the message is handed back for
sending; the append is fsync-ed, so if it fails or the process dies
during it, the message is never sent. Transcripts (the exact bytes sent)
are kept for every message when the node's ``[audit] transcripts`` is on,
and for the messages of the job runs listed in :attr:`transcript_jobs`
(a job file's ``transcripts = true``).
"""

from __future__ import annotations

import threading

from ..events import Disclosure, WireEvent
from .log import AuditLog


class AuditRecorder:
    def __init__(self, log: AuditLog, *, transcripts: bool = False) -> None:
        self.log = log
        self.transcripts = transcripts
        self._jobs: set[str] = set()
        self._jobs_lock = threading.Lock()

    def keep_transcripts_for(self, job_id: str) -> None:
        with self._jobs_lock:
            self._jobs.add(job_id)

    def stop_transcripts_for(self, job_id: str) -> None:
        with self._jobs_lock:
            self._jobs.discard(job_id)

    def _keeps(self, event: WireEvent) -> bool:
        if event.direction != "sent":
            return False
        if self.transcripts:
            return True
        with self._jobs_lock:
            return bool(event.job_id) and event.job_id in self._jobs

    def record(self, event: WireEvent) -> None:
        fields = {
            "peer": event.peer,
            "protocol": event.protocol,
            "step": event.step,
            "session": event.session_id,
            "job": event.job_id,
            "items": event.items,
            "bytes": event.byte_length,
            "sha256": event.sha256,
            "params": dict(event.parameters),
        }
        self.log.append(event.direction, fields, event.payload if self._keeps(event) else None)

    def record_disclosure(self, disclosure: Disclosure) -> None:
        self.log.append(
            "disclosure",
            {
                "peer": disclosure.peer,
                "protocol": disclosure.protocol,
                "session": disclosure.session_id,
                "job": disclosure.job_id,
                "result": dict(disclosure.result),
            },
        )
