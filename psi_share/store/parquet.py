"""Parquet sources: a dataset read where the lab's warehouse keeps it.

A source is a Parquet file, a directory of Parquet files (read recursively;
names starting with ``.`` or ``_`` are skipped, as pyarrow's datasets and
Spark do: ``_SUCCESS``, ``_temporary/``, ``.crc`` files), or a URI that
pyarrow's file systems open (``file:///...``; ``s3://``, ``gs://``, ``hdfs://``
where pyarrow was built with them). A :class:`ColumnMapping` says which
columns hold the actor id, the kind (or one fixed kind for the whole
source), the value and optionally the amount.

Nothing here holds more than one batch of rows: files are read one record
batch at a time (``ParquetFile.iter_batches``), only the mapped columns.

The **fingerprint** names the source's content without reading its rows:
SHA-256 over, for each file in path order, its path below the source root,
its size, its modification time (ns) and its Parquet footer bytes (schema,
row counts, every column chunk's offsets, sizes and min/max statistics).
Checking it costs one stat and one footer read per file, so it is checked
before every read of the dataset, not only at registration; a streamed hash
of the rows would cost a full read of the source each time. What it does not
see: a rewrite that keeps a file's size, modification time and every footer
byte (statistics and compressed sizes included), which takes doing on purpose.

pyarrow is an optional dependency (``psi-share[parquet]``): it is imported
when a Parquet source is opened, with an error saying how to install it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import ImportFileError, PsiShareError
from ..identifiers import KINDS
from .importer import ENCODING_DETAIL, MAX_AMOUNT, Candidate, not_utf8
from .rejects import Reason, Rejection
from .sources import ColumnMapping

BATCH_ROWS = 65_536  # rows per record batch: a few MB of strings, whatever the source's size
_FINGERPRINT_DOMAIN = b"psi-share/parquet-fingerprint/1\n"
_MAGIC = b"PAR1"


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.fs  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise PsiShareError(
            "Parquet datasets need pyarrow: pip install 'psi-share[parquet]'"
        ) from None
    return pyarrow


@dataclass(frozen=True)
class SourceFile:
    path: str  # as the source's file system names it
    relative: str  # below the source root: what messages and the fingerprint name
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SourceRow:
    """One row as the source gives it: a candidate to check, or refused already."""

    file: SourceFile
    entry: Candidate | Rejection


class ParquetSource:
    """One Parquet source, opened on its file system (nothing read yet)."""

    def __init__(self, uri: str) -> None:
        pa = _pyarrow()
        self.uri = uri
        try:
            if "://" in uri:
                self._fs, self._root = pa.fs.FileSystem.from_uri(uri)
            else:
                self._fs, self._root = pa.fs.LocalFileSystem(), os.path.abspath(uri)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ImportFileError(uri, 0, f"cannot open the source: {_reason(exc)}") from None

    @property
    def local_path(self) -> str | None:
        """The source's local path, when it is on the local file system."""
        return self._root if type(self._fs).__name__ == "LocalFileSystem" else None

    def files(self) -> list[SourceFile]:
        """The source's files in path order; a missing or empty source is an error."""
        fs = _pyarrow().fs
        try:
            top = self._fs.get_file_info(self._root)
            if top.type == fs.FileType.File:
                infos = [top]
            elif top.type == fs.FileType.Directory:
                infos = self._fs.get_file_info(fs.FileSelector(self._root, recursive=True))
            else:
                raise ImportFileError(self.uri, 0, "no such file or directory")
        except OSError as exc:
            raise ImportFileError(self.uri, 0, f"cannot list the source: {_reason(exc)}") from None
        files = []
        for info in infos:
            relative = os.path.relpath(info.path, self._root) if info.path != top.path else info.base_name
            if info.type != fs.FileType.File or any(p.startswith((".", "_")) for p in relative.split("/")):
                continue
            files.append(SourceFile(info.path, relative, info.size, info.mtime_ns or 0))
        if not files:
            raise ImportFileError(self.uri, 0, "the directory holds no data files (names starting . or _ are skipped)")
        return sorted(files, key=lambda f: f.relative)

    def fingerprint(self, files: list[SourceFile]) -> str:
        """The content fingerprint of ``files`` (see the module docstring)."""
        digest = hashlib.sha256(_FINGERPRINT_DOMAIN)
        for f in files:
            footer = self._footer(f)
            for part in (f.relative.encode("utf-8", "surrogatepass"), b"%d" % f.size, b"%d" % f.mtime_ns, footer):
                digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    def _footer(self, f: SourceFile) -> bytes:
        try:
            with self._fs.open_input_file(f.path) as stream:
                if f.size < 12:
                    raise ImportFileError(f.relative, 0, "not a Parquet file (too short)")
                stream.seek(f.size - 8)
                tail = stream.read(8)
                length = int.from_bytes(tail[:4], "little")
                if tail[4:] != _MAGIC or length > f.size - 12:
                    raise ImportFileError(f.relative, 0, "not a Parquet file (no Parquet footer)")
                stream.seek(f.size - 8 - length)
                return stream.read(length)
        except OSError as exc:
            raise ImportFileError(f.relative, 0, f"cannot read the file: {_reason(exc)}") from None

    def schema(self, files: list[SourceFile], mapping: ColumnMapping) -> dict[str, str]:
        """Mapped column -> Arrow type, the same in every file; a missing
        column or a type that cannot hold what it maps to is an error."""
        found: dict[str, str] = {}
        for f in files:
            with self._parquet_file(f) as parquet_file:
                arrow_schema = parquet_file.schema_arrow
            for column in mapping.columns():
                if column not in arrow_schema.names:
                    raise ImportFileError(f.relative, 0, f"no column {column!r} (mapped columns: "
                                                         f"{', '.join(mapping.columns())})")
                type_text = str(arrow_schema.field(column).type)
                role = _role(mapping, column)
                if not _accepts(role, arrow_schema.field(column).type):
                    raise ImportFileError(f.relative, 0, f"column {column!r} ({role}) has type {type_text}; "
                                                         f"expected {_EXPECTED[role]}")
                if found.setdefault(column, type_text) != type_text:
                    raise ImportFileError(f.relative, 0, f"column {column!r} has type {type_text} here and "
                                                         f"{found[column]} in {files[0].relative}")
        return found

    @contextmanager
    def _parquet_file(self, f: SourceFile) -> Iterator[Any]:
        """``f`` opened as a ParquetFile, closed on leaving (a directory may hold thousands)."""
        pa = _pyarrow()
        try:
            stream = self._fs.open_input_file(f.path)
        except OSError as exc:
            raise ImportFileError(f.relative, 0, f"cannot read the file: {_reason(exc)}") from None
        with stream:
            try:
                parquet_file = pa.parquet.ParquetFile(stream)
            except (pa.ArrowException, OSError) as exc:
                raise ImportFileError(f.relative, 0, f"cannot read as Parquet: {_reason(exc)}") from None
            yield parquet_file

    def rows(
        self, files: list[SourceFile], mapping: ColumnMapping, *, batch_rows: int = BATCH_ROWS
    ) -> Iterator[list[SourceRow]]:
        """Every row of ``files``, a record batch at a time; ``line`` is the
        row's number in its file, from 1. Rows whose fields cannot be a row
        of ours (null, not UTF-8) come refused."""
        for f in files:
            yield from self.slice_rows(f, mapping, batch_rows=batch_rows)

    def slice_rows(
        self, f: SourceFile, mapping: ColumnMapping, groups: tuple[int, int] | None = None, first_line: int = 0,
        *, batch_rows: int = BATCH_ROWS,
    ) -> Iterator[list[SourceRow]]:
        """The rows of ``f``'s row groups ``[groups[0], groups[1])`` (all by
        default), numbered from ``first_line + 1`` (the rows of the groups
        before), as :meth:`rows` yields them."""
        pa = _pyarrow()
        try:
            with self._parquet_file(f) as parquet_file:
                chosen = None if groups is None else list(range(*groups))
                yield from _file_rows(f, parquet_file, mapping, batch_rows, pa, chosen, first_line)
        except (pa.ArrowException, OSError) as exc:
            raise ImportFileError(f.relative, 0, f"cannot read the rows: {_reason(exc)}") from None

    def row_groups(self, f: SourceFile) -> list[int]:
        """The number of rows of each of ``f``'s row groups (from its footer)."""
        pa = _pyarrow()
        try:
            with self._parquet_file(f) as parquet_file:
                meta = parquet_file.metadata
                return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        except (pa.ArrowException, OSError) as exc:
            raise ImportFileError(f.relative, 0, f"cannot read the row groups: {_reason(exc)}") from None


