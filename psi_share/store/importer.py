"""Reading a lab's data files into canonical identifier rows.

Two formats, chosen by file extension:

* CSV (``.csv``): header ``actor_id,kind,value``; one identifier per row, an
  actor's identifiers on as many rows as it has. An optional fourth column
  ``amount`` gives the row a non-negative integer (empty: none).
* JSON Lines (``.jsonl``/``.ndjson``): one actor per line,
  ``{"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "...", "amount": 12}]}``
  (``amount`` optional).

Amounts are what intersection-sum adds up: an integer in
``[0, 2^63 - 1]`` (digits only in CSV; a JSON integer, not a float or
string). A negative, fractional or too large amount stops the import at its
line. The amount belongs to the identifier row: for one identifier kind,
an item's value is the total of the amounts of the rows that share it.

The whole file is parsed and canonicalized before anything is written, so a
bad row (named by file and line) leaves the store untouched. Error messages
name the row and what is wrong with it, never the identifier's value.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImportFileError, InvalidIdentifier
from ..identifiers import KINDS, CanonicalizationContext, canonicalize
from .db import IdentifierRow

CSV_COLUMNS = ("actor_id", "kind", "value")
CSV_COLUMNS_WITH_AMOUNT = ("actor_id", "kind", "value", "amount")
MAX_AMOUNT = 2**63 - 1  # = psi_share.crypto.paillier.MAX_VALUE
MAX_ACTOR_ID = 128


class ImportMode(str, enum.Enum):
    REPLACE = "replace"
    APPEND = "append"


@dataclass(frozen=True)
class ImportSummary:
    dataset: str
    path: str
    rows: int
    actors: int
    identifiers: int
    duplicates: int  # identifiers that were the same as another after canonicalization
    actors_added: int = 0
    identifiers_added: int = 0


def parse_data_file(
    path: Path, ctx: CanonicalizationContext
) -> tuple[list[IdentifierRow], int]:
    """Parse and canonicalize a data file; return rows (deduplicated) and row count.

    Raises ImportFileError naming the file and line on the first bad row.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw_rows = _csv_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        raw_rows = _jsonl_rows(path)
    else:
        raise ImportFileError(str(path), 0, "unknown file type: use .csv or .jsonl")
    seen: dict[tuple[str, str, str], int | None] = {}
    out: list[IdentifierRow] = []
    count = 0
    for line, actor_id, kind, value, amount in raw_rows:
        count += 1
        _check_actor_id(path, line, actor_id)
        if kind not in KINDS:
            # Not echoed: with swapped columns the "kind" is an identifier value.
            raise ImportFileError(
                str(path), line, f"unknown identifier kind in the kind field (known: {', '.join(sorted(KINDS))})"
            )
        try:
            canonical = canonicalize(kind, value, ctx)
        except InvalidIdentifier as exc:
            raise ImportFileError(str(path), line, str(exc)) from None
        key = (actor_id, kind, canonical)
        if key in seen:
            if seen[key] != amount:
                raise ImportFileError(
                    str(path), line, "this actor already has this identifier with a different amount"
                )
            continue
        seen[key] = amount
        out.append(IdentifierRow(actor_id, kind, KINDS[kind].version, canonical, value, amount))
    if count == 0:
        raise ImportFileError(str(path), 1, "file holds no identifiers")
    return out, count


def _check_actor_id(path: Path, line: int, actor_id: str) -> None:
    if not actor_id or actor_id != actor_id.strip():
        raise ImportFileError(str(path), line, "actor_id is empty or has surrounding whitespace")
    if len(actor_id) > MAX_ACTOR_ID or not actor_id.isprintable():
        raise ImportFileError(str(path), line, f"actor_id is longer than {MAX_ACTOR_ID} or not printable")


def _open_text(path: Path) -> io.StringIO:
    """The file decoded as UTF-8 (a leading byte-order mark is allowed).

    Decoding the whole file first lets a bad byte be named by its own line;
    a streaming decoder reports where its read-ahead block began instead.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(str(path), 0, f"cannot read file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportFileError(str(path), line, "file is not valid UTF-8") from None
    return io.StringIO(text, newline="")


def _csv_amount(path: Path, line: int, text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit():
        raise ImportFileError(str(path), line, f"amount must be a whole number in [0, {MAX_AMOUNT}] (digits only)")
    value = int(text)
    if value > MAX_AMOUNT:
        raise ImportFileError(str(path), line, f"amount exceeds the maximum {MAX_AMOUNT}")
    return value


def _json_amount(path: Path, line: int, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise ImportFileError(str(path), line, f"amount must be a JSON integer in [0, {MAX_AMOUNT}]")
    return value


def _csv_rows(path: Path) -> Iterator[tuple[int, str, str, str, int | None]]:
    with _open_text(path) as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportFileError(str(path), 1, "file is empty (expected header actor_id,kind,value)")
            header = [h.strip() for h in header]
            if tuple(header) not in (CSV_COLUMNS, CSV_COLUMNS_WITH_AMOUNT):
                # The found header is not echoed: a file without one starts
                # with a data row, and identifier values must not reach logs.
                raise ImportFileError(
                    str(path), 1,
                    f"first line must be the header {','.join(CSV_COLUMNS)} or {','.join(CSV_COLUMNS_WITH_AMOUNT)} "
                    f"(found {len(header)} other column(s))",
                )
            width = len(header)
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    raise ImportFileError(str(path), line, f"expected {width} columns, found {len(row)}")
                amount = _csv_amount(path, line, row[3]) if width == 4 else None
                yield line, row[0], row[1].strip(), row[2], amount
        except csv.Error as exc:
            raise ImportFileError(str(path), reader.line_num, f"malformed CSV: {exc}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, str, str, str, int | None]]:
    actors: set[str] = set()
    with _open_text(path) as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            yield from _jsonl_record(path, line, text, actors)


def _jsonl_record(
    path: Path, line: int, text: str, actors: set[str]
) -> Iterator[tuple[int, str, str, str, int | None]]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(str(path), line, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict) or not isinstance(record.get("actor_id"), str):
        raise ImportFileError(str(path), line, 'expected an object with a string "actor_id"')
    unknown = set(record) - {"actor_id", "identifiers"}
    if unknown:
        raise ImportFileError(str(path), line, f"unknown field(s): {', '.join(sorted(unknown))}")
    actor_id = record["actor_id"]
    if actor_id in actors:
        raise ImportFileError(str(path), line, f"actor {actor_id!r} appears on an earlier line too")
    actors.add(actor_id)
    idents = record.get("identifiers")
    if not isinstance(idents, list) or not idents:
        raise ImportFileError(str(path), line, '"identifiers" must be a non-empty list')
    for i, ident in enumerate(idents):
        if (
            not isinstance(ident, dict)
            or not {"kind", "value"} <= set(ident) <= {"kind", "value", "amount"}
            or not isinstance(ident["kind"], str)
            or not isinstance(ident["value"], str)
        ):
            raise ImportFileError(
                str(path), line,
                f'identifiers[{i}] must be {{"kind": "...", "value": "..."}} with strings (and an optional integer "amount")',
            )
        yield line, actor_id, ident["kind"].strip(), ident["value"], _json_amount(path, line, ident.get("amount"))
