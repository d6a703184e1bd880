"""Dirty data files: all or nothing with every refused row listed, or the valid
rows imported and the refused ones in a rejects file (store/importer.py,
store/rejects.py), through Node.import_file into real SQLite stores.

The files come from tests/dirty_files.py, which decides while writing them
which lines are bad and why; nothing here asks the importer for the truth.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import pytest

from dirty_files import FORMATS, MARK, Truth, dirty_file
from psi_share import ImportMode, Node, PsiShareError
from psi_share.errors import ImportFileError, NotFound
from psi_share.store import ImportRejected
from psi_share.store import rejects as rejects_module
from psi_share.store.rejects import LISTED, REJECTS_HEADER

ALL_KINDS = ["email", "phone", "ipv4", "ipv6", "ip_prefix", "payment_fingerprint", "device_id", "account_handle"]


def stored(node: Node, dataset: str = "flagged") -> set[tuple[str, str, str]]:
    return {(r.actor_id, r.kind, r.canonical) for r in node.store.identifiers(dataset, ALL_KINDS)}


def read_rejects(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(REJECTS_HEADER)
    assert MARK not in text  # never a value
    return list(csv.DictReader(io.StringIO(text)))


def listed_rows(message: str, path: Path) -> list[tuple[int, str]]:
    """(line, reason) of each refused row an all-or-nothing error lists."""
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): .* \((\w+)\)$")
    return [(int(m.group(1)), m.group(2)) for m in map(pattern.match, message.splitlines()) if m]


SWEEP = [  # format, rows, share of bad rows, seed, amount column
    (fmt, n, share, seed, amounts)
    for fmt in FORMATS
    for n, share, seed in ((1, 0.0, 1), (30, 0.2, 2), (60, 0.5, 3), (400, 0.08, 4), (250, 0.9, 5))
    for amounts in ((False, True) if fmt != "jsonl" else (False,))
]


def _sweep_id(case: tuple) -> str:
    fmt, n, share, seed, amounts = case
    return f"{fmt}-{n}rows-{share:.0%}bad-seed{seed}" + ("-amounts" if amounts else "")


@pytest.mark.parametrize("case", SWEEP, ids=_sweep_id)
def test_rejects_file_lists_exactly_the_bad_rows_and_the_rest_is_imported(
    tmp_path: Path, node: Node, case: tuple
) -> None:
    fmt, n, share, seed, amounts = case
    truth = dirty_file(tmp_path, fmt, n, share, seed, amounts=amounts)
    target = tmp_path / "rejects.csv"
    if not truth.valid:
        with pytest.raises(ImportRejected, match="No row is valid"):
            node.import_file("flagged", truth.path, None, rejects=target)
        assert not target.exists()
        return
    summary = node.import_file("flagged", truth.path, None, rejects=target)
    rejected = read_rejects(target)
    assert sorted((int(r["line"]), r["kind"], r["reason"]) for r in rejected) == sorted(truth.refused)
    assert {r["file"] for r in rejected} <= {str(truth.path)}
    assert stored(node) == truth.valid
    assert (summary.rows, summary.rejected, summary.identifiers) == (truth.rows, len(truth.refused), len(truth.valid))
    assert summary.rejected_by_reason == dict(Counter(reason for _, _, reason in truth.refused))
    assert summary.rejects_file == str(target)
    assert MARK not in repr(summary)
    assert [p.name for p in tmp_path.iterdir() if "psi-share-" in p.name] == []  # no temporary file left


@pytest.mark.parametrize("case", [c for c in SWEEP if c[2] > 0], ids=_sweep_id)
def test_without_rejects_nothing_is_imported_and_every_refused_row_is_listed(
    tmp_path: Path, node: Node, case: tuple
) -> None:
    fmt, n, share, seed, amounts = case
    truth = dirty_file(tmp_path, fmt, n, share, seed, amounts=amounts)
    if not truth.refused:
        pytest.skip("this draw has no bad row")
    with pytest.raises(ImportRejected) as info:
        node.import_file("flagged", truth.path, None)
    message = str(info.value)
    assert MARK not in message
    in_order = sorted((line, reason) for line, _, reason in truth.refused)
    assert listed_rows(message, truth.path) == in_order[:LISTED]
    assert (info.value.line, info.value.counts) == (in_order[0][0], dict(Counter(r for _, r in in_order)))
    total = len(truth.refused)
    assert f"{total} of {truth.rows} rows refused; nothing was imported" in message
    if total > LISTED:
        assert f"... and {total - LISTED} more refused rows (not listed)" in message
    else:
        assert "more refused rows" not in message
    for reason, count in Counter(r for _, r in in_order).items():
        assert re.search(rf"refused by reason:.*\b{reason} {count}\b", message), (reason, message)
    with pytest.raises(NotFound):
        node.store.dataset("flagged")


def test_more_than_a_hundred_errors_lists_a_hundred_then_counts(tmp_path: Path, node: Node) -> None:
    truth = dirty_file(tmp_path, "csv", 600, 0.5, seed=11)
    assert len(truth.refused) > 2 * LISTED
    with pytest.raises(ImportRejected) as info:
        node.import_file("flagged", truth.path, None)
    lines = str(info.value).splitlines()
    assert len(listed_rows(str(info.value), truth.path)) == LISTED
    assert lines[LISTED + 1].endswith(f"... and {len(truth.refused) - LISTED} more refused rows (not listed)")
    assert "refused by reason:" in lines[LISTED + 2]
    assert lines[-1].startswith(f"--rejects FILE imports the {truth.rows - len(truth.refused)} valid rows")


# -- the rejects file itself -----------------------------------------------------------


def _clean(tmp_path: Path, name: str = "clean.csv") -> Path:
    path = tmp_path / name
    path.write_text("actor_id,kind,value\na1,email,a@example.org\na2,device_id,Tok+/=\n", encoding="utf-8")
    return path


def _one_bad(tmp_path: Path) -> Path:
    path = tmp_path / "one-bad.csv"
    path.write_text(f"actor_id,kind,value\na1,email,b@example.org\na2,email,{MARK}.example.org\n", encoding="utf-8")
    return path


def test_a_clean_file_still_writes_a_rejects_file_with_only_the_header(tmp_path: Path, node: Node) -> None:
    target = tmp_path / "rejects.csv"
    target.write_text(",".join(REJECTS_HEADER) + "\nold.csv,3,email,invalid_value,yesterday's\n", encoding="utf-8")
    summary = node.import_file("flagged", _clean(tmp_path), None, rejects=target)
    assert summary.rejected == 0 and summary.identifiers == 2
    assert target.read_text(encoding="utf-8") == ",".join(REJECTS_HEADER) + "\n"  # yesterday's list is gone


@pytest.mark.parametrize("existing", ["data.csv", "notes.txt"])
def test_an_existing_file_that_is_not_a_rejects_file_is_never_overwritten(
    tmp_path: Path, node: Node, existing: str
) -> None:
    target = tmp_path / existing
    target.write_text(f"actor_id,kind,value\nz1,email,{MARK}@example.org\n", encoding="utf-8")
    with pytest.raises(PsiShareError, match="not a rejects file") as info:
        node.import_file("flagged", _one_bad(tmp_path), None, rejects=target)
    assert MARK not in str(info.value)
    assert target.read_text(encoding="utf-8").startswith("actor_id,kind,value")
    with pytest.raises(NotFound):
        node.store.dataset("flagged")


def test_the_rejects_file_cannot_be_the_data_file_or_in_a_missing_folder(tmp_path: Path, node: Node) -> None:
    data = _one_bad(tmp_path)
    before = data.read_bytes()
    with pytest.raises(PsiShareError, match="is the data file being imported"):
        node.import_file("flagged", data, None, rejects=data)
    assert data.read_bytes() == before
    with pytest.raises(PsiShareError, match="does not exist"):
        node.import_file("flagged", data, None, rejects=tmp_path / "no-such-dir" / "r.csv")
    with pytest.raises(PsiShareError, match="not a regular file"):
        node.import_file("flagged", data, None, rejects=tmp_path)
    with pytest.raises(NotFound):
        node.store.dataset("flagged")


def test_a_failure_after_the_rename_puts_the_old_rejects_file_back(
    tmp_path: Path, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.import_file("flagged", _clean(tmp_path), None)
    before = (node.store.dataset("flagged"), stored(node))
    target = tmp_path / "rejects.csv"
    old = ",".join(REJECTS_HEADER) + "\nold.csv,9,,columns,expected 3 columns, found 2\n"
    target.write_text(old, encoding="utf-8")
    real = rejects_module._fsync_dir
    calls = []

    def failing_fsync(directory: Path) -> None:
        calls.append(directory)
        if len(calls) == 1:  # the rename happened; the store has not committed yet
            raise OSError(5, "Input/output error")
        real(directory)

    monkeypatch.setattr(rejects_module, "_fsync_dir", failing_fsync)
    with pytest.raises(OSError):
        node.import_file("flagged", _one_bad(tmp_path), ImportMode.APPEND, rejects=target)
    assert target.read_text(encoding="utf-8") == old
    assert (node.store.dataset("flagged"), stored(node)) == before
    assert [p.name for p in tmp_path.iterdir() if "psi-share-" in p.name] == []


def test_a_runaway_quote_stops_the_import_even_with_rejects(tmp_path: Path, node: Node) -> None:
    path = tmp_path / "quote.csv"
    path.write_text(
        "actor_id,kind,value\na1,email,ok@example.org\n"
        f'a2,email,"{MARK}@example.org\na3,email,c@example.org\na4,email,d@example.org"\na5,email,e@example.org\n',
        encoding="utf-8",
    )
    target = tmp_path / "rejects.csv"
    with pytest.raises(ImportFileError, match="quoted field runs from line 3 to line 5") as info:
        node.import_file("flagged", path, None, rejects=target)
    assert info.value.line == 3 and MARK not in str(info.value)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "psi-share-" in p.name] == []
    with pytest.raises(NotFound):
        node.store.dataset("flagged")


def test_rows_refused_before_a_fatal_problem_are_listed_with_it(tmp_path: Path, node: Node) -> None:
    path = tmp_path / "both.csv"
    path.write_text(f'actor_id,kind,value\na1,fax,{MARK}\na2,email,"{MARK}\na3,email,c@example.org\n', encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        node.import_file("flagged", path, None)
    message = str(info.value)
    assert listed_rows(message, path) == [(2, "unknown_kind")]
    assert "both.csv:3: a quoted field runs from line 3 to line 4" in message
    assert "(reading stopped there)" in message and MARK not in message


# -- TSV ---------------------------------------------------------------------------------


def test_tsv_fields_are_literal_and_its_header_is_checked(tmp_path: Path, node: Node) -> None:
    path = tmp_path / "f.tsv"
    path.write_text('actor_id\tkind\tvalue\na1\tdevice_id\t"Tok"+/=\na1\temail\tA@Example.org\n', encoding="utf-8")
    node.import_file("flagged", path, None)
    assert stored(node) == {("a1", "device_id", '"Tok"+/='), ("a1", "email", "a@example.org")}
    bad = tmp_path / "commas.tsv"
    bad.write_text("actor_id,kind,value\na1,email,a@example.org\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="header actor_id<tab>kind<tab>value"):
        node.import_file("other", bad, None)


def test_unknown_extension_names_the_formats(tmp_path: Path, node: Node) -> None:
    path = tmp_path / "f.txt"
    path.write_text("actor_id,kind,value\na1,email,a@example.org\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"use \.csv, \.tsv or \.jsonl"):
        node.import_file("flagged", path, None)


def test_truth_helper_counts_what_it_writes(tmp_path: Path) -> None:
    """The generator itself: its line numbers point at the lines it broke."""
    truth: Truth = dirty_file(tmp_path, "csv", 200, 0.3, seed=9)
    lines = truth.path.read_bytes().split(b"\n")
    for line, _, reason in truth.refused:
        text = lines[line - 1]
        assert MARK.encode() in text, (line, reason)
        assert text.count(b",") != 2 or reason != "columns"


def test_an_unterminated_quote_on_the_last_line_refuses_that_row_only(tmp_path: Path, node: Node) -> None:
    path = tmp_path / "last.csv"
    path.write_text(f'actor_id,kind,value\na1,email,a@example.org\na2,email,"{MARK}@example.org\n', encoding="utf-8")
    target = tmp_path / "rejects.csv"
    summary = node.import_file("flagged", path, None, rejects=target)
    assert [(r["line"], r["reason"]) for r in read_rejects(target)] == [("3", "malformed_row")]
    assert (summary.rows, summary.rejected, stored(node)) == (2, 1, {("a1", "email", "a@example.org")})