def _file_rows(
    f: SourceFile, parquet_file: Any, mapping: ColumnMapping, batch_rows: int, pa: Any,
    groups: list[int] | None = None, line: int = 0,
) -> Iterator[list[SourceRow]]:
    for batch in parquet_file.iter_batches(batch_size=batch_rows, row_groups=groups, columns=mapping.columns()):
        decoded = {name: _values(batch.column(name), pa) for name in mapping.columns()}
        columns = {name: values for name, (values, _) in decoded.items()}
        check_utf8 = any(bad for _, bad in decoded.values())  # scanning every row costs 10%
        out = []
        for i in range(batch.num_rows):
            line += 1
            out.append(SourceRow(f, _entry(line, mapping, columns, i, check_utf8)))
        yield out


_EXPECTED = {
    "actor_id": "a string or integer column",
    "kind": "a string column",
    "value": "a string column",
    "amount": "an integer column",
}


def _role(mapping: ColumnMapping, column: str) -> str:
    return {mapping.actor: "actor_id", mapping.kind_column: "kind", mapping.value: "value"}.get(column, "amount")


def _accepts(role: str, arrow_type: Any) -> bool:
    types = _pyarrow().types
    if types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    text = types.is_string(arrow_type) or types.is_large_string(arrow_type) or str(arrow_type) == "string_view"
    if role == "actor_id":
        return text or types.is_integer(arrow_type)
    return types.is_integer(arrow_type) if role == "amount" else text


