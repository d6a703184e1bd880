"""Reading prompt files: JSON Lines, one prompt per line, with the actor that sent it.

Format (``.jsonl`` / ``.ndjson``, UTF-8, a leading byte-order mark allowed)::

    {"actor_id": "acct-1", "text": "Solve step by step: ...", "seen_at": "2026-05-01T12:00:00Z"}

* ``actor_id``: the lab's id of the account or operator, 1-128 printable
  characters without surrounding whitespace. An actor may have any number
  of lines.
* ``text``: the prompt, a non-empty string of at most 32 KiB (32,768 bytes
  as UTF-8); any characters, newlines included (JSON-escaped).
* ``seen_at`` (optional, may be ``null``): when the prompt was sent, an ISO
  8601 date and time *with* a UTC offset (``Z`` or ``+02:00``).
* Blank lines are skipped; no other field is allowed.

The whole file is read before anything is returned; the first bad line
stops the reading with :class:`~psi_share.errors.ImportFileError`
``FILE:LINE: reason``. Reasons never quote the prompt, the actor id or a
field value: prompts are customer data, and error messages end up in logs
and terminals. Unknown field *names* are quoted only when they look like
field names (short identifiers); anything else is only counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImportFileError

__all__ = ["MAX_ACTOR_ID", "MAX_PROMPT_BYTES", "PromptRecord", "read_lines", "read_prompts_jsonl"]

MAX_PROMPT_BYTES = 32 * 1024
MAX_ACTOR_ID = 128
FIELDS = frozenset({"actor_id", "text", "seen_at"})
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


@dataclass(frozen=True)
class PromptRecord:
    """One line of a prompt file."""

    line: int
    actor_id: str
    text: str
    seen_at: dt.datetime | None = None  # timezone-aware, UTC

    def __repr__(self) -> str:  # the text stays out of logs and test failure output
        return f"PromptRecord(line={self.line}, text=<{len(self.text)} characters>)"


def read_prompts_jsonl(path: Path | str) -> list[PromptRecord]:
    """Every prompt of a JSONL prompt file, in file order; ImportFileError on the first bad line."""
    path = Path(path)
    name = str(path)
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ImportFileError(name, 0, "prompt files are JSON Lines: use a .jsonl or .ndjson file")
    records = []
    for number, line in read_lines(path)[0]:
        if line.strip():
            records.append(_record(name, number, line))
    if not records:
        raise ImportFileError(name, 1, "file holds no prompts")
    return records


def read_lines(path: Path | str) -> tuple[list[tuple[int, str]], str]:
    """``(line number, text)`` of every line of a UTF-8 file (a leading BOM
    allowed), and the SHA-256 (hex) of the file's bytes.

    The whole file is decoded first, so a bad byte is named by its own line.
    Lines are split on "\\n" only: JSON may carry U+2028 and other separators
    raw inside strings, and ``str.splitlines()`` would cut a record there.
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImportFileError(name, 0, f"cannot read file: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(name, raw[: exc.start].count(b"\n") + 1, "file is not valid UTF-8") from None
    return list(enumerate(content.split("\n"), start=1)), hashlib.sha256(raw).hexdigest()


def _record(name: str, line: int, text: str) -> PromptRecord:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(name, line, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ImportFileError(name, line, "invalid JSON: nested too deeply") from None
    if not isinstance(record, dict):
        raise ImportFileError(name, line, 'expected a JSON object {"actor_id": ..., "text": ...}')
    unknown = set(record) - FIELDS
    if unknown:
        shown = sorted(k for k in unknown if _FIELD_NAME_RE.fullmatch(k))
        others = len(unknown) - len(shown)
        listed = ", ".join(shown + ([f"{others} other(s)"] if others else []))
        raise ImportFileError(name, line, f"unknown field(s): {listed} (allowed: actor_id, text, seen_at)")
    return PromptRecord(line, _actor_id(name, line, record.get("actor_id")),
                        _text(name, line, record.get("text")), _seen_at(name, line, record.get("seen_at")))


def _actor_id(name: str, line: int, value: object) -> str:
    if not isinstance(value, str):
        raise ImportFileError(name, line, '"actor_id" must be a string')
    if not value or value != value.strip():
        raise ImportFileError(name, line, "actor_id is empty or has surrounding whitespace")
    if len(value) > MAX_ACTOR_ID or not value.isprintable():
        raise ImportFileError(name, line, f"actor_id is longer than {MAX_ACTOR_ID} or not printable")
    return value


def _text(name: str, line: int, value: object) -> str:
    if not isinstance(value, str):
        raise ImportFileError(name, line, '"text" must be a string')
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # json.loads accepts "\ud800": a lone surrogate is not a character.
        raise ImportFileError(name, line, "text holds an unpaired surrogate (\\ud800-\\udfff escape)") from None
    if size > MAX_PROMPT_BYTES:
        raise ImportFileError(name, line, f"text is {size} bytes; the limit is {MAX_PROMPT_BYTES} (32 KiB) as UTF-8")
    if not value.strip():
        raise ImportFileError(name, line, "text is empty")
    return value


def _seen_at(name: str, line: int, value: object) -> dt.datetime | None:
    if value is None:
        return None
    problem = "seen_at must be an ISO 8601 date and time with a UTC offset, e.g. 2026-05-01T12:00:00Z"
    if not isinstance(value, str) or len(value) > 40:
        raise ImportFileError(name, line, problem)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ImportFileError(name, line, problem) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ImportFileError(name, line, "seen_at has no UTC offset: add Z or +HH:MM")
    return when.astimezone(dt.UTC)
