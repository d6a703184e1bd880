"""A large responder set streamed from the store into its bucketed setup
(issue 15): the node never builds a list or set of every item.

Ground truth comes from Python sets over the rows the tests write; rows
repeat items on purpose (one identifier held by several actors, spelled
differently, in different batches), and the announced set size must be the
distinct count exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from psi_share.crypto.buckets import check_buckets
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
from psi_share.identifiers import domain_separated_item
from psi_share.node.psi.setups import stream_setup
from psi_share.protocols.psi import PreparedSetup
from psi_share.store import Store
from psi_share.store.importer import import_data_file
from psi_share.store.registry import register_parquet
from psi_share.v1 import node_pb2 as pb

from cli_helpers import write_csv
from conftest import foreign_match
from helpers import deterministic_random_bytes
from test_parquet import CTX, MAPPING, write_source

BUCKET_ITEMS = 1024  # [matching] bucket_items in these tests: a few thousand rows make several buckets


def held_rows(distinct: int, seed: int) -> list[tuple[str, str, str, None]]:
    """Rows (actor, kind, value, amount) over ``distinct`` emails and IPs,
    most held by one actor, some by up to four (differently spelled emails,
    far apart in the file), shuffled."""
    rng = random.Random(seed)
    rows = []
    for i in range(distinct):
        kind, value = ("email", f"m{i}@example.org") if i % 5 else ("ipv4", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        for copy in range(rng.choice([1, 1, 1, 2, 4])):
            spelled = value.upper() if kind == "email" and copy % 2 else value
            rows.append((f"u{rng.randrange(distinct)}-{copy}", kind, spelled, None))
    rng.shuffle(rows)
    return rows


def distinct_items(rows: list[tuple[str, str, str, None]]) -> set[tuple[str, str]]:
    return {(k, v.lower()) for _, k, v, _ in rows}


@pytest.mark.parametrize("distinct, batches", [(600, 3), (2500, 8), (2500, 1)])
def test_a_streamed_setup_counts_distinct_items_and_holds_exactly_them(tmp_path: Path, distinct: int, batches: int) -> None:
    """stream_setup from a real SQLite store: bucket sizes add up to the
    distinct count, every bucket passes the requester's own check, and the
    filter holds every item of the set and nothing else (points computed
    here, one at a time, under the same key)."""
    rows = held_rows(distinct, seed=distinct + batches)
    assert len(rows) > distinct  # duplicates, or the test proves nothing
    store = Store(tmp_path / "store.sqlite3")
    try:
        src = write_csv(tmp_path / "rows.csv", [(a, k, v) for a, k, v, _ in rows])
        import_data_file(store, "big", src, ctx=CTX, mode=None, now=1.0)
        engine = OpenMinedEngine()
        key = new_private_key(deterministic_random_bytes(distinct))
        kinds = ("email", "ipv4")
        count = sum(store.dataset("big").kinds.values())
        prepared = stream_setup(engine, key, store.rows("big"), kinds, rows_count=count, false_positive_rate=1e-9,
                                queries=1024, bucket_items=max(1, count // batches))
    finally:
        store.close()
    truth = distinct_items(rows)
    assert isinstance(prepared, PreparedSetup) and prepared.item_count == len(truth)
    message = pb.PsiBucketedSetup.FromString(prepared.setup)
    checked = check_buckets(list(message.bucket_sizes), list(message.setups), fpr=1e-9, queries=1024,
                            items=len(truth), buckets=prepared.bucket_count)
    held = engine.blinded_points(key, [domain_separated_item(k, v) for k, v in sorted(truth)])
    assert all(checked.matches(p) for p in held)
    strangers = engine.blinded_points(key, [domain_separated_item("email", f"x{i}@example.org") for i in range(300)])
    assert not any(checked.matches(p) for p in strangers)


def _serve_big(federation, tmp_path: Path, csv_file, source: str, rows, **config):  # type: ignore[no-untyped-def]
    b = federation.node("lab-b", matching__bucket_items=BUCKET_ITEMS, **config)
    if source == "sqlite":
        b.import_file("flagged", csv_file("b.csv", [(a, k, v) for a, k, v, _ in rows]), None)
    else:
        write_source(tmp_path / "customers", rows, files=3, row_group=700)
        register_parquet(b.store, "flagged", str(tmp_path / "customers"), MAPPING, ctx=CTX, now=1.0)

    def refuse(dataset, kinds):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the responder read every row of {dataset} into one list")

    b.store.identifiers = refuse  # the streamed path reads batches only
    return b


def _match_and_check(federation, csv_file, b, rows) -> None:  # type: ignore[no-untyped-def]
    truth = distinct_items(rows)
    shared = sorted(truth)[::9][:150]
    ours = [(f"a{i}", k, v) for i, (k, v) in enumerate(shared)] + [(f"z{i}", "email", f"z{i}@x.org") for i in range(50)]
    a = federation.node("lab-a")
    a.import_file("flagged", csv_file("a.csv", ours), None)
    federation.serve("lab-b")
    federation.connect_all()
    served: list[tuple[int, int]] = []  # (queries, buckets) of each filter lab-b sends
    setup = b.responder.psi_setup

    def recording(peer, sid):  # type: ignore[no-untyped-def]
        session = b.responder._session(peer, sid)
        served.append((session.queries, session.buckets))
        return setup(peer, sid)

    b.responder.psi_setup = recording
    outcome = a.match("lab-b", kinds=["email", "ipv4"])
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == {x for x, k, v in ours if (k, v) in truth}
    entry = next(iter(b.responder._setups.values()))
    assert entry.streamed and entry.item_count == len(truth)  # announced: the distinct count, exactly
    prepared = entry.future.result()
    assert prepared.bucket_count >= 3 and sum(pb.PsiBucketedSetup.FromString(prepared.setup).bucket_sizes) == len(truth)
    # Serve start streamed the largest size class; the session (200 items) got
    # that filter and started its own class's pass, which the next session gets.
    assert prepared.max_set_size == 1_000_000
    for pending in list(entry.pending.values()):
        pending.result()
    small = [p for (queries, buckets), p in entry.filters.items() if queries == 1024 and buckets > 1]
    assert len(small) == 1 and small[0].item_count == len(truth) and len(small[0].setup) < len(prepared.setup)
    again = a.match("lab-b", kinds=["email", "ipv4"])
    assert again.count == outcome.count
    assert served == [(1_000_000, prepared.bucket_count), (1024, small[0].bucket_count)]


@pytest.mark.parametrize("source", ["sqlite", "parquet"])
def test_a_streamed_set_matches_the_plaintext_with_the_local_engine(federation, tmp_path, csv_file, source) -> None:  # type: ignore[no-untyped-def]
    rows = held_rows(2500, seed=7)
    b = _serve_big(federation, tmp_path, csv_file, source, rows)
    _match_and_check(federation, csv_file, b, rows)
    if source == "sqlite":
        # A foreign OpenMined client reads one setup only: the set is streamed again into one.
        values = [v for k, v in sorted(distinct_items(rows))[::40] if k == "email"] + ["nobody@x.org"]
        found, _ = foreign_match(federation, "lab-a", "lab-b", values)
        assert found == list(range(len(values) - 1))


@pytest.mark.parametrize("source", ["sqlite", "parquet"])
def test_a_streamed_set_matches_the_plaintext_on_dask(dask_cluster, federation, tmp_path, csv_file, source) -> None:  # type: ignore[no-untyped-def]
    rows = held_rows(2500, seed=8)
    b = _serve_big(federation, tmp_path, csv_file, source, rows, engine__kind='"dask"',
                   engine__scheduler=f'"{dask_cluster["address"]}"')
    _match_and_check(federation, csv_file, b, rows)
