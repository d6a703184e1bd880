"""Refused rows of a data file: why, how many, and the rejects file.

A row is *refused* for one reason from a small fixed vocabulary
(:class:`Reason`), so that counts by reason mean something across files and
runs. Nothing here ever holds an identifier's value: a refusal carries the
file, the line, the identifier kind when it is a known one, the reason code
and a detail written by this code (``must be 4-256 characters long``), never
text taken from the row.

Without a rejects file an import stays all or nothing: every refused row is
listed (the first :data:`LISTED` in full, then counts by reason) in one
:class:`ImportRejected` error and nothing is written. With one, the valid
rows are imported and every refused row goes to a CSV file::

    file,line,kind,reason,detail
    flagged.csv,12,device_id,invalid_value,invalid device_id: must be 4-256 characters long

:class:`RejectsFile` writes it beside its target under a temporary name and
renames it onto the target inside the store's transaction, just before the
commit (and puts back what was there if the commit fails), so the import and
its rejects file land together or not at all.
"""

from __future__ import annotations

import csv
import enum
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import ImportFileError, PsiShareError

LISTED = 100  # refused rows an all-or-nothing error lists in full
REJECTS_HEADER = ("file", "line", "kind", "reason", "detail")


class Reason(str, enum.Enum):
    """Why a row was refused (the ``reason`` column of a rejects file)."""

    ENCODING = "encoding"  # the row is not valid UTF-8
    MALFORMED_ROW = "malformed_row"  # broken CSV quoting on the line; a JSONL line that is not the expected object
    COLUMNS = "columns"  # a CSV/TSV row with the wrong number of fields
    ACTOR_ID = "actor_id"  # empty, surrounding whitespace, too long or not printable
    DUPLICATE_ACTOR = "duplicate_actor"  # a JSONL actor already given on an earlier line
    UNKNOWN_KIND = "unknown_kind"  # the kind field names no registered identifier kind
    INVALID_VALUE = "invalid_value"  # the value breaks its kind's rules (identifiers.py)
    AMOUNT = "amount"  # not a whole number in [0, 2^63 - 1]
    AMOUNT_CONFLICT = "amount_conflict"  # the actor's identifier again, with another amount


@dataclass(frozen=True)
class Rejection:
    """One refused identifier row: a CSV/TSV row, a JSONL identifier, or a
    whole JSONL line. ``kind`` is a registered kind or empty; ``detail`` is
    text of ours, never of the row."""

    line: int
    reason: Reason
    detail: str
    kind: str = ""
    file: str = ""  # the row's file when a source has several (Parquet); empty: the tally's file


class ImportRejected(ImportFileError):
    """Rows of a data file were refused, so nothing was imported.

    ``line`` and ``reason`` are the first refused row's; ``counts`` maps each
    reason code to its number of rows. The message lists the rows.
    """

    def __init__(self, path: str, first: Rejection, message: str, counts: dict[str, int]) -> None:
        super().__init__(path, first.line, first.detail)
        self.args = (message,)
        self.counts = counts

    def __str__(self) -> str:
        return str(self.args[0])