def _values(column: Any, pa: Any) -> tuple[list[Any], bool]:
    """A column's values as Python objects, and whether some are not UTF-8.
    Parquet does not check that a string column holds UTF-8; bytes that are
    not decode to lone surrogates (as a CSV file's do), so that the row
    alone is refused."""
    try:
        return column.to_pylist(), False
    except UnicodeDecodeError:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        raw = column.cast(pa.large_binary()).to_pylist()
        return [None if b is None else b.decode("utf-8", "surrogateescape") for b in raw], True


def _entry(
    line: int, mapping: ColumnMapping, columns: dict[str, list[Any]], i: int, check_utf8: bool
) -> Candidate | Rejection:
    actor = columns[mapping.actor][i]
    kind = mapping.kind if mapping.kind is not None else columns[mapping.kind_column][i]
    value = columns[mapping.value][i]
    if actor is None:
        return Rejection(line, Reason.ACTOR_ID, "actor_id is null")
    if kind is None:
        return Rejection(line, Reason.UNKNOWN_KIND, "kind is null")
    actor = actor if isinstance(actor, str) else str(actor)
    if check_utf8 and any(isinstance(t, str) and not_utf8(t) for t in (actor, kind, value)):
        return Rejection(line, Reason.ENCODING, ENCODING_DETAIL)
    kind = kind.strip()
    if value is None:
        return Rejection(line, Reason.INVALID_VALUE, "value is null", kind if kind in KINDS else "")
    amount, amount_error = None, ""
    if mapping.amount is not None:
        amount = columns[mapping.amount][i]
        if amount is not None and not 0 <= amount <= MAX_AMOUNT:
            amount, amount_error = None, f"amount must be a whole number in [0, {MAX_AMOUNT}]"
    return Candidate(line, actor, kind, value, amount, amount_error)


def _reason(exc: BaseException) -> str:
    """An Arrow/OS error's reason, first line only: Arrow messages may carry
    a path, never row data (we never hand it rows)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
