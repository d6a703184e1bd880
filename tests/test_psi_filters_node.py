"""Filters between real nodes over gRPC (issues 11 and 12).

* Responders in the window where the node used to serve an overflowed GCS
  (issue 12: every match failed) match correctly, with the default config.
* A peer announcing 70,000 items and sending none gets a filter of its own
  size class; honest peers' sessions are unaffected.
* A cheating responder (a real node whose PsiSetup answers forged filters,
  written here) is refused with the reason; nothing is recorded as a match;
  the session is failed on both sides; the requesting node keeps working.
  The crash case (issue 11's forged GCS) runs in a subprocess that must
  survive.
* A filter the responder cannot build correctly is never served.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable

import pytest
from private_set_intersection.python import ServerSetup

from helpers import run_python
from psi_share import Mode
from psi_share.crypto import filters
from psi_share.crypto.filter_check import SetupTerms, check_server_setup
from psi_share.crypto.openmined_params import bloom_shape
from psi_share.errors import LocalProtocolError, PeerRefused, RemoteProtocolError
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc


def emails(prefix: str, n: int) -> list[tuple[str, str, str]]:
    return [(f"{prefix}{i}", "email", f"{prefix}{i}@example.org") for i in range(n)]


def expected_actors(ours: list[tuple[str, str, str]], theirs: list[tuple[str, str, str]]) -> set[str]:
    """Plain Python sets: our actors whose (already canonical) email they hold."""
    held = {value for _, _, value in theirs}
    return {actor for actor, _, value in ours if value in held}


def two_nodes(federation, csv_file, a_rows, b_rows):  # type: ignore[no-untyped-def]
    """lab-a (requester) and lab-b (responder, serving) with these email rows."""
    b, a = federation.node("lab-b"), federation.node("lab-a")
    b.import_file("flagged", csv_file("b.csv", b_rows), None)
    a.import_file("flagged", csv_file("a.csv", a_rows), None)
    federation.serve("lab-b")
    federation.connect_all()
    return a, b


def _open(stub, set_size: int) -> pb.PsiOpenResponse:  # type: ignore[no-untyped-def]
    return stub.PsiOpen(pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="flagged",
                                          kinds=[pb.KindVersion(kind="email", version=1)], set_size=set_size,
                                          reveal_intersection=True))


def _setup(stub, session_id: str) -> ServerSetup:  # type: ignore[no-untyped-def]
    data = b"".join(c.data for c in stub.PsiSetup(pb.PsiSetupRequest(protocol_version=PROTOCOL_VERSION,
                                                                     session_id=session_id)))
    return ServerSetup.FromString(data)


# -- issue 12 ------------------------------------------------------------------------


def test_window_sizes_match_and_a_70k_announcement_poisons_nothing(federation, csv_file) -> None:
    b_flagged, b_big = emails("m", 1000), emails("m", 4600)  # inside the old window (513..4611)
    a_rows = emails("m", 20)[::2] + [(f"m{i}", "email", f"m{i}@example.org") for i in (999, 1000, 4599, 4600)] + emails("x", 15)
    b = federation.node("lab-b", exposure__datasets='["flagged", "big"]')  # default max_set_size, fpr
    a, _ = federation.node("lab-a"), federation.node("lab-c")
    b.import_file("flagged", csv_file("bf.csv", b_flagged), None)
    b.import_file("big", csv_file("bb.csv", b_big), None)
    a.import_file("flagged", csv_file("a.csv", a_rows), None)
    federation.serve("lab-b")
    federation.connect_all()

    # lab-c (a member running its own client) announces 70,000 items and never sends one.
    with federation.channel("lab-c", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        hostile = _open(stub, 70_000)
        assert (hostile.max_set_size, hostile.responder_set_size) == (131_072, 1000)
        their_filter = _setup(stub, hostile.session_id)  # what lab-c got is a correct filter for its class
        check_server_setup(their_filter, SetupTerms(1e-9, 131_072, 1000))
    with federation.channel("lab-a", "lab-b") as channel:
        assert _open(pb_grpc.PsiShareNodeStub(channel), 40).max_set_size == 1024  # honest peers: their own class

    for peer_dataset, theirs in (("flagged", b_flagged), ("big", b_big)):
        want = expected_actors(a_rows, theirs)
        outcome = a.match("lab-b", peer_dataset=peer_dataset, kinds=["email"])
        assert {m.actor_id for m in a.store.matches([outcome.session_id])} == want
        assert outcome.count == len(want)
        counted = a.match("lab-b", peer_dataset=peer_dataset, kinds=["email"], mode=Mode.COUNT)
        assert counted.count == len(want)
        assert b.store.session(outcome.session_id).status == b.store.session(counted.session_id).status == "done"


def test_a_filter_that_fails_its_own_check_is_never_served(federation, csv_file, monkeypatch) -> None:
    """A GCS builder that goes wrong (as OpenMined's arithmetic did) is caught by
    the responder's own check: the next correct setup is served instead."""
    real = filters.gcs_setup

    def broken(points, fpr, queries):  # type: ignore[no-untyped-def]
        setup = real(points, fpr, queries)
        if setup is not None:
            setup.gcs.hash_range = -(2**63)  # what OpenMined returned in issue 12
        return setup

    monkeypatch.setattr(filters, "gcs_setup", broken)
    a_rows, b_rows = emails("m", 30), emails("m", 600)
    a, b = two_nodes(federation, csv_file, a_rows, b_rows)
    outcome = a.match("lab-b", kinds=["email"])
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == expected_actors(a_rows, b_rows)
    assert b.store.session(outcome.session_id).status == "done"


def test_a_responder_that_cannot_build_a_filter_fails_the_session_on_both_sides(federation, csv_file, monkeypatch) -> None:
    from psi_share.node.psi import responder as responder_module

    def no_filter(*args: object, **kwargs: object) -> None:
        raise LocalProtocolError("no server setup passed its own check")

    a, b = two_nodes(federation, csv_file, emails("m", 10), emails("m", 50))
    monkeypatch.setattr(responder_module, "filter_for", no_filter)
    with pytest.raises(PeerRefused):
        a.match("lab-b", kinds=["email"])
    ours = a.store.sessions(limit=1)[0]
    assert ours.status == "failed" and b.store.session(ours.id).status == "failed"
    assert a.store.matches([ours.id]) == []


# -- issue 11: a cheating responder over gRPC -------------------------------------------


def all_ones_bloom(terms: SetupTerms) -> ServerSetup:
    hashes, num_bytes = bloom_shape(terms.false_positive_rate, terms.queries, terms.items)
    setup = ServerSetup()
    setup.bloom_filter.num_hash_functions, setup.bloom_filter.bits = hashes, b"\xff" * num_bytes
    return setup


def junk_raw(terms: SetupTerms) -> ServerSetup:
    setup = ServerSetup()
    setup.raw.SetInParent()
    setup.raw.encrypted_elements.extend(sorted(b"\x02" + random.Random(i).randbytes(32) for i in range(terms.items)))
    return setup


def gcs_with_more_items(terms: SetupTerms) -> ServerSetup:
    """A GCS that is well formed but holds 25 elements more than announced."""
    points = [b"\x02" + random.Random(i).randbytes(32) for i in range(terms.items + 25)]
    setup = filters.gcs_setup(points, terms.false_positive_rate, terms.queries)
    assert setup is not None
    return setup


FORGERIES: list[tuple[Callable[[SetupTerms], ServerSetup], str]] = [
    # At the default rate no Bloom filter passes (OpenMined's misses it), all ones or not;
    # tests/test_psi_filters_hostile.py refuses all-ones where a Bloom filter could pass.
    (all_ones_bloom, "peer's Bloom filter cannot meet the announced rate"),
    (junk_raw, "is not a compressed P-256 point"),  # random x: about half are off the curve
    (gcs_with_more_items, "peer's GCS filter is malformed: holds more than 300 elements"),
]


def rogue(node, forge: Callable[[SetupTerms], ServerSetup]) -> None:  # type: ignore[no-untyped-def]
    """Turn ``node`` into a cheating responder: honest everywhere but its filter."""
    honest_open = node.responder.psi_open
    announced: dict[str, SetupTerms] = {}

    def psi_open(peer, open_):  # type: ignore[no-untyped-def]
        opened = honest_open(peer, open_)
        announced[opened.session_id] = SetupTerms(opened.false_positive_rate, opened.max_set_size, opened.responder_set_size)
        return opened

    def psi_setup(peer, sid):  # type: ignore[no-untyped-def]
        return forge(announced[sid]).SerializeToString()

    node.responder.psi_open, node.responder.psi_setup = psi_open, psi_setup


@pytest.mark.parametrize("forge, why", FORGERIES, ids=[f[0].__name__ for f in FORGERIES])
def test_a_cheating_responder_is_refused_and_both_sides_record_the_failure(federation, csv_file, forge, why) -> None:
    a_rows, b_rows = emails("m", 40), emails("m", 300)
    a, b = two_nodes(federation, csv_file, a_rows, b_rows)
    rogue(b, forge)
    with pytest.raises(RemoteProtocolError, match="peer's") as err:
        a.match("lab-b", kinds=["email"])
    assert why in str(err.value)
    ours = a.store.sessions(limit=1)[0]
    assert ours.status == "failed" and why in ours.error and ours.matched_count is None
    assert a.store.matches([ours.id]) == []
    theirs = b.store.session(ours.id)
    assert theirs.status == "failed" and "requester closed the session as failed" in theirs.error
    # The requesting node is unharmed: the next (honest) match works.
    del b.responder.psi_open, b.responder.psi_setup
    outcome = a.match("lab-b", kinds=["email"])
    assert {m.actor_id for m in a.store.matches([outcome.session_id])} == expected_actors(a_rows, b_rows)


_ROGUE_SCRIPT = textwrap.dedent(
    """
    import csv, random, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, "tests")
    from private_set_intersection.python import ServerSetup
    from conftest import Federation, write_csv
    from psi_share.errors import RemoteProtocolError

    with tempfile.TemporaryDirectory() as tmp:
        fed = Federation(Path(tmp))
        try:
            b, a = fed.node("lab-b"), fed.node("lab-a")
            b.import_file("flagged", write_csv(Path(tmp) / "b.csv", [(f"b{i}", "email", f"m{i}@x.org") for i in range(3000)]), None)
            a.import_file("flagged", write_csv(Path(tmp) / "a.csv", [(f"a{i}", "email", f"m{i}@x.org") for i in range(0, 3040, 2)]), None)
            fed.serve("lab-b")
            fed.connect_all()
            forged = ServerSetup()  # issue 11: div 40, hash range 2^63-1, 64 KiB of random bits
            forged.gcs.div, forged.gcs.hash_range, forged.gcs.bits = 40, 2**63 - 1, random.Random(int(sys.argv[1])).randbytes(65536)
            b.responder.psi_setup = lambda peer, sid: forged.SerializeToString()
            try:
                outcome = a.match("lab-b", kinds=["email"])
            except RemoteProtocolError as exc:
                print("REFUSED:", exc)
            else:
                print("ACCEPTED:", outcome.count)
            print("STATUS:", a.store.sessions(limit=1)[0].status, b.store.sessions(limit=1)[0].status)
        finally:
            fed.close()
    """
)


@pytest.mark.parametrize("seed", range(2))
def test_issue_11_forged_gcs_over_grpc_leaves_the_requesting_process_alive(seed: int) -> None:
    proc = run_python(_ROGUE_SCRIPT, str(seed), timeout=600)
    assert "REFUSED: peer's GCS filter has hash range 9223372036854775807" in proc.stdout
    assert "STATUS: failed failed" in proc.stdout
