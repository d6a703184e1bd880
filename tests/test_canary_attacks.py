"""A member running its own client (``foreign_client``: the proto and OpenMined
only) tries to use canary sessions against a node: to probe real data, to
reach a dataset not granted to it, to slip past policy, to get free sessions.

Ground truth for what a canary may return comes from the rules in
protos/PROTOCOL.md (the responder holds ``held/0 ..``, never a real item).
"""

from __future__ import annotations

import grpc
import pytest
from cli_helpers import LAB_B_ROWS
from foreign_client import ForeignClient, item, run_session

from psi_share.node.psi.canary_filters import CANARY_SESSIONS_PER_HOUR
from psi_share.protocols.canary import ANCHORS, CANARY_ITEM_PREFIX

HEALTHY = {"matching__max_set_size": 65536}
KINDS = {"email": 1, "phone": 1, "ip_prefix": 1}
# lab-b's flagged items in canonical form (cli_helpers.LAB_B_ROWS): what a prober would guess.
REAL_ITEMS = [item("email", 1, "jsmith@gmail.com"), item("phone", 1, "+14155550123"),
              item("ip_prefix", 1, "198.51.100.0/24"), item("email", 1, "mixed.case@example.org")]


def _node(federation, csv_file, **config):  # type: ignore[no-untyped-def]
    """lab-b serving flagged (granted) and customers (exposed to nobody by policy); lab-m calls it."""
    b = federation.node("lab-b", exposure__datasets='["flagged", "customers"]', policy__datasets='["flagged"]',
                        **HEALTHY, **config)
    m = federation.node("lab-m")
    b.import_file("flagged", csv_file("b.csv", LAB_B_ROWS), None)
    b.import_file("customers", csv_file("c.csv", LAB_B_ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    return b, ForeignClient(f"127.0.0.1:{federation.servers['lab-b'].port}", "lab-b", m.home.tls_path)


def _refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("dataset", ["_canary.flagged", "_canary.flagged.16", "_canary.flagged.5000"])
def test_a_canary_never_matches_a_real_item(federation, csv_file, dataset) -> None:  # type: ignore[no-untyped-def]
    b, client = _node(federation, csv_file)
    held = [f"{CANARY_ITEM_PREFIX}held/{i}" for i in range(4)]
    items = sorted(REAL_ITEMS + held + [f"{CANARY_ITEM_PREFIX}absent/0"])
    expected = sorted(items.index(h) for h in held)
    assert run_session(client, dataset, KINDS, items, reveal=True)[0] == expected
    assert run_session(client, dataset, KINDS, items, reveal=False)[0] == len(held)
    # The same guesses against the real dataset do match: the canary answered without them.
    real, _, _ = run_session(client, "flagged", KINDS, items, reveal=True)
    assert sorted(items[i] for i in real) == sorted(REAL_ITEMS)
    # lab-b recorded the canaries as sessions of lab-m's, and told its audit log it disclosed no data.
    sessions = [s for s in b.store.sessions(limit=10) if s.local_dataset == dataset]
    assert len(sessions) == 2 and {s.peer for s in sessions} == {"lab-m"}
    told = [e["result"] for e in _disclosures(b) if e["session"] in {s.id for s in sessions}]
    assert told and all("no data of ours" in r["learns"] and "our_items" not in r and r["canary"] for r in told)
    sent = [e for e in _entries(b) if e["type"] == "sent" and e["session"] in {s.id for s in sessions}]
    assert sent and all(e["params"].get("canary") is True for e in sent if e["params"].get("mode"))


def _entries(node):  # type: ignore[no-untyped-def]
    from psi_share.audit.log import load_entries

    return load_entries(node.home.audit_path)


def _disclosures(node):  # type: ignore[no-untyped-def]
    from psi_share.audit.log import load_entries

    return [e for e in load_entries(node.home.audit_path) if e["type"] == "disclosure"]


def test_a_canary_on_a_dataset_not_granted_is_refused_as_the_dataset_itself(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    _, client = _node(federation, csv_file)
    items = [f"{CANARY_ITEM_PREFIX}held/0"]
    for name in ("customers", "missing"):
        real = _refused(lambda: client.open(name, KINDS, 1, True))
        canary = _refused(lambda: client.open(f"_canary.{name}", KINDS, 1, True))
        sized = _refused(lambda: client.open(f"_canary.{name}.16", KINDS, 1, True))
        assert real.code() == canary.code() == sized.code() == grpc.StatusCode.NOT_FOUND
        assert real.details() == canary.details() == sized.details()
    assert run_session(client, "_canary.flagged", KINDS, items, reveal=True)[0] == [0]


@pytest.mark.parametrize("dataset", [
    "_canary", "_canary.", "_canary.Flagged", "_canary.flagged.0", "_canary.flagged.016", "_canary.flagged.65537",
    "_canary.flagged.9999999", "_canary.flagged\n", "_canary..flagged", "_canaryflagged", "_canary.flagged.16.16",
])
def test_a_malformed_canary_name_is_invalid_and_never_echoed(federation, csv_file, dataset) -> None:  # type: ignore[no-untyped-def]
    _, client = _node(federation, csv_file)
    error = _refused(lambda: client.open(dataset, KINDS, 1, True))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "canary" in error.details()
    assert not any(echo in error.details().lower() for echo in ("flagged", "65537", "9999999", "016"))


def test_policy_holds_for_canaries_reveal_and_set_size(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    _, client = _node(federation, csv_file, **{"policy.peers.lab-m__min_set_size": 10})
    small = _refused(lambda: client.open("_canary.flagged.16", KINDS, 3, True))
    assert small.code() == grpc.StatusCode.INVALID_ARGUMENT and "below lab-b's minimum of 10" in small.details()
    unknown = _refused(lambda: client.open("_canary.flagged", {"email": 1, "canary": 1}, 10, False))
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    items = sorted(f"{CANARY_ITEM_PREFIX}held/{i}" for i in range(10))
    assert run_session(client, "_canary.flagged", KINDS, items, reveal=False)[0] == 10


def test_a_counts_only_peer_gets_no_psi_canary_in_either_mode(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    # OpenMined's count mode lets a modified requester learn the matches: it needs
    # the reveal grant for a canary exactly as for a real session.
    _, client = _node(federation, csv_file, **{"policy.peers.lab-m__reveal": "false"})
    for dataset in ("flagged", "_canary.flagged", "_canary.flagged.16"):
        for reveal in (True, False):
            denied = _refused(lambda: client.open(dataset, KINDS, 10, reveal))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "counts only" in denied.details()


def test_canaries_are_not_charged_to_the_daily_budget_and_never_lock_a_peer_out(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    b, client = _node(federation, csv_file, policy__sessions_per_day=3, policy__items_per_day=100)
    for _ in range(5):  # more canaries than the day's sessions, and 5,000 synthetic items beyond its items
        client.close(client.open("_canary.flagged.16", KINDS, 1000, True).session_id, "done")
    # Every real session of the day is still there.
    for _ in range(3):
        assert sorted(run_session(client, "flagged", KINDS, REAL_ITEMS, reveal=True)[0]) == [0, 1, 2, 3]
    spent = _refused(lambda: client.open("flagged", KINDS, 1, True))
    assert spent.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "all 3 sessions" in spent.details()
    # Past the real budget, a check still runs (and still matches nothing real).
    held = [f"{CANARY_ITEM_PREFIX}held/{i}" for i in range(4)]
    assert run_session(client, "_canary.flagged", KINDS, sorted(held + REAL_ITEMS), reveal=False)[0] == 4
    # The responder's records say which sessions were canaries.
    canaries = [s for s in b.store.sessions(limit=20) if s.local_dataset.startswith("_canary.")]
    assert len(canaries) == 6 and all(s.peer == "lab-m" for s in canaries)


def test_a_peer_gets_at_most_so_many_canaries_an_hour(federation, csv_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    b, client = _node(federation, csv_file, server__calls_per_second=10000)  # the call gate is another test's
    for _ in range(CANARY_SESSIONS_PER_HOUR):
        client.close(client.open("_canary.flagged.16", KINDS, 1, True).session_id, "done")
    limited = _refused(lambda: client.open("_canary.flagged", KINDS, 1, True))
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"lab-m has opened {CANARY_SESSIONS_PER_HOUR} canary sessions at lab-b in the last hour" in limited.details()
    # Real sessions are not held back by it, and an hour later canaries are answered again.
    assert sorted(run_session(client, "flagged", KINDS, REAL_ITEMS, reveal=True)[0]) == [0, 1, 2, 3]
    clock = b.responder._clock
    monkeypatch.setattr(b.responder, "_clock", lambda: clock() + 3601)
    items = [f"{CANARY_ITEM_PREFIX}held/{i}" for i in range(ANCHORS)]
    assert run_session(client, "_canary.flagged", KINDS, sorted(items), reveal=False)[0] == ANCHORS


def test_canaries_held_open_count_against_the_peers_open_session_quota(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    _, client = _node(federation, csv_file, sessions__max_open_per_peer=2)
    held = [client.open("_canary.flagged.16", KINDS, 1, True).session_id for _ in range(2)]
    refused = _refused(lambda: client.open("_canary.flagged.16", KINDS, 1, True))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_open_per_peer" in refused.details()
    for sid in held:
        client.close(sid, "done")
    assert run_session(client, "_canary.flagged", KINDS, [f"{CANARY_ITEM_PREFIX}held/0"], reveal=True)[0] == [0]
