"""Reading a lab's data files into canonical identifier rows, and importing them.

Three formats, chosen by file extension:

* CSV (``.csv``): header ``actor_id,kind,value``; one identifier per row, an
  actor's identifiers on as many rows as it has. An optional fourth column
  ``amount`` gives the row a non-negative integer (empty: none). RFC 4180
  quoting.
* TSV (``.tsv``, ``.tab``): the same columns separated by tabs, every field
  taken literally (no quoting, as in the IANA ``text/tab-separated-values``
  format: an identifier never holds a tab or a line break).
* JSON Lines (``.jsonl``/``.ndjson``): one actor per line,
  ``{"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "...", "amount": 12}]}``
  (``amount`` optional).

Amounts are what intersection-sum adds up: an integer in
``[0, 2^63 - 1]`` (digits only in CSV/TSV; a JSON integer, not a float or
string). The amount belongs to the identifier row: for one identifier kind,
an item's value is the total of the amounts of the rows that share it.

The whole file is read and canonicalized before anything is written. A row
that breaks a rule is *refused* (store/rejects.py: one reason each, from a
fixed vocabulary); the unit is one identifier row: a CSV/TSV row, one
identifier of a JSONL line, or a whole JSONL line when the line itself is
broken. Without a rejects file one refused row means nothing is imported,
and the error lists them all; with one, the valid rows are imported.
Problems with the file as a whole (unreadable, unknown extension, wrong
header, no rows, a quoted field running over several lines) stop the import
in both cases. Messages name the file and line and what is wrong, never a
value.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImportFileError, InvalidIdentifier, NotFound, PsiShareError
from ..identifiers import KINDS, CanonicalizationContext, canonicalize
from .db import IdentifierRow, Store, check_name
from .rejects import Reason, RejectsFile, Rejection, RejectTally

CSV_COLUMNS = ("actor_id", "kind", "value")
CSV_COLUMNS_WITH_AMOUNT = ("actor_id", "kind", "value", "amount")
MAX_AMOUNT = 2**63 - 1  # = psi_share.crypto.paillier.MAX_VALUE
MAX_ACTOR_ID = 128
SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": None, ".ndjson": None}
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


class ImportMode(str, enum.Enum):
    REPLACE = "replace"
    APPEND = "append"


@dataclass(frozen=True)
class ImportSummary:
    dataset: str
    path: str
    rows: int  # identifier rows read, refused ones included
    actors: int
    identifiers: int
    duplicates: int  # identifiers that were the same as another after canonicalization
    actors_added: int = 0
    identifiers_added: int = 0
    actors_removed: int = 0  # by --replace
    identifiers_removed: int = 0
    revision: int = 0  # the dataset's revision after the import
    changed: bool = True  # False: the dataset already held exactly this
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None


@dataclass(frozen=True)
class Candidate:
    """One identifier row as the file gives it, not yet checked."""

    line: int
    actor_id: str
    kind: str
    value: str
    amount: int | None
    amount_error: str = ""
    where: str = ""  # "identifiers[2]: " for a JSONL identifier


@dataclass
class ParsedFile:
    """A data file read: its valid rows (deduplicated within each actor),
    how many identifier rows it had, and its refused rows."""

    rows: list[IdentifierRow]
    read: int
    tally: RejectTally

    @property
    def duplicates(self) -> int:
        return self.read - self.tally.total - len(self.rows)


def parse_data_file(path: Path, ctx: CanonicalizationContext) -> tuple[list[IdentifierRow], int]:
    """Parse and canonicalize a data file, all or nothing; return rows
    (deduplicated) and the number of identifier rows read.

    Raises ImportFileError naming the file and line; when rows were
    refused, an :class:`~psi_share.store.rejects.ImportRejected` listing them.
    """
    parsed = read_data_file(path, ctx, RejectTally(path))
    if parsed.tally.total:
        raise parsed.tally.error(parsed.read)
    return parsed.rows, parsed.read


def import_data_file(
    store: Store, dataset: str, path: Path, *, ctx: CanonicalizationContext, mode: ImportMode | None,
    now: float, rejects: Path | None = None,
) -> ImportSummary:
    """Import a data file into ``dataset``: all or nothing, or, with
    ``rejects``, the valid rows, with the refused ones written to that file.

    ``mode`` must be given when the dataset already holds actors. The store
    and the rejects file change together or not at all (rejects.py).
    """
    check_name("dataset", dataset)
    with RejectsFile(rejects, path) if rejects is not None else nullcontext() as out:
        parsed = read_data_file(path, ctx, RejectTally(path, out))
        if parsed.tally.total and (out is None or not parsed.rows):
            raise parsed.tally.error(parsed.read)
        try:
            existing = store.dataset(dataset).actors
        except NotFound:
            existing = 0
        if existing and mode is None:
            raise PsiShareError(f"dataset {dataset!r} already holds {existing} actors: say --replace or --append")
        written = store.write_dataset(
            dataset, parsed.rows, replace=mode is not ImportMode.APPEND, now=now,
            before_commit=out.publish if out is not None else None,
        )
    return ImportSummary(
        dataset=dataset, path=str(path), rows=parsed.read, actors=len({r.actor_id for r in parsed.rows}),
        identifiers=len(parsed.rows), duplicates=parsed.duplicates, actors_added=written.actors_added,
        identifiers_added=written.identifiers_added, actors_removed=written.actors_removed,
        identifiers_removed=written.identifiers_removed, revision=written.revision, changed=written.changed,
        rejected=parsed.tally.total, rejected_by_reason=dict(parsed.tally.by_reason),
        rejects_file=None if rejects is None else str(rejects),
    )


def read_data_file(path: Path, ctx: CanonicalizationContext, tally: RejectTally) -> ParsedFile:
    """Read every row of a data file; refused rows go to ``tally``.

    Raises ImportFileError for a problem with the file as a whole (with the
    rows refused before it listed, when there are some).
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ImportFileError(str(path), 0, "unknown file type: use .csv, .tsv or .jsonl (.ndjson)")
    text = _read_text(path)
    delimiter = SUFFIXES[suffix]
    source = _jsonl_rows(text) if delimiter is None else _delimited_rows(path, text, delimiter)
    seen: dict[tuple[str, str, str], tuple[int | None, int]] = {}
    out: list[IdentifierRow] = []
    read = 0
    try:
        for entry in source:
            read += 1
            checked = entry if isinstance(entry, Rejection) else _check(entry, ctx, seen)
            if isinstance(checked, Rejection):
                tally.add(checked)
            elif checked is not None:
                out.append(checked)
    except ImportFileError as exc:
        raise tally.error(read, fatal=exc) from None
    if read == 0:
        raise ImportFileError(str(path), 1, "file holds no identifiers")
    return ParsedFile(out, read, tally)


