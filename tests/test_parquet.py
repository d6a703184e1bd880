"""Parquet datasets: registration and streamed reads against ground truth computed
here in plain Python, revisions, refusals, and a real match over one."""

from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psi_share.errors import ImportFileError, PsiShareError, StoreError
from psi_share.identifiers import CanonicalizationContext
from psi_share.store import ImportMode, ImportRejected, Store, import_data_file
from psi_share.store.registry import register_parquet
from psi_share.store.sources import ColumnMapping

CTX = CanonicalizationContext()
MAPPING = ColumnMapping(actor="actor", value="value", kind_column="kind", amount="amount")
ALL_KINDS = ["email", "ipv4", "phone", "device_id"]


# -- a dirty source whose truth the generator knows ----------------------------


def dirty_rows(n: int, seed: int) -> tuple[list[tuple], dict, list[tuple[int, str]]]:
    """``n`` rows (actor, kind, value, amount), the identifiers they should give
    ({(actor, kind, canonical): amount}, the first row wins) and the refusals
    [(row index, reason)]. Canonical forms are built first and then dirtied, so
    the truth does not come from the code under test."""
    rng = random.Random(seed)
    rows: list[tuple] = []
    keys: list[tuple[str, str, str] | None] = []  # each row's identifier, None for a refused row
    truth: dict[tuple[str, str, str], int | None] = {}
    refused: list[tuple[int, str]] = []

    def valid(key: tuple[str, str, str], raw: str, amount: int | None) -> None:
        amount = truth.get(key, amount)  # the generator's own repeats agree; conflicts are made below
        rows.append((key[0], key[1], raw, amount))
        keys.append(key)
        truth.setdefault(key, amount)

    def bad(row: tuple, reason: str) -> None:
        rows.append(row)
        keys.append(None)
        refused.append((len(rows) - 1, reason))

    for i in range(n):
        actor = f"u{rng.randrange(max(1, n // 3))}"
        roll, amount = rng.random(), rng.choice([None, rng.randrange(1000)])
        if roll < 0.08 and rows and (key := keys[j := rng.randrange(len(rows))]) is not None:
            if rng.random() < 0.5:  # the same identifier of the same actor with another amount
                bad((*rows[j][:3], (truth[key] or 0) + 1), "amount_conflict")
            else:  # a repeat: collapsed
                valid(key, rows[j][2], truth[key])
        elif roll < 0.14:
            bad((actor, "email", f"no-at-sign-{i}", amount), "invalid_value")
        elif roll < 0.17:
            bad((actor, "fax", "123", amount), "unknown_kind")
        elif roll < 0.19:
            bad((None, "email", f"x{i}@example.org", amount), "actor_id")
        elif roll < 0.21:
            bad((actor, "ipv4", None, amount), "invalid_value")
        elif roll < 0.23:
            bad((f" {actor}", "email", f"y{i}@example.org", amount), "actor_id")
        elif roll < 0.6:
            local = f"user{rng.randrange(n)}"
            canonical = f"{local}@example.org"
            valid((actor, "email", canonical), rng.choice([canonical, canonical.upper(), f"  {local.title()}@Example.ORG "]), amount)
        elif roll < 0.85:
            canonical = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
            valid((actor, "ipv4", canonical), rng.choice([canonical, f" {canonical}"]), amount)
        else:
            token = f"DevTok{rng.randrange(n)}xyz"  # opaque token: case kept
            valid((actor, "device_id", token), token, amount)
    return rows, truth, refused


