"""The one place every message to a peer passes through.

Both the servicer (answers) and the peer client (requests) hand each
outgoing protobuf message to :meth:`Egress.send` and send exactly the bytes
it was given back; received messages are reported with
:meth:`Egress.received`. Recorders see every message *before* it leaves, so
a recorder that writes durably (the compliance audit log) can guarantee that
no byte reaches the wire unrecorded. The default recorder only logs sizes:
log lines never contain identifiers or payload bytes.

Free text is where an identifier could leave unseen (a customer's email typed
as a dataset name), so every string field of our own messages is checked
here against the rule for what it holds (:data:`TEXT_RULES`: names follow
:data:`psi_share.names.NAME_PATTERN`, ids and versions their own patterns)
before anything is sent, and is copied into the record's parameters
(``text``), so that ``audit scan`` reads it even without transcripts.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from ..errors import LocalProtocolError
from ..events import Disclosure, Recorder, WireEvent
from ..names import NAME_PATTERN

log = logging.getLogger("psi_share.egress")

M = TypeVar("M", bound=Message)


SESSION_ID = _ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,32}$")
_NAME_RULE = "lowercase letters, digits, '-' or '_', starting with a letter, at most 63 characters"
_ID_RULE = "letters, digits, '-' or '_', at most 64 characters"

#: What each string field of the psi_share.v1 messages may hold, by field name.
#: A field not listed here is held to the id rule (no '@', '.', '+' or space).
TEXT_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    **{f: (NAME_PATTERN, _NAME_RULE) for f in (
        "dataset", "name", "kind", "kinds", "metric", "initiator", "route", "node_name", "protocols",
        "outcome", "step",
    )},
    **{f: (_ID, _ID_RULE) for f in ("session_id", "job_id", "run_id")},
    **{f: (_VERSION, "digits, letters, '.', '+' or '-'") for f in ("software_version", "openmined_psi_version")},
}


def text_fields(message: Message, prefix: str = "") -> dict[str, object]:
    """Every non-empty string field of ``message`` (nested ones as ``outer.inner``), checked.

    Raises LocalProtocolError naming the message type and field (never the
    value) when one breaks its rule in :data:`TEXT_RULES`.
    """
    out: dict[str, object] = {}
    for descriptor, value in message.ListFields():
        path = f"{prefix}{descriptor.name}"
        repeated = descriptor.label == descriptor.LABEL_REPEATED
        values = list(value) if repeated else [value]
        if descriptor.type == descriptor.TYPE_MESSAGE:
            for inner in values:
                for key, text in text_fields(inner, f"{path}.").items():
                    if repeated:
                        out.setdefault(key, []).append(text)  # type: ignore[attr-defined]
                    else:
                        out[key] = text
            continue
        if descriptor.type != descriptor.TYPE_STRING:
            continue
        pattern, rule = TEXT_RULES.get(descriptor.name, (_ID, _ID_RULE))
        for text in values:
            if text and not pattern.match(text):
                raise LocalProtocolError(
                    f"refusing to send {message.DESCRIPTOR.full_name}: its field {path} must be {rule} "
                    "(a value that is not could be customer data); nothing was sent"
                )
        out[path] = values if repeated else value
    return out


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
        """Record ``message`` as sent to ``peer`` and return it for sending.

        Our own messages' text fields are checked first (:func:`text_fields`)
        and recorded in the parameters as ``text``, except a session id the
        record names anyway.
        """
        recorded = dict(parameters or {})
        if message.DESCRIPTOR.file.package == "psi_share.v1":
            text = {k: v for k, v in text_fields(message).items() if v not in (session_id, [])}
            if text:
                recorded["text"] = text
        self._emit(
            "sent", message.SerializeToString(), peer=peer, protocol=protocol, step=step, session_id=session_id,
            items=items, job_id=job_id, parameters=recorded,
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
        repeats: int = 0,
    ) -> None:
        """Record an error status (code and message text) about to be sent to ``peer``.

        A refusal's text is bytes on the wire too. ``payload`` is
        ``"<CODE>: <details>"`` in UTF-8, exactly what the peer reads; the
        text is also in the entry's parameters (``text``), so that the audit
        scan reads it even when transcripts are off. ``repeats`` > 0 records
        that the same status, already on record, was sent that many more
        times (the call gate counts floods of identical refusals).
        """
        parameters: dict[str, object] = {"status": code, "text": details}
        if repeats:
            parameters["repeats"] = repeats
        self._emit(
            "sent", f"{code}: {details}".encode(), peer=peer, protocol=protocol, step=f"{step}-status",
            session_id=session_id, items=0, job_id="", parameters=parameters,
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