def _check(
    c: Candidate, ctx: CanonicalizationContext, seen: dict[tuple[str, str, str], tuple[int | None, int]]
) -> IdentifierRow | Rejection | None:
    """The row canonicalized, its refusal, or None for a duplicate."""
    checked = check_candidate(c, ctx)
    if isinstance(checked, Rejection):
        return checked
    key = (c.actor_id, c.kind, checked.canonical)
    if key in seen:
        amount, line = seen[key]
        if amount != c.amount:
            return Rejection(c.line, Reason.AMOUNT_CONFLICT, f"{c.where}{AMOUNT_CONFLICT_DETAIL} (line {line})", c.kind)
        return None
    seen[key] = (c.amount, c.line)
    return checked


AMOUNT_CONFLICT_DETAIL = "this actor already has this identifier with a different amount"


def check_candidate(c: Candidate, ctx: CanonicalizationContext) -> IdentifierRow | Rejection:
    """One row canonicalized, or its refusal; duplicates are the caller's
    (a CSV file keeps the rows it has seen, a Parquet source their digests)."""
    problem = actor_id_problem(c.actor_id)
    if problem:
        return Rejection(c.line, Reason.ACTOR_ID, c.where + problem)
    if c.kind not in KINDS:
        # Not echoed: with swapped columns the "kind" is an identifier value.
        return Rejection(
            c.line, Reason.UNKNOWN_KIND,
            f"{c.where}unknown identifier kind in the kind field (known: {', '.join(sorted(KINDS))})",
        )
    try:
        canonical = canonicalize(c.kind, c.value, ctx)
    except InvalidIdentifier as exc:
        return Rejection(c.line, Reason.INVALID_VALUE, f"{c.where}{exc}", c.kind)
    if c.amount_error:
        return Rejection(c.line, Reason.AMOUNT, c.where + c.amount_error, c.kind)
    return IdentifierRow(c.actor_id, c.kind, KINDS[c.kind].version, canonical, c.value, c.amount)


def actor_id_problem(actor_id: str) -> str:
    if not actor_id or actor_id != actor_id.strip():
        return "actor_id is empty or has surrounding whitespace"
    if len(actor_id) > MAX_ACTOR_ID or not actor_id.isprintable():
        return f"actor_id is longer than {MAX_ACTOR_ID} or not printable"
    return ""


def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a leading byte-order mark is allowed).

    A byte that is not UTF-8 becomes a lone surrogate (``surrogateescape``),
    so the rows around it still parse and that row alone is refused.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(str(path), 0, f"cannot read file: {exc.strerror}") from None
    return raw.decode("utf-8-sig", errors="surrogateescape")