class RejectTally:
    """The refused rows of one file: counted by reason and kind, the first
    :data:`LISTED` kept, each one written to the rejects file if there is one."""

    def __init__(self, path: Path, out: RejectsFile | None = None) -> None:
        self.path = path
        self.out = out
        self.first: list[Rejection] = []
        self.by_reason: Counter[str] = Counter()
        self.by_reason_kind: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, rejection: Rejection) -> None:
        if len(self.first) < LISTED:
            self.first.append(rejection)
        self.by_reason[rejection.reason.value] += 1
        self.by_reason_kind[(rejection.reason.value, rejection.kind)] += 1
        if self.out is not None:
            self.out.write(rejection.file or str(self.path), rejection)

    def counts_text(self) -> str:
        """``invalid_value 5 (device_id 4, account_handle 1), columns 2``."""
        parts = []
        for reason, count in sorted(self.by_reason.items(), key=lambda rc: (-rc[1], rc[0])):
            kinds = sorted(
                ((k, n) for (r, k), n in self.by_reason_kind.items() if r == reason and k),
                key=lambda kn: (-kn[1], kn[0]),
            )
            detail = f" ({', '.join(f'{k} {n}' for k, n in kinds)})" if kinds else ""
            parts.append(f"{reason} {count}{detail}")
        return ", ".join(parts)

    def error(
        self, rows: int, *, fatal: ImportFileError | None = None, done: str = "imported"
    ) -> ImportFileError:
        """The all-or-nothing error: every refused row listed (up to
        :data:`LISTED`), then the counts by reason and what to do."""
        if not self.first:
            assert fatal is not None
            return fatal
        path = str(self.path)
        valid = rows - self.total
        lines = [f"{path}: {self.total} of {rows} rows refused; nothing was {done}"]
        lines += [f"{r.file or path}:{r.line}: {r.detail} ({r.reason.value})" for r in self.first]
        if self.total > len(self.first):
            lines.append(f"{path}: ... and {self.total - len(self.first)} more refused rows (not listed)")
        if fatal is not None:
            lines.append(f"{fatal} (reading stopped there)")
        lines.append(f"{path}: refused by reason: {self.counts_text()}")
        if fatal is None and valid > 0:
            rows_text = "row" if valid == 1 else "rows"
            verb = done.removesuffix("ed") + "s"  # imports, registers
            lines.append(f"--rejects FILE {verb} the {valid} valid {rows_text} and lists the refused ones in FILE.")
        elif fatal is None:
            lines.append("No row is valid: is this the right file, with the columns in the right order?")
        return ImportRejected(path, self.first[0], "\n".join(lines), dict(self.by_reason))


class RejectsFile:
    """The rejects file of one import, written atomically.

    Refused rows go to a temporary file beside ``target`` as they are found;
    :meth:`publish` renames it onto ``target`` (call it inside the store's
    transaction, last); leaving the ``with`` block on an exception removes
    the temporary file, or, once published, puts back what ``target`` was.

    An existing ``target`` is overwritten only when it is itself a rejects
    file (its first line is the header), so that a daily job can reuse one
    path but a mistyped path cannot destroy a data file; it is never the
    data file being imported.
    """

    def __init__(self, target: Path, source: Path) -> None:
        self.target = target
        self._check_target(source)
        # Beside the target (a rename never crosses file systems), unique per import.
        self._tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.psi-share-tmp")
        self._backup: Path | None = None
        self._published = False
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise PsiShareError(f"cannot write the rejects file {target}: {exc.strerror}") from None
        self._stream = open(fd, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._stream, lineterminator="\n")
        self._writer.writerow(REJECTS_HEADER)

    def _check_target(self, source: Path) -> None:
        target = self.target
        if not target.parent.is_dir():
            raise PsiShareError(f"rejects file {target}: directory {target.parent} does not exist")
        if not target.exists():
            return
        if not target.is_file():
            raise PsiShareError(f"rejects file {target} exists and is not a regular file")
        if source.exists() and target.samefile(source):
            raise PsiShareError(f"rejects file {target} is the data file being imported")
        try:
            with target.open("rb") as fh:
                first = fh.readline(200).rstrip(b"\r\n")
        except OSError as exc:
            raise PsiShareError(f"cannot read the existing rejects file {target}: {exc.strerror}") from None
        if first != ",".join(REJECTS_HEADER).encode():
            # Its content is not quoted: it may be anybody's data.
            raise PsiShareError(
                f"{target} exists and is not a rejects file (its first line is not "
                f"'{','.join(REJECTS_HEADER)}'): remove it or name another file"
            )

    def write(self, path: str, rejection: Rejection) -> None:
        self._writer.writerow((path, rejection.line, rejection.kind, rejection.reason.value, rejection.detail))

    def publish(self) -> None:
        """Make the temporary file ``target``, durably."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        if self.target.exists():
            self._backup = self._tmp.with_suffix(".psi-share-old")
            os.replace(self.target, self._backup)
        os.replace(self._tmp, self.target)
        self._published = True
        _fsync_dir(self.target.parent)

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stream.close()
        if exc_type is None:
            if self._backup is not None:
                self._backup.unlink(missing_ok=True)
            return
        if not self._published:
            self._tmp.unlink(missing_ok=True)
            return
        # Published, then the store refused to commit: undo the rename.
        if self._backup is not None:
            os.replace(self._backup, self.target)
        else:
            self.target.unlink(missing_ok=True)
        _fsync_dir(self.target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
