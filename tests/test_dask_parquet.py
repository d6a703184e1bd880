"""Parquet datasets read by the Dask workers themselves (issue 15: canonicalization on the cluster).

A registered Parquet dataset is cut into slices of whole row groups
(``ParquetRows.parts``); each slice is shipped to a worker, which opens the
source, skips the rows the registration left out, canonicalizes and blinds.
Ground truth comes from the dirty-row generator of test_parquet.py, never
from the code under test.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from test_parquet import ALL_KINDS, CTX, MAPPING, dirty_rows, write_source

from psi_share.errors import StoreError
from psi_share.node.psi.itemsets import part_items
from psi_share.store import Store
from psi_share.store.registry import register_parquet
from psi_share.store.rows import ParquetRows


def _registered(tmp_path: Path, store: Store, n: int, seed: int, *, files: int, row_group: int) -> dict:
    rows, truth, _ = dirty_rows(n, seed=seed)
    write_source(tmp_path / "src", rows, files=files, row_group=row_group)
    register_parquet(store, "d", str(tmp_path / "src"), MAPPING, ctx=CTX, now=1.0, rejects=tmp_path / "rejects.csv")
    return truth


@pytest.mark.parametrize("n,files,row_group", [(300, 1, 7), (300, 3, 64), (2000, 3, 50), (2000, 1, 5000)])
@pytest.mark.parametrize("part_rows", [1, 120, 10**6])
def test_parts_cover_exactly_what_a_read_yields(tmp_path, n, files, row_group, part_rows) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "store.sqlite3")
    truth = _registered(tmp_path, store, n, n + files + row_group, files=files, row_group=row_group)
    rows = store.rows("d")
    assert isinstance(rows, ParquetRows)
    parts = rows.parts(ALL_KINDS, part_rows=part_rows)
    # Shipped to a worker: plain data, the same after pickling.
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]
    got = [(r.actor_id, r.kind, r.canonical) for p in parts for batch in p.batches() for r in batch]
    assert sorted(got) == sorted(truth)  # every accepted row once; refused and repeated rows skipped
    # Slices are whole row groups, each group in exactly one slice, none below part_rows but a file's last.
    by_file: dict[str, list[tuple[int, int]]] = {}
    for p in parts:
        by_file.setdefault(p.file.relative, []).append(p.groups)
    for groups in by_file.values():
        assert groups[0][0] == 0 and all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    if part_rows == 10**6:
        assert len(parts) == files
    # One kind asked: only its rows, and the items a worker returns are distinct and sorted.
    ipv4 = {k[2] for k in truth if k[1] == "ipv4"}
    items = [i for p in rows.parts(["ipv4"], part_rows=part_rows) for i in part_items(p)]
    assert len({i.rsplit("/", 1)[-1] for i in items}) == len(ipv4)
    assert rows.parts(["shoe_size"], part_rows=part_rows) == []


def test_a_worker_that_cannot_read_the_source_says_which_file_and_what_to_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "store.sqlite3")
    _registered(tmp_path, store, 300, 5, files=3, row_group=50)
    parts = store.rows("d").parts(ALL_KINDS, part_rows=100)
    (tmp_path / "src" / parts[-1].file.relative).unlink()
    with pytest.raises(StoreError) as caught:
        part_items(parts[-1])
    message = str(caught.value)
    assert parts[-1].file.relative in message and "workers_read_sources = false" in message
    assert "@example.org" not in message


def test_a_match_against_a_parquet_dataset_the_workers_read(dask_cluster, federation, tmp_path, csv_file,
                                                            monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rows, truth, _ = dirty_rows(3000, seed=15)
    write_source(tmp_path / "customers", rows, files=3, row_group=200)
    b = federation.node("lab-b", matching__bucket_items=1024, engine__kind='"dask"',
                        engine__scheduler=f'"{dask_cluster["address"]}"', exposure__datasets='["customers"]')
    register_parquet(b.store, "customers", str(tmp_path / "customers"), MAPPING, ctx=CTX, now=1.0,
                     rejects=tmp_path / "rejects.csv")
    # The node itself never reads a row: only the workers do.
    monkeypatch.setattr(ParquetRows, "batches", lambda *a, **k: pytest.fail("the node read the Parquet rows"))
    emails = sorted({c for _, kind, c in truth if kind == "email"})
    ours = [(f"a{i}", "email", v) for i, v in enumerate(emails[::3])] + [
        (f"z{i}", "email", f"nobody{i}@example.net") for i in range(40)]
    a = federation.node("lab-a")
    a.import_file("flagged", csv_file("a.csv", ours), None)
    federation.serve("lab-b")
    federation.connect_all()
    outcome = a.match("lab-b", kinds=["email"], peer_dataset="customers")
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == {f"a{i}" for i in range(len(emails[::3]))}
    # One item per identifier, whoever holds it: the exact distinct count, as the filters announce.
    entries = {e.kinds: e for e in b.responder._setups.values()}  # serve's entry over every kind was replaced
    assert entries[("email",)].streamed and entries[("email",)].item_count == len(emails)