def not_utf8(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


ENCODING_DETAIL = "not valid UTF-8 (save the file as UTF-8)"


def _csv_amount(text: str) -> tuple[int | None, str]:
    text = text.strip()
    if not text:
        return None, ""
    if not text.isascii() or not text.isdigit():
        return None, f"amount must be a whole number in [0, {MAX_AMOUNT}] (digits only)"
    value = int(text)
    if value > MAX_AMOUNT:
        return None, f"amount exceeds the maximum {MAX_AMOUNT}"
    return value, ""


def _json_amount(value: object) -> tuple[int | None, str]:
    if value is None:
        return None, ""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        return None, f"amount must be a JSON integer in [0, {MAX_AMOUNT}]"
    return value, ""


def _delimited_rows(path: Path, text: str, delimiter: str) -> Iterator[Candidate | Rejection]:
    tsv = delimiter == "\t"
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
    )
    width = _header_width(path, reader, delimiter)
    previous = reader.line_num
    while True:
        start = previous + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:
            _refuse_runaway_quote(path, start, reader.line_num)
            previous = reader.line_num
            yield Rejection(start, Reason.MALFORMED_ROW, f"malformed CSV: {exc}")
            continue
        if row is None:
            return
        previous = reader.line_num
        _refuse_runaway_quote(path, start, reader.line_num)
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if any(not_utf8(f) for f in row):
            yield Rejection(start, Reason.ENCODING, ENCODING_DETAIL)
        elif len(row) != width:
            yield Rejection(start, Reason.COLUMNS, f"expected {width} columns, found {len(row)}")
        else:
            amount, amount_error = _csv_amount(row[3]) if width == 4 else (None, "")
            yield Candidate(start, row[0], row[1].strip(), row[2], amount, amount_error)


def _header_width(path: Path, reader: csv.Reader, delimiter: str) -> int:
    """Check the header line; return the number of columns."""
    sep = "," if delimiter == "," else "<tab>"
    try:
        header = next(reader, None)
    except csv.Error:
        header = [""]
    if header is None:
        raise ImportFileError(str(path), 1, f"file is empty (expected the header {sep.join(CSV_COLUMNS)})")
    header = [h.strip() for h in header]
    if tuple(header) not in (CSV_COLUMNS, CSV_COLUMNS_WITH_AMOUNT):
        # The found header is not echoed: a file without one starts with a
        # data row, and identifier values must not reach logs.
        raise ImportFileError(
            str(path), 1,
            f"first line must be the header {sep.join(CSV_COLUMNS)} or {sep.join(CSV_COLUMNS_WITH_AMOUNT)} "
            f"(found {len(header)} other column(s))",
        )
    return len(header)


def _refuse_runaway_quote(path: Path, start: int, end: int) -> None:
    """A row may not span lines: no field of ours can hold a line break, so
    a quote that runs on is an unbalanced one, and where the following rows
    begin can only be guessed. That stops the import (refusing the lines it
    covered would throw good rows away unseen)."""
    if end > start:
        raise ImportFileError(
            str(path), start,
            f"a quoted field runs from line {start} to line {end} (an unbalanced quote?); "
            "nothing after it can be read reliably",
        )


def _jsonl_rows(text: str) -> Iterator[Candidate | Rejection]:
    actors: dict[str, int] = {}
    for line, record_text in enumerate(io.StringIO(text, newline=""), start=1):
        if not record_text.strip():
            continue
        if not_utf8(record_text):
            yield Rejection(line, Reason.ENCODING, ENCODING_DETAIL)
            continue
        yield from _jsonl_record(line, record_text, actors)


def _jsonl_record(line: int, text: str, actors: dict[str, int]) -> Iterator[Candidate | Rejection]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        yield Rejection(line, Reason.MALFORMED_ROW, f"invalid JSON: {exc.msg} at column {exc.colno}")
        return
    if not isinstance(record, dict) or not isinstance(record.get("actor_id"), str):
        yield Rejection(line, Reason.MALFORMED_ROW, 'expected an object with a string "actor_id"')
        return
    unknown = set(record) - {"actor_id", "identifiers"}
    if unknown:
        # Field names are echoed only when they look like names, not values.
        named = sorted(k for k in unknown if _FIELD_NAME_RE.fullmatch(k))
        others = len(unknown) - len(named)
        yield Rejection(
            line, Reason.MALFORMED_ROW,
            "unknown field(s): " + ", ".join(named + ([f"{others} other(s)"] if others else [])),
        )
        return
    actor_id = record["actor_id"]
    problem = actor_id_problem(actor_id)
    if problem:
        yield Rejection(line, Reason.ACTOR_ID, problem)
        return
    if actor_id in actors:
        yield Rejection(line, Reason.DUPLICATE_ACTOR, f"this actor_id appears on an earlier line too (line {actors[actor_id]})")
        return
    actors[actor_id] = line
    idents = record.get("identifiers")
    if not isinstance(idents, list) or not idents:
        yield Rejection(line, Reason.MALFORMED_ROW, '"identifiers" must be a non-empty list')
        return
    for i, ident in enumerate(idents):
        where = f"identifiers[{i}]: "
        if (
            not isinstance(ident, dict)
            or not {"kind", "value"} <= set(ident) <= {"kind", "value", "amount"}
            or not isinstance(ident["kind"], str)
            or not isinstance(ident["value"], str)
        ):
            yield Rejection(
                line, Reason.MALFORMED_ROW,
                f'{where}must be {{"kind": "...", "value": "..."}} with strings (and an optional integer "amount")',
            )
            continue
        amount, amount_error = _json_amount(ident.get("amount"))
        yield Candidate(line, actor_id, ident["kind"].strip(), ident["value"], amount, amount_error, where)
