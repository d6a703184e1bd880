"""The Dask engine on a real cluster (issue 15 items 2 and 5).

A scheduler and two workers run as separate processes on 127.0.0.1
(``dask_cluster`` in conftest.py); a responder node configured with
``[engine] kind = "dask"`` blinds its set and builds its bucketed setup on
them, and a requester node's match is checked against the plaintext
intersection.
"""

from __future__ import annotations

from collections import Counter

import psutil
import pytest

from psi_share.crypto.buckets import bucket_of, check_buckets
from psi_share.crypto.cluster import DaskRunner, EngineUnavailable
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key

from conftest import foreign_match
from helpers import deterministic_random_bytes


def test_the_cluster_listens_on_loopback_only(dask_cluster) -> None:  # type: ignore[no-untyped-def]
    for pid in dask_cluster["pids"]:
        listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), (pid, listening)


def test_dask_and_local_engines_blind_alike(dask_cluster) -> None:  # type: ignore[no-untyped-def]
    runner = DaskRunner(dask_cluster["address"])
    try:
        assert runner.workers == 2
        key = new_private_key(deterministic_random_bytes(3))
        items = [f"i{n}" for n in range(5000)]  # two chunks of at least MIN_CHUNK_ITEMS
        remote, local = OpenMinedEngine(runner=runner), OpenMinedEngine()
        assert remote.blinded_points(key, items) == local.blinded_points(key, items)
    finally:
        runner.close()


def test_a_bucketed_match_with_the_responder_on_dask(dask_cluster, federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    theirs = [(f"m{i}", "email", f"m{i}@example.org") for i in range(6000)]
    ours = [(f"a{i}", "email", f"m{i}@example.org") for i in range(5800, 6300, 5)]
    b = federation.node("lab-b", matching__bucket_items=1024, engine__kind='"dask"',
                        engine__scheduler=f'"{dask_cluster["address"]}"')
    a = federation.node("lab-a")
    b.import_file("flagged", csv_file("b.csv", theirs), None)
    a.import_file("flagged", csv_file("a.csv", ours), None)
    federation.serve("lab-b")
    federation.connect_all()
    outcome = a.match("lab-b", kinds=["email"])
    held = {v for _, _, v in theirs}
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == {x for x, _, v in ours if v in held}
    assert outcome.count == 40
    entry = next(iter(b.responder._setups.values()))
    # Streamed: the points stayed on the workers, only the filter came back
    # (one, for the largest size class: 6,000 rows in 6 buckets).
    assert entry.streamed and entry.future.result().bucket_count == 6 and entry.item_count == 6000
    # A foreign client's single setup streams the set again and gathers its points here.
    values = [v for _, _, v in ours]
    found, _ = foreign_match(federation, "lab-a", "lab-b", values)
    assert found == [i for i, v in enumerate(values) if v in held]


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    with pytest.raises(EngineUnavailable, match="not reachable"):
        DaskRunner("tcp://127.0.0.1:9", timeout=1)


def test_streamed_buckets_on_dask_equal_the_local_ones(dask_cluster) -> None:  # type: ignore[no-untyped-def]
    runner = DaskRunner(dask_cluster["address"])
    try:
        key = new_private_key(deterministic_random_bytes(4))
        chunks = [[f"s{n}" for n in range(start, start + 1500)] for start in range(0, 6000, 1500)]
        remote = OpenMinedEngine(runner=runner).stream_buckets(key, iter(chunks), 1e-13, 1024, 5)
        local = OpenMinedEngine().stream_buckets(key, chunks, 1e-13, 1024, 5)
        assert remote == local and sum(remote[0]) == 6000
    finally:
        runner.close()


def test_packed_buckets_on_dask_count_each_item_once(dask_cluster) -> None:  # type: ignore[no-untyped-def]
    """Items repeated within a chunk and across chunks, whose points land in
    every bucket, on the real cluster: each bucket's size is its distinct
    count (computed here from points blinded one set at a time), every
    bucket holds exactly its items, and the setups are the local engine's."""
    runner = DaskRunner(dask_cluster["address"])
    try:
        key = new_private_key(deterministic_random_bytes(5))
        distinct = [f"r{n}" for n in range(2400)]
        # Overlapping windows (each item in one to three chunks), and each
        # chunk repeating its own first items (several actors in one batch).
        chunks = [distinct[a : a + 900] + distinct[a : a + 40] for a in range(0, 2400, 500)]
        assert sum(map(len, chunks)) > 1.5 * len(distinct)
        buckets = 4
        sizes, setups = OpenMinedEngine(runner=runner).stream_buckets(key, iter(chunks), 1e-9, 1024, buckets)
        points = OpenMinedEngine().blinded_points(key, distinct)
        truth = Counter(bucket_of(p, buckets) for p in points)
        assert sizes == [truth[j] for j in range(buckets)] and sum(sizes) == len(distinct)
        assert min(sizes) > 0  # repeats fell in every bucket
        checked = check_buckets(sizes, setups, fpr=1e-9, queries=1024, items=len(distinct), buckets=buckets)
        assert all(checked.matches(p) for p in points)
        strangers = OpenMinedEngine().blinded_points(key, [f"x{n}" for n in range(200)])
        assert not any(checked.matches(p) for p in strangers)
        assert (sizes, setups) == OpenMinedEngine().stream_buckets(key, chunks, 1e-9, 1024, buckets)
    finally:
        runner.close()


def test_a_failed_blinding_on_dask_stops_the_stream(dask_cluster) -> None:  # type: ignore[no-untyped-def]
    """A chunk whose blinding fails on a worker (here: a key out of range,
    refused by OpenMined) ends the pass with its error before the rest of
    the set is read."""
    runner = DaskRunner(dask_cluster["address"])
    read: list[int] = []

    def chunks():  # type: ignore[no-untyped-def]
        for n in range(40):
            read.append(n)
            yield [f"c{n}-{i}" for i in range(50)]

    try:
        with pytest.raises(RuntimeError, match="out of bounds"):
            OpenMinedEngine(runner=runner).stream_buckets(b"\xff" * 32, chunks(), 1e-9, 1024, 3)
        assert len(read) <= 2 * runner.workers + 1
    finally:
        runner.close()
