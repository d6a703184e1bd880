"""The Dask engine on a real cluster (issue 15 items 2 and 5).

A scheduler and two workers run as separate processes on 127.0.0.1
(``dask_cluster`` in conftest.py); a responder node configured with
``[engine] kind = "dask"`` blinds its set and builds its bucketed setup on
them, and a requester node's match is checked against the plaintext
intersection.
"""

from __future__ import annotations

import psutil
import pytest

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