def write_source(path: Path, rows: list[tuple], *, files: int = 1, row_group: int = 1000) -> list[tuple[str, int]]:
    """Write ``rows`` as ``files`` Parquet files under ``path`` (a file when
    ``files`` is 1); return each row's (file name below the source, row number)."""
    schema = pa.schema([("actor", pa.string()), ("kind", pa.string()), ("value", pa.string()), ("amount", pa.int64())])
    chunks = [rows[i * len(rows) // files:(i + 1) * len(rows) // files] for i in range(files)]
    where = []
    if files > 1:
        path.mkdir()
        (path / "_SUCCESS").write_text("")  # Spark's marker: skipped
    for i, chunk in enumerate(chunks):
        name = f"part-{i:05d}.parquet"
        target = path if files == 1 else path / name
        table = pa.Table.from_pylist([dict(zip(schema.names, r)) for r in chunk], schema=schema)
        pq.write_table(table, target, row_group_size=row_group)
        where += [(path.name if files == 1 else name, k + 1) for k in range(len(chunk))]
    return where


def stored(store: Store, dataset: str) -> dict[tuple[str, str, str], int | None]:
    rows = store.identifiers(dataset, ALL_KINDS)
    keys = [(r.actor_id, r.kind, r.canonical) for r in rows]
    assert len(keys) == len(set(keys)), "a read yields each identifier once"
    return {(r.actor_id, r.kind, r.canonical): r.amount for r in rows}


# -- the sweep ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 300, 2000])
@pytest.mark.parametrize("row_group,batch_rows,files", [(1, 1, 1), (5, 3, 3), (64, 100, 1), (7, 2, 3), (1000, 65536, 3)])
def test_sweep_against_plain_python(tmp_path, n, row_group, batch_rows, files):
    rows, truth, refused = dirty_rows(n, seed=n * 31 + row_group)
    # One-row groups and batches cost a Python round trip each: 300 rows show
    # them; 2000 rows of them would only add seconds.
    row_group, batch_rows = max(row_group, n // 100), max(batch_rows, n // 100)
    where = write_source(tmp_path / "src", rows, files=files, row_group=row_group)
    store = Store(tmp_path / "store.sqlite3")
    expected_refusals = sorted((where[i][0], where[i][1], reason) for i, reason in refused)
    if refused:
        with pytest.raises(ImportRejected) as caught:
            register_parquet(store, "d", str(tmp_path / "src"), MAPPING, ctx=CTX, now=1.0, batch_rows=batch_rows)
        message = str(caught.value)
        assert f"{len(refused)} of {n} rows refused; nothing was registered" in message
        # Every refusal is listed, up to 100 (conflicts, found once the pass ends, come last).
        listed = re.findall(r"^([^:\n]+):(\d+): .* \((\w+)\)$", message, re.M)
        assert len(listed) == min(100, len(refused))
        assert {(f, int(line), r) for f, line, r in listed} <= set(expected_refusals)
        assert store.datasets() == []
    rejects = tmp_path / "rejects.csv"
    if not truth:  # no valid row: refused even with --rejects, as a CSV file would be
        with pytest.raises(ImportRejected, match="No row is valid"):
            register_parquet(store, "d", str(tmp_path / "src"), MAPPING, ctx=CTX, now=1.0, rejects=rejects)
        assert not rejects.exists() and store.datasets() == []
        return
    summary = register_parquet(store, "d", str(tmp_path / "src"), MAPPING, ctx=CTX, now=1.0,
                               batch_rows=batch_rows, rejects=rejects if refused else None)
    if refused:
        with rejects.open(newline="") as fh:
            got = sorted((r["file"], int(r["line"]), r["reason"]) for r in csv.DictReader(fh))
        assert got == expected_refusals
        # Nothing of a row's value reaches the rejects file.
        text = rejects.read_text()
        assert "no-at-sign" not in text and "@example.org" not in text
    assert stored(store, "d") == truth
    info = store.dataset("d")
    assert info.identifiers == len(truth) == summary.identifiers
    assert info.actors == len({k[0] for k in truth})
    assert info.kinds == {k: v for k in ALL_KINDS if (v := sum(1 for t in truth if t[1] == k))}
    # Batches of the seam are bounded and never empty.
    batches = list(store.rows("d").batches(ALL_KINDS, batch_rows=batch_rows))
    assert all(0 < len(b) <= batch_rows for b in batches)
    assert [r.kind for b in store.rows("d").batches(["ipv4"]) for r in b] == ["ipv4"] * info.kinds.get("ipv4", 0)


def test_same_rows_as_a_csv_import(tmp_path):
    """One file, registered from Parquet and imported from CSV: the same
    identifiers, counts and refusals (CSV line = Parquet row + 1, its header)."""
    rows, _, _ = dirty_rows(500, seed=7)
    write_source(tmp_path / "s.parquet", rows, row_group=50)
    with (tmp_path / "s.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actor_id", "kind", "value", "amount"])
        w.writerows(("" if a is None else a, k, "" if v is None else v, "" if m is None else m) for a, k, v, m in rows)
    store = Store(tmp_path / "store.sqlite3")
    pr, cr = tmp_path / "p-rejects.csv", tmp_path / "c-rejects.csv"
    p = register_parquet(store, "p", str(tmp_path / "s.parquet"), MAPPING, ctx=CTX, now=1.0, rejects=pr)
    c = import_data_file(store, "c", tmp_path / "s.csv", ctx=CTX, mode=ImportMode.REPLACE, now=1.0, rejects=cr)
    assert stored(store, "p") == stored(store, "c")
    pi, ci = store.dataset("p"), store.dataset("c")
    assert (pi.actors, pi.identifiers, pi.kinds) == (ci.actors, ci.identifiers, ci.kinds)
    assert (p.duplicates, p.rejected) == (c.duplicates, c.rejected)
    # The SQLite side of the seam streams too: bounded batches, the same rows in the same order.
    batches = list(store.rows("c").batches(ALL_KINDS, batch_rows=7))
    assert all(0 < len(b) <= 7 for b in batches)
    assert [r for b in batches for r in b] == store.identifiers("c", ALL_KINDS)
    with pr.open() as a, cr.open() as b:
        refusals = lambda fh, off: sorted((int(r["line"]) + off, r["reason"]) for r in csv.DictReader(fh))  # noqa: E731
        # A null (Parquet) and an empty field (CSV) are refused for the same reason.
        assert refusals(a, 1) == refusals(b, 0)


# -- revisions -------------------------------------------------------------------


def test_revision_moves_only_when_the_source_changes(tmp_path):
    src = tmp_path / "warehouse"
    src.mkdir()
    first = [("a1", "email", "a@example.org", None), ("a2", "ipv4", "10.0.0.1", None)]
    write_source(src / "p0.parquet", first)
    store = Store(tmp_path / "store.sqlite3")
    reg = lambda now, mapping=MAPPING, uri=str(src): register_parquet(store, "d", uri, mapping, ctx=CTX, now=now)  # noqa: E731
    assert (reg(1.0).revision, store.dataset("d").revision) == (1, 1)
    again = reg(2.0)
    assert (again.revision, again.changed, store.dataset("d").updated_at) == (1, False, 1.0)
    assert reg(3.0, uri=src.as_uri()).changed is False  # file:// names the same files
    # A new file in the directory: reads refuse until it is registered again.
    write_source(src / "p1.parquet", [("a3", "email", "c@example.org", None)])
    with pytest.raises(StoreError, match="no longer matches its registration"):
        store.identifiers("d", ALL_KINDS)
    assert reg(4.0).revision == 2 and len(store.identifiers("d", ALL_KINDS)) == 3
    # A file rewritten in place (same name, same size).
    write_source(src / "p1.parquet", [("a3", "email", "d@example.org", None)])
    os.utime(src / "p1.parquet", ns=(1, 1))
    with pytest.raises(StoreError, match="no longer matches"):
        store.identifiers("d", ["email"])
    assert reg(5.0).revision == 3
    no_amount = ColumnMapping(actor="actor", value="value", kind_column="kind")
    assert reg(6.0, mapping=no_amount).revision == 4
    # Hidden and underscore files are not part of the source.
    (src / "_SUCCESS").write_text("")
    (src / ".p0.parquet.crc").write_bytes(b"x")
    assert reg(7.0, mapping=no_amount).changed is False
    # Rows checked under another canonicalization version are not read.
    with store.transaction() as db:
        db.execute("""UPDATE parquet_sources SET canonicalization = '{"phone_region": "US", "versions": {"email": 0}}'""")
    with pytest.raises(StoreError, match="canonicalization of email(, ipv4)? changed"):
        store.identifiers("d", ["email"])
    assert reg(8.0, mapping=no_amount).revision == 5
    # A source that is gone.
    (src / "p1.parquet").unlink()
    (src / "p0.parquet").unlink()
    with pytest.raises(StoreError, match="dataset 'd': .*holds no data files"):
        store.identifiers("d", ["email"])


def test_imports_and_registrations_do_not_mix(tmp_path, csv_file):
    write_source(tmp_path / "s.parquet", [("a1", "email", "a@example.org", None)])
    store = Store(tmp_path / "store.sqlite3")
    register_parquet(store, "p", str(tmp_path / "s.parquet"), MAPPING, ctx=CTX, now=1.0)
    rows = csv_file("x.csv", [("b1", "email", "b@example.org")])
    with pytest.raises(PsiShareError, match="registered from a Parquet source"):
        import_data_file(store, "p", rows, ctx=CTX, mode=ImportMode.APPEND, now=2.0)
    import_data_file(store, "c", rows, ctx=CTX, mode=None, now=2.0)
    with pytest.raises(PsiShareError, match="holds imported rows"):
        register_parquet(store, "c", str(tmp_path / "s.parquet"), MAPPING, ctx=CTX, now=3.0)
    store.delete_dataset("p")
    assert [d.name for d in store.datasets()] == ["c"]
    assert store._query("SELECT COUNT(*) FROM parquet_sources")[0][0] == 0


# -- whole-source problems ---------------------------------------------------------


def test_source_problems_name_the_file_and_column(tmp_path):
    store = Store(tmp_path / "store.sqlite3")
    good = tmp_path / "s.parquet"
    write_source(good, [("a1", "email", "a@example.org", 1)])

    def refused(uri: str, mapping: ColumnMapping = MAPPING) -> str:
        with pytest.raises(ImportFileError) as caught:
            register_parquet(store, "d", uri, mapping, ctx=CTX, now=1.0)
        return str(caught.value)

    assert "no such file or directory" in refused(str(tmp_path / "missing.parquet"))
    assert "no column 'who'" in refused(str(good), ColumnMapping(actor="who", value="value", kind="email"))
    assert "column 'amount' (value) has type int64; expected a string column" in refused(
        str(good), ColumnMapping(actor="actor", value="amount", kind="email"))
    (tmp_path / "notes.txt").write_text("hello, not parquet")
    assert "not a Parquet file" in refused(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    assert "holds no data files" in refused(str(tmp_path / "empty"))
    write_source(tmp_path / "empty" / "p.parquet", [])
    assert "the source holds no rows" in refused(str(tmp_path / "empty"))
    with pytest.raises(PsiShareError, match="not both"):
        ColumnMapping(actor="a", value="v", kind_column="k", kind="email")
    with pytest.raises(PsiShareError, match="unknown identifier kind"):
        ColumnMapping(actor="a", value="v", kind="fax")
    assert store.datasets() == []


def test_fixed_kind_integer_actors_dictionary_columns_and_bad_utf8(tmp_path):
    values = pa.array([b"+1 415 555 0100", b"\xff\xfe", b"(415) 555-0123"], pa.binary()).view(pa.string())
    table = pa.table({"uid": pa.array([7, 8, 9], pa.int64()), "phone": values.dictionary_encode()})
    pq.write_table(table, tmp_path / "phones.parquet")
    store = Store(tmp_path / "store.sqlite3")
    mapping = ColumnMapping(actor="uid", value="phone", kind="phone")
    with pytest.raises(ImportRejected, match=r"phones.parquet:2: not valid UTF-8 .*\(encoding\)"):
        register_parquet(store, "d", str(tmp_path / "phones.parquet"), mapping, ctx=CTX, now=1.0)
    register_parquet(store, "d", str(tmp_path / "phones.parquet"), mapping, ctx=CTX, now=1.0,
                     rejects=tmp_path / "r.csv")
    assert stored(store, "d") == {("7", "phone", "+14155550100"): None, ("9", "phone", "+14155550123"): None}


# -- real nodes over gRPC ------------------------------------------------------------

SHARED_KINDS = ["email", "ipv4", "device_id"]


def test_real_match_and_sum_over_a_parquet_dataset(federation, tmp_path, csv_file):
    """lab-b's customers stay in Parquet; lab-a's flagged actors are imported.
    Both directions of PSI and an intersection-sum equal the plaintext answers."""
    rows, truth, _ = dirty_rows(400, seed=11)
    write_source(tmp_path / "customers", rows, files=3, row_group=40)
    usage = [("b1", "email", "Eve@Example.org", 30), ("b2", "email", "eve@example.org", 5),
             ("b3", "email", "bob@example.org", 999)]
    write_source(tmp_path / "usage.parquet", usage)
    b_items = {(k, c) for _, k, c in truth}
    rng = random.Random(5)
    shared = rng.sample(sorted(truth), 25)
    a_rows = [(f"a{i}", k, c.upper() if k == "email" else c) for i, (_, k, c) in enumerate(shared)]
    a_rows += [(f"z{i}", "email", f"nobody{i}@elsewhere.net") for i in range(20)]
    a_rows += [("e1", "email", "EVE@example.org")]
    a = federation.node("lab-a", paillier__pool_size=64, privacy__enabled="false")
    b = federation.node("lab-b", paillier__pool_size=64, privacy__enabled="false",
                        exposure__datasets='["customers", "usage"]')
    a.import_file("flagged", csv_file("a.csv", a_rows), None)
    register_parquet(b.store, "customers", str(tmp_path / "customers"), MAPPING, ctx=CTX, now=1.0,
                     rejects=tmp_path / "rejects.csv")
    register_parquet(b.store, "usage", str(tmp_path / "usage.parquet"), MAPPING, ctx=CTX, now=1.0)
    federation.serve("lab-a")
    federation.serve("lab-b")
    federation.connect_all()

    outcome = a.match("lab-b", peer_dataset="customers", kinds=SHARED_KINDS)
    expected = {(actor, k) for actor, k, v in a_rows if (k, v.lower() if k == "email" else v) in b_items}
    assert {(m.actor_id, m.kind) for m in a.store.matches([outcome.session_id])} == expected
    assert outcome.count == len({(k, c) for _, k, c in shared})

    # lab-b asks with its Parquet dataset as the requester's set.
    back = b.match("lab-a", dataset="customers", peer_dataset="flagged", kinds=SHARED_KINDS)
    a_items = {(k, v.lower() if k == "email" else v) for _, k, v in a_rows}
    expected_b = {(actor, k) for actor, k, c in truth if (k, c) in a_items}
    assert {(m.actor_id, m.kind) for m in b.store.matches([back.session_id])} == expected_b

    s = a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    assert (s.intersection_size, s.sum) == (1, 35)  # eve's two rows at lab-b total 35; bob is not shared


# -- the CLI, as a user runs it ---------------------------------------------------------


def test_cli_register_and_show(tmp_path):
    from cli_helpers import cli, failed_cleanly, ok, ok_json

    home = tmp_path / "home"
    ok(cli(tmp_path, "init", "lab-a", home=home))
    rows = [("a1", "email", "Secret.Person@Example.org", None), ("a2", "email", "not-an-email-secret", None)]
    write_source(tmp_path / "flagged.parquet", rows)
    args = ["data", "register", "flagged", tmp_path / "flagged.parquet", "--actor-column", "actor",
            "--kind-column", "kind", "--value-column", "value"]
    err = failed_cleanly(cli(tmp_path, *args, home=home))
    assert "flagged.parquet:2: invalid email" in err and "nothing was registered" in err
    assert "secret" not in err.lower()
    done = ok_json(cli(tmp_path, *args, "--rejects", tmp_path / "r.csv", "--format", "json", home=home))
    assert (done["rows"], done["rejected"], done["identifiers"], done["revision"]) == (2, 1, 1, 1)
    shown = ok_json(cli(tmp_path, "data", "show", "flagged", "--format", "json", home=home))
    assert shown["source"] == "parquet" and shown["location"] == str(tmp_path / "flagged.parquet")
    assert (shown["kinds"], shown["rows_left_out"], shown["kind_column"]) == ({"email": 1}, 1, "kind")
    assert shown["column_types"] == {"actor": "string", "kind": "string", "value": "string"}
    listed = ok_json(cli(tmp_path, "data", "list", "--format", "json", home=home))
    assert [(d["dataset"], d["actors"], d["identifiers"]) for d in listed] == [("flagged", 1, 1)]
