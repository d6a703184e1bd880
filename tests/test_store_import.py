"""Data file import (store/importer.py) into real SQLite stores (store/db.py, Node.import_file)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from psi_share import ImportMode, Node, PsiShareError, init_home
from psi_share.errors import ImportFileError, NotFound, StoreError
from psi_share.identifiers import DEFAULT_CONTEXT, CanonicalizationContext
from psi_share.store import SessionRecord, Store, parse_data_file
from psi_share.store.db import SCHEMA_VERSION, IdentifierRow

CTX = DEFAULT_CONTEXT


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def csv_text(*rows: str, header: str = "actor_id,kind,value") -> str:
    return "\n".join([header, *rows]) + "\n"


def jsonl_text(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def import_rows(store: Store, dataset: str, path: Path, *, replace: bool = True) -> tuple[int, int]:
    """(actors added, identifiers added)."""
    rows, _ = parse_data_file(path, CTX)
    written = store.write_dataset(dataset, rows, replace=replace, now=1.0)
    return written.actors_added, written.identifiers_added


# -- good files --------------------------------------------------------------------

GOOD_CSV = csv_text(
    "a-1,email, Alice.Smith+promo@GMail.com ",
    "a-1,phone,(415) 555-0123",
    "a-2,ip_prefix,203.0.113.57/24",
    "a-2,device_id,{6FA459EA-EE8A-3CA4-894E-DB77E160355E}",
    "a-3,ipv6,2001:DB8:0:0:0:0:0:1",
    "a-3,account_handle,@Bob_X",
    "a-3,payment_fingerprint,fp_ABC123",
)


def test_good_csv_is_stored_in_canonical_form(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "flagged.csv", GOOD_CSV)
    rows, count = parse_data_file(path, CTX)
    assert count == 7
    assert import_rows(store, "flagged", path) == (3, 7)
    stored = {(r.actor_id, r.kind): (r.canonical, r.raw, r.version) for r in store.identifiers("flagged", ["email", "phone", "ip_prefix", "device_id", "ipv6", "account_handle", "payment_fingerprint"])}
    assert stored == {
        ("a-1", "email"): ("alicesmith@gmail.com", " Alice.Smith+promo@GMail.com ", 1),
        ("a-1", "phone"): ("+14155550123", "(415) 555-0123", 1),
        ("a-2", "ip_prefix"): ("203.0.113.0/24", "203.0.113.57/24", 1),
        ("a-2", "device_id"): ("6fa459ea-ee8a-3ca4-894e-db77e160355e", "{6FA459EA-EE8A-3CA4-894E-DB77E160355E}", 2),
        ("a-3", "ipv6"): ("2001:db8::1", "2001:DB8:0:0:0:0:0:1", 1),
        ("a-3", "account_handle"): ("bob_x", "@Bob_X", 1),
        ("a-3", "payment_fingerprint"): ("fp_ABC123", "fp_ABC123", 1),
    }
    info = store.dataset("flagged")
    assert (info.revision, info.actors, info.identifiers) == (1, 3, 7)
    assert info.kinds == {k: 1 for k in ("account_handle", "device_id", "email", "ip_prefix", "ipv6", "payment_fingerprint", "phone")}
    assert store.actor_ids("flagged") == ["a-1", "a-2", "a-3"]
    assert [r.kind for r in store.identifiers("flagged", ["email"])] == ["email"]


def test_phone_region_comes_from_the_context(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", csv_text("a-1,phone,020 7946 0018"))
    rows, _ = parse_data_file(path, CanonicalizationContext(default_phone_region="GB"))
    assert [r.canonical for r in rows] == ["+442079460018"]


def test_csv_header_with_spaces_and_blank_lines_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "actor_id , kind , value\r\n\r\na-1, email ,x@example.com\r\n\r\n")
    rows, count = parse_data_file(path, CTX)
    assert count == 1
    assert rows == [IdentifierRow("a-1", "email", 1, "x@example.com", "x@example.com")]


def test_good_jsonl(tmp_path: Path, store: Store) -> None:
    path = write(
        tmp_path / "f.jsonl",
        jsonl_text(
            {"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "A.B@gmail.com"}, {"kind": "ipv4", "value": "192.0.2.1"}]},
            {"actor_id": "a-2", "identifiers": [{"kind": "email", "value": "ab@gmail.com"}]},
        )
        + "\n",
    )
    rows, count = parse_data_file(path, CTX)
    assert count == 3
    assert [(r.actor_id, r.kind, r.canonical) for r in rows] == [
        ("a-1", "email", "ab@gmail.com"),
        ("a-1", "ipv4", "192.0.2.1"),
        ("a-2", "email", "ab@gmail.com"),
    ]
    assert store.write_dataset("flagged", rows, replace=True, now=1.0)[:2] == (2, 3)
    ndjson = write(tmp_path / "f.ndjson", path.read_text())
    assert parse_data_file(ndjson, CTX) == (rows, count)


def test_duplicates_collapse_within_an_actor_but_not_across_actors(tmp_path: Path, node: Node) -> None:
    path = write(
        tmp_path / "d.csv",
        csv_text(
            "a-1,email,Alice.Smith@gmail.com",
            "a-1,email,alicesmith+x@googlemail.com",  # same mailbox as the row above
            "a-1,email,alicesmith@gmail.com",  # and again
            "a-2,email,alicesmith@gmail.com",  # same mailbox, other actor: kept
            "a-2,account_handle,alicesmith",  # same text, other kind: kept
        ),
    )
    summary = node.import_file("flagged", path, None)
    assert (summary.rows, summary.identifiers, summary.duplicates, summary.actors) == (5, 3, 2, 2)
    assert (summary.actors_added, summary.identifiers_added) == (2, 3)
    rows = node.store.identifiers("flagged", ["email", "account_handle"])
    assert [(r.actor_id, r.kind, r.canonical) for r in rows] == [
        ("a-1", "email", "alicesmith@gmail.com"),
        ("a-2", "account_handle", "alicesmith"),
        ("a-2", "email", "alicesmith@gmail.com"),
    ]
    # the first raw form seen is the one kept
    assert rows[0].raw == "Alice.Smith@gmail.com"


# -- malformed files ----------------------------------------------------------------

SECRET = "zq7secret"  # appears only inside identifier values


@pytest.mark.parametrize(
    "name, content, line, reason",
    [
        ("wrong-header", csv_text(f"a-1,email,{SECRET}@example.com", header="actor,kind,value"), 1, "header"),
        ("header-missing-column", csv_text(f"a-1,email,{SECRET}@example.com", header="actor_id,kind"), 1, "header"),
        ("too-few-columns", csv_text("a-1,email,ok@example.com", f"a-2,{SECRET}@example.com"), 3, "3 columns"),
        ("too-many-columns", csv_text("a-1,email,ok@example.com", "a-2,email,ok@example.com", f"a-3,email,{SECRET}@example.com,x"), 4, "3 columns"),
        ("invalid-email", csv_text("a-1,email,ok@example.com", "a-2,phone,+14155550123", f"a-3,email,{SECRET}.example.com"), 4, "invalid email"),
        ("invalid-ipv4", csv_text("a-1,email,ok@example.com", f"a-2,ipv4,010.0.0.{SECRET}"), 3, "invalid ipv4"),
        ("control-chars", csv_text("a-1,email,ok@example.com", f"a-2,email,{SECRET}\x07@example.com"), 3, "invalid email"),
        ("unknown-kind", csv_text("a-1,email,ok@example.com", f"a-2,fax,{SECRET}"), 3, "unknown identifier kind"),
        ("empty-actor-id", csv_text("a-1,email,ok@example.com", f",email,{SECRET}@example.com"), 3, "actor_id"),
        ("actor-id-whitespace", csv_text(f" a-1,email,{SECRET}@example.com"), 2, "actor_id"),
        ("actor-id-too-long", csv_text(f"{'x' * 129},email,{SECRET}@example.com"), 2, "actor_id"),
        ("unterminated-quote", csv_text("a-1,email,ok@example.com", f'a-2,email,"{SECRET}@example.com'), 3, "malformed CSV"),
        ("empty-file", "", 1, "empty"),
        ("header-only", csv_text(), 1, "no identifiers"),
        ("header-and-blank-lines", csv_text("", "  ", ""), 1, "no identifiers"),
    ],
)
def test_malformed_csv(tmp_path: Path, name: str, content: str, line: int, reason: str) -> None:
    path = write(tmp_path / f"{name}.csv", content)
    with pytest.raises(ImportFileError) as info:
        parse_data_file(path, CTX)
    err = info.value
    message = str(err)
    assert (err.path, err.line) == (str(path), line), message
    assert f"{path}:{line}: " in message
    assert f"{name}.csv" in message
    assert reason in message
    assert SECRET not in message


def test_non_utf8_csv_is_refused_without_the_value(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.csv", b"actor_id,kind,value\na-1,email,caf\xe9-zq7secret@example.com\n")
    with pytest.raises(ImportFileError, match="UTF-8") as info:
        parse_data_file(path, CTX)
    assert "latin1.csv" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("bad_line, lines", [(3, 5), (500, 1000)])
def test_non_utf8_csv_names_the_right_line(tmp_path: Path, bad_line: int, lines: int) -> None:
    rows = [b"actor_id,kind,value"] + [b"a-%d,email,u%d@example.com" % (i, i) for i in range(2, lines + 1)]
    rows[bad_line - 1] = b"a-x,email,caf\xe9@example.com"
    path = write(tmp_path / "latin1.csv", b"\n".join(rows) + b"\n")
    with pytest.raises(ImportFileError) as info:
        parse_data_file(path, CTX)
    assert info.value.line == bad_line, str(info.value)


def test_non_utf8_jsonl_names_the_right_line(tmp_path: Path) -> None:
    good = jsonl_text(_rec("a-1", ("email", "a@example.com")), _rec("a-2", ("email", "b@example.com"))).encode()
    bad = b'{"actor_id": "a-3", "identifiers": [{"kind": "email", "value": "caf\xe9@example.com"}]}\n'
    path = write(tmp_path / "latin1.jsonl", good + bad)
    with pytest.raises(ImportFileError, match="UTF-8") as info:
        parse_data_file(path, CTX)
    assert info.value.line == 3, str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        f"a-1,email,{SECRET}@example.com\n",  # header row forgotten
        csv_text(f"a-1,{SECRET}@example.com,email"),  # kind and value swapped
    ],
    ids=["no-header", "swapped-columns"],
)
def test_error_messages_never_quote_identifier_values(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "f.csv", content)
    with pytest.raises(ImportFileError) as info:
        parse_data_file(path, CTX)
    assert SECRET not in str(info.value)


def test_csv_with_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", b"\xef\xbb\xbfactor_id,kind,value\r\na-1,email,x@example.com\r\n")
    rows, count = parse_data_file(path, CTX)
    assert count == 1 and rows[0].canonical == "x@example.com"


def test_unknown_file_type(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", GOOD_CSV)
    with pytest.raises(ImportFileError, match="unknown file type") as info:
        parse_data_file(path, CTX)
    assert "data.txt" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read") as info:
        parse_data_file(tmp_path / "nope.csv", CTX)
    assert "nope.csv" in str(info.value)


def _rec(actor: str, *idents: tuple[str, str]) -> dict:
    return {"actor_id": actor, "identifiers": [{"kind": k, "value": v} for k, v in idents]}


@pytest.mark.parametrize(
    "name, lines, line, reason",
    [
        ("duplicate-actor", [_rec("a-1", ("email", "x@example.com")), _rec("a-2", ("email", "y@example.com")),
                             _rec("a-1", ("email", f"{SECRET}@example.com"))], 3, "earlier line"),
        ("invalid-json", [_rec("a-1", ("email", "x@example.com")), '{"actor_id": "a-2", '], 2, "invalid JSON"),
        ("not-an-object", [[f"{SECRET}@example.com"]], 1, "object"),
        ("actor-id-not-string", [{"actor_id": 5, "identifiers": []}], 1, "actor_id"),
        ("unknown-field", [{"actor_id": "a-1", "identifiers": [], "note": SECRET}], 1, "unknown field(s): note"),
        ("no-identifiers", [{"actor_id": "a-1", "identifiers": []}], 1, "non-empty list"),
        ("identifiers-missing", [{"actor_id": "a-1"}], 1, "non-empty list"),
        ("identifier-extra-key", [{"actor_id": "a-1", "identifiers": [{"kind": "email", "value": f"{SECRET}@example.com", "x": "1"}]}], 1, "identifiers[0]"),
        ("identifier-value-not-string", [_rec("a-1", ("email", "x@example.com")), {"actor_id": "a-2", "identifiers": [{"kind": "email", "value": 5}]}], 2, "identifiers[0]"),
        ("unknown-kind", [_rec("a-1", ("email", "x@example.com"), ("fax", SECRET))], 1, "unknown identifier kind"),
        ("invalid-value", [_rec("a-1", ("email", "x@example.com")), _rec("a-2", ("ipv4", f"1.2.3.{SECRET}"))], 2, "invalid ipv4"),
        ("empty-actor-id", [_rec("", ("email", f"{SECRET}@example.com"))], 1, "actor_id"),
        ("empty-file", [], 1, "no identifiers"),
    ],
)
def test_malformed_jsonl(tmp_path: Path, name: str, lines: list, line: int, reason: str) -> None:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path = write(tmp_path / f"{name}.jsonl", text)
    with pytest.raises(ImportFileError) as info:
        parse_data_file(path, CTX)
    message = str(info.value)
    assert (info.value.path, info.value.line) == (str(path), line), message
    assert f"{name}.jsonl" in message
    assert reason in message
    assert SECRET not in message


# -- all or nothing ---------------------------------------------------------------


def _snapshot(store: Store, dataset: str) -> tuple:
    info = store.dataset(dataset)
    kinds = sorted(info.kinds)
    return info, store.actor_ids(dataset), store.identifiers(dataset, kinds)


def test_bad_line_500_leaves_the_existing_dataset_untouched(tmp_path: Path, store: Store) -> None:
    import_rows(store, "flagged", write(tmp_path / "first.csv", GOOD_CSV))
    before = _snapshot(store, "flagged")
    rows = [f"b-{i},email,user{i}@example.com" for i in range(2, 500)] + ["b-500,email,not-an-email"]
    rows += [f"b-{i},email,user{i}@example.com" for i in range(501, 600)]
    bad = write(tmp_path / "second.csv", csv_text(*rows))
    with pytest.raises(ImportFileError) as info:
        import_rows(store, "flagged", bad, replace=True)
    assert info.value.line == 500
    assert _snapshot(store, "flagged") == before
    assert store.dataset("flagged").revision == 1


def test_failed_node_import_leaves_dataset_untouched(tmp_path: Path, node: Node) -> None:
    node.import_file("flagged", write(tmp_path / "first.csv", GOOD_CSV), ImportMode.REPLACE)
    before = _snapshot(node.store, "flagged")
    rows = [f"b-{i},email,user{i}@example.com" for i in range(2, 500)] + ["b-500,ipv4,999.1.1.1"]
    for mode in (ImportMode.REPLACE, ImportMode.APPEND, None):
        with pytest.raises(ImportFileError, match=r"second\.csv:500:"):
            node.import_file("flagged", write(tmp_path / "second.csv", csv_text(*rows)), mode)
        assert _snapshot(node.store, "flagged") == before


def test_a_failed_write_rolls_back(tmp_path: Path, store: Store) -> None:
    import_rows(store, "flagged", write(tmp_path / "first.csv", GOOD_CSV))
    before = _snapshot(store, "flagged")

    def rows() -> Iterator[IdentifierRow]:
        yield IdentifierRow("z-1", "email", 1, "z@example.com", "z@example.com")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.write_dataset("flagged", rows(), replace=True, now=2.0)
    assert _snapshot(store, "flagged") == before
    # and the connection is usable again afterwards
    assert store.write_dataset("flagged", [IdentifierRow("z-1", "email", 1, "z@example.com", "z")], replace=False, now=3.0)[:2] == (1, 1)


def test_invalid_dataset_name_is_refused(store: Store) -> None:
    for name in ("Flagged", "", "1abc", "a b", "x" * 64):
        with pytest.raises(StoreError):
            store.write_dataset(name, [], replace=True, now=1.0)
    assert store.datasets() == []


# -- replace / append -------------------------------------------------------------


def test_replace_append_and_revisions(tmp_path: Path, node: Node) -> None:
    first = write(tmp_path / "first.csv", csv_text("a-1,email,a@example.com", "a-2,email,b@example.com"))
    second = write(tmp_path / "second.csv", csv_text("a-2,email,b@example.com", "a-2,ipv4,192.0.2.2", "a-3,email,c@example.com"))

    s1 = node.import_file("flagged", first, None)  # new dataset: no mode needed
    assert (s1.actors_added, s1.identifiers_added) == (2, 2)
    assert node.store.dataset("flagged").revision == 1

    with pytest.raises(PsiShareError, match="--replace or --append") as info:
        node.import_file("flagged", second, None)
    assert not isinstance(info.value, ImportFileError)
    assert node.store.dataset("flagged").revision == 1
    assert node.store.actor_ids("flagged") == ["a-1", "a-2"]

    s2 = node.import_file("flagged", second, ImportMode.APPEND)
    assert (s2.rows, s2.actors, s2.identifiers) == (3, 2, 3)
    assert (s2.actors_added, s2.identifiers_added) == (1, 2)  # a-2's email was already there
    info2 = node.store.dataset("flagged")
    assert (info2.revision, info2.actors, info2.identifiers) == (2, 3, 4)
    assert node.store.actor_ids("flagged") == ["a-1", "a-2", "a-3"]

    s3 = node.import_file("flagged", second, ImportMode.REPLACE)
    info3 = node.store.dataset("flagged")
    assert (info3.revision, info3.actors, info3.identifiers) == (3, 2, 3)
    assert node.store.actor_ids("flagged") == ["a-2", "a-3"]
    # counted against what the dataset held: a-1 and its email went, nothing came
    assert (s3.actors_added, s3.identifiers_added, s3.actors_removed, s3.identifiers_removed) == (0, 0, 1, 1)
    assert (s3.revision, s3.changed) == (3, True)

    # An unchanged re-append or re-replace is a no-op: the revision (which
    # keys the responder's prepared filter) stays, and so does updated_at.
    for mode in (ImportMode.APPEND, ImportMode.REPLACE):
        s4 = node.import_file("flagged", second, mode)
        assert (s4.revision, s4.changed, s4.actors_added, s4.identifiers_added) == (3, False, 0, 0)
        assert node.store.dataset("flagged") == info3


def test_datasets_are_separate(tmp_path: Path, node: Node) -> None:
    node.import_file("flagged", write(tmp_path / "a.csv", csv_text("a-1,email,a@example.com")), None)
    node.import_file("accounts", write(tmp_path / "b.csv", csv_text("b-1,email,b@example.com", "b-2,email,c@example.com")), None)
    assert [(d.name, d.actors) for d in node.store.datasets()] == [("accounts", 2), ("flagged", 1)]
    node.store.delete_dataset("accounts")
    with pytest.raises(NotFound):
        node.store.dataset("accounts")
    with pytest.raises(NotFound):
        node.store.delete_dataset("accounts")
    assert node.store.dataset("flagged").actors == 1


# -- persistence ------------------------------------------------------------------


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with Store(path) as store:
        import_rows(store, "flagged", write(tmp_path / "f.csv", GOOD_CSV))
        store.add_peer("lab-b", "127.0.0.1:7401", now=5.0, note="partner")
        store.start_job_run("run-1", "weekly", {"mode": "reveal"}, now=10.0)
        store.start_session(
            SessionRecord(
                id="0123456789abcdef", role="requester", protocol="psi", peer="lab-b", local_dataset="flagged",
                peer_dataset="flagged", kinds={"email": 1, "phone": 1}, mode="reveal", job_run_id="run-1",
                status="running", started_at=11.0, finished_at=None, requester_set_size=2, matched_count=None,
                false_positive_rate=1e-9, error="",
            )
        )
        store.finish_session(
            "0123456789abcdef", "done", now=12.0, matched_count=2,
            matches=[("a-1", "email"), ("a-1", "phone"), ("a-1", "email")],
        )
        store.finish_job_run("run-1", "ok", now=13.0)

    with Store(path) as store:
        assert store.dataset("flagged").actors == 3
        assert store.peer("lab-b").address == "127.0.0.1:7401"
        session = store.session("0123")  # unique prefix
        assert (session.id, session.status, session.matched_count, session.finished_at) == ("0123456789abcdef", "done", 2, 12.0)
        assert session.kinds == {"email": 1, "phone": 1}
        assert session.job_run_id == "run-1" and session.false_positive_rate == 1e-9
        assert [(m.peer, m.actor_id, m.kind) for m in store.matches([session.id])] == [
            ("lab-b", "a-1", "email"),
            ("lab-b", "a-1", "phone"),
        ]
        run = store.job_run("run-1")
        assert (run.status, run.parameters, run.finished_at) == ("ok", {"mode": "reveal"}, 13.0)
        assert [s.id for s in store.sessions(job_run_id="run-1")] == [session.id]
        with pytest.raises(NotFound):
            store.session("ffff")


def test_node_results_persist_across_restarts(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", "lab-a", "127.0.0.1:0")
    with Node.open(home.path) as node:
        node.import_file("flagged", write(tmp_path / "f.csv", GOOD_CSV), None)
        node.store.start_session(
            SessionRecord(
                id="s-1", role="requester", protocol="psi", peer="lab-b", local_dataset="flagged",
                peer_dataset="flagged", kinds={"email": 1}, mode="reveal", job_run_id=None, status="running",
                started_at=1.0, finished_at=None, requester_set_size=1, matched_count=None,
                false_positive_rate=1e-9, error="",
            )
        )
        node.store.finish_session("s-1", "done", now=2.0, matched_count=1, matches=[("a-1", "email")])
    with Node.open(home.path) as node:
        assert node.store.dataset("flagged").revision == 1
        assert node.store.session("s-1").status == "done"
        assert [(m.actor_id, m.kind) for m in node.store.matches(["s-1"])] == [("a-1", "email")]


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    newer = SCHEMA_VERSION + 1  # whatever this software's latest step is
    db.execute(f"PRAGMA user_version={newer}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {newer}"):
        Store(path)


# -- amounts (intersection-sum values) ------------------------------------------------

AMOUNT_HEADER = "actor_id,kind,value,amount"


def test_amount_column_is_stored_and_optional(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "usage.csv", csv_text(
        "a-1,email,a@example.com,12", "a-2,email,b@example.com,", f"a-3,email,c@example.com,{2**63 - 1}",
        "a-3,email,C@example.com,9223372036854775807", header=AMOUNT_HEADER,
    ))
    import_rows(store, "usage", path)
    amounts = {r.actor_id: r.amount for r in store.identifiers("usage", ["email"])}
    assert amounts == {"a-1": 12, "a-2": None, "a-3": 2**63 - 1}
    assert store.has_amounts() and store.amount_kinds("usage") == ["email"]


def test_jsonl_amounts(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "u.jsonl", jsonl_text(
        {"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "a@example.com", "amount": 5}]},
        {"actor_id": "a-2", "identifiers": [{"kind": "email", "value": "b@example.com"}]},
    ))
    import_rows(store, "usage", path)
    assert {r.actor_id: r.amount for r in store.identifiers("usage", ["email"])} == {"a-1": 5, "a-2": None}


@pytest.mark.parametrize(
    "value, reason",
    [("-1", "whole number"), ("1.5", "whole number"), ("1e3", "whole number"), ("12x", "whole number"),
     ("+3", "whole number"), ("٣", "whole number"), (str(2**63), "exceeds the maximum")],
)
def test_bad_amounts_name_file_and_line(tmp_path: Path, value: str, reason: str) -> None:
    path = write(tmp_path / "bad.csv", csv_text("a-1,email,a@example.com,1", f"a-2,email,b@example.com,{value}",
                                                header=AMOUNT_HEADER))
    with pytest.raises(ImportFileError) as info:
        parse_data_file(path, CTX)
    assert f"{path}:3: " in str(info.value) and reason in str(info.value)
    assert info.value.line == 3


@pytest.mark.parametrize("value", [-1, 1.5, "7", True, 2**63])
def test_bad_jsonl_amounts(tmp_path: Path, value: object) -> None:
    path = write(tmp_path / "bad.jsonl", jsonl_text(
        {"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "a@example.com", "amount": value}]}))
    with pytest.raises(ImportFileError, match=r"bad.jsonl:1: identifiers\[0\]: amount must be a JSON integer"):
        parse_data_file(path, CTX)


def test_conflicting_amounts_for_one_identifier(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", csv_text("a-1,email,a@example.com,1", "a-1,email,A@example.com,2",
                                              header=AMOUNT_HEADER))
    with pytest.raises(ImportFileError, match=r"c.csv:3: .*different amount"):
        parse_data_file(path, CTX)
