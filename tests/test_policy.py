"""Per-peer policy: every refusal, over real mTLS nodes, and budgets that survive a restart."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from psi_share import Mode, Node
from psi_share.errors import ConfigError, PeerRefused, Refused
from psi_share.node.config import parse_config, render_config
from psi_share.node.policy import AccessRequest, Policy
from psi_share.store import Store
from psi_share.store.db import usage

A_ROWS = [(f"a{i}", "email", f"user{i}@example.org") for i in range(6)] + [("p1", "phone", "+14155550123")]
B_ROWS = [(f"b{i}", "email", f"user{i}@example.org") for i in range(0, 6, 2)] + [("q1", "phone", "+14155550123")]


def _peer_table(peer: str, **keys: str) -> dict[str, str]:
    return {f"policy.peers.{peer}__{k}": v for k, v in keys.items()}


@pytest.fixture
def make_pair(federation, csv_file):
    def make(**b_config: object):  # type: ignore[no-untyped-def]
        a = federation.node("lab-a")
        b = federation.node("lab-b", **b_config)
        a.import_file("flagged", csv_file("a.csv", A_ROWS), None)
        b.import_file("flagged", csv_file("b.csv", B_ROWS), None)
        b.import_file("customers", csv_file("bc.csv", B_ROWS), None)
        federation.serve("lab-b")
        federation.connect_all()
        return a, b

    return make


def _refused(a: Node, **kw: object) -> PeerRefused:
    with pytest.raises(PeerRefused) as err:
        a.match("lab-b", **kw)  # type: ignore[arg-type]
    assert not [s for s in a.store.sessions() if s.role == "requester" and s.status != "done"]
    return err.value


def test_new_peer_gets_count_only_on_flagged_by_default(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(render_config("lab-b", "127.0.0.1:0")), "rendered")
    rule = Policy(config, Store(tmp_path / "s.sqlite3")).for_peer("lab-new")
    assert rule.reveal is False and rule.datasets == {"flagged"}


def test_count_only_default_refuses_reveal(make_pair) -> None:
    a, _ = make_pair(policy__reveal="false")
    err = _refused(a, kinds=["email"])
    assert err.code == "PERMISSION_DENIED" and "counts only" in err.details and "--count" in err.details
    assert a.match("lab-b", kinds=["email"], mode=Mode.COUNT).count == 3


def test_per_peer_override_grants_reveal_to_one_peer(make_pair, federation) -> None:
    a, b = make_pair(policy__reveal="false", **_peer_table("lab-a", reveal="true"))
    assert a.match("lab-b", kinds=["email"]).matched_actors == 3
    c = federation.node("lab-c")
    c.store.add_peer("lab-b", f"127.0.0.1:{federation.servers['lab-b'].port}", now=0)
    b.store.add_peer("lab-c", "127.0.0.1:1", now=0)
    c.import_file("flagged", _csv(federation.root, A_ROWS), None)
    with pytest.raises(PeerRefused) as err:
        c.match("lab-b", kinds=["email"])
    assert err.value.code == "PERMISSION_DENIED" and "lab-c" in err.value.details


def _csv(root: Path, rows) -> Path:  # type: ignore[no-untyped-def]
    path = root / "c.csv"
    path.write_text("actor_id,kind,value\n" + "".join(f"{a},{k},{v}\n" for a, k, v in rows))
    return path


def test_protocol_not_allowed(make_pair) -> None:
    a, _ = make_pair(**_peer_table("lab-a", protocols="[]"))
    err = _refused(a, kinds=["email"])
    assert err.code == "PERMISSION_DENIED" and "'psi'" in err.details and "[policy.peers.lab-a]" in err.details


def test_dataset_not_allowed_to_this_peer_is_not_found(make_pair) -> None:
    a, _ = make_pair(exposure__datasets='["flagged", "customers"]', **_peer_table("lab-a", datasets='["flagged"]'))
    err = _refused(a, peer_dataset="customers", kinds=["email"])
    assert err.code == "NOT_FOUND" and "lab-a" in err.details


def test_kind_not_allowed_to_this_peer(make_pair) -> None:
    a, _ = make_pair(**_peer_table("lab-a", kinds='["email"]'))
    err = _refused(a, kinds=["email", "phone"])
    assert err.code == "PERMISSION_DENIED" and "phone" in err.details
    with a.peer_client("lab-b") as client:  # NodeInfo shows only what this peer may use
        assert [list(d.kinds) for d in client.node_info().datasets] == [["email"]]


def test_set_size_bounds(make_pair) -> None:
    a, _ = make_pair(**_peer_table("lab-a", min_set_size="3", max_set_size="4"))
    err = _refused(a, kinds=["phone"])  # one item
    assert err.code == "INVALID_ARGUMENT" and "minimum of 3" in err.details
    err = _refused(a, kinds=["email", "phone"])  # seven items
    assert err.code == "INVALID_ARGUMENT" and "limit of 4" in err.details


@pytest.mark.parametrize("size", [0, 1, 9])
def test_every_set_below_the_minimum_is_refused_an_empty_one_too(tmp_path: Path, size: int) -> None:
    # Issue 13: size 0 used to skip min_set_size; it follows it now (and 10 passes).
    text = render_config("lab-b", "127.0.0.1:0") + "\n[policy.peers.lab-a]\nmin_set_size = 10\n"
    config = parse_config(tomllib.loads(text), "cfg")
    with Store(tmp_path / "s.sqlite3") as store:
        store.write_dataset("flagged", [], replace=True, now=0)
        policy = Policy(config, store)
        with pytest.raises(Refused, match="below lab-b's minimum of 10") as err:
            policy.check("lab-a", AccessRequest("psi", "flagged", {}, size, False))
        assert err.value.code == "INVALID_ARGUMENT" and str(size) not in str(err.value).replace("10", "")
        policy.check("lab-a", AccessRequest("psi", "flagged", {}, 10, False))


def test_session_budget_is_exhausted_then_refused(make_pair) -> None:
    a, b = make_pair(**_peer_table("lab-a", sessions_per_day="2"))
    for _ in range(2):
        a.match("lab-b", kinds=["email"])
    err = _refused(a, kinds=["email"])
    assert err.code == "RESOURCE_EXHAUSTED" and "2 sessions" in err.details and "00:00 UTC" in err.details


def test_item_budget(make_pair) -> None:
    a, _ = make_pair(**_peer_table("lab-a", items_per_day="10"))
    a.match("lab-b", kinds=["email"])  # 6 items
    err = _refused(a, kinds=["email"])
    assert err.code == "RESOURCE_EXHAUSTED" and "6 of its 10 items" in err.details


def test_budget_survives_a_restart_and_resets_next_day(tmp_path: Path) -> None:
    text = render_config("lab-b", "127.0.0.1:0") + "\n[policy.peers.lab-a]\nsessions_per_day = 2\n"
    config = parse_config(tomllib.loads(text), "cfg")
    clock = [1_800_000_000.0]
    request = AccessRequest("psi", "flagged", {}, 5, False)
    with Store(tmp_path / "s.sqlite3") as store:
        policy = Policy(config, store, lambda: clock[0])
        policy.charge("lab-a", request)
        policy.charge("lab-a", request)
    with Store(tmp_path / "s.sqlite3") as store:  # a restart
        policy = Policy(config, store, lambda: clock[0])
        with pytest.raises(Refused) as err:
            policy.charge("lab-a", request)
        assert err.value.code == "RESOURCE_EXHAUSTED"
        policy.charge("lab-c", request)  # another peer has its own budget
        clock[0] += 86_400
        policy.charge("lab-a", request)
        assert usage(store, "2027-01-16") == {"lab-a": (1, 5)}


def test_min_result_withholds_small_results(make_pair) -> None:
    a, b = make_pair(**_peer_table("lab-a", min_result="4"))
    outcome = a.match("lab-b", kinds=["email"])  # 3 matches < 4
    assert outcome.count is None and outcome.matched_actors is None and outcome.fewer_than == 4
    session = a.store.session(outcome.session_id)
    assert session.status == "done" and session.matched_count is None and "fewer than 4" in session.error
    assert a.store.matches([outcome.session_id]) == []
    big = a.match("lab-b", kinds=["email", "phone"])  # 4 matches: released
    assert big.count == 4 and big.fewer_than == 0 and big.matched_actors == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        ("[policy]\nrevael = true\n", "unknown key [policy] revael"),
        ("[policy.peers.lab-a]\nbudget = 3\n", "unknown key [policy.peers.lab-a] budget"),
        ("[policy.peers.lab-a]\nprotocols = [\"telepathy\"]\n", "unknown protocol 'telepathy'"),
        ("[policy.peers.lab-a]\nkinds = [\"shoe_size\"]\n", "unknown kind 'shoe_size'"),
        ("[policy.peers.lab-a]\nreveal = \"yes\"\n", "reveal must be of type bool"),
        ("[policy.peers.lab-a]\nmin_set_size = 0\n", "min_set_size must be at least 1"),
        ("[policy.peers.lab-a]\nitems_per_day = -1\n", "must not be negative"),
        ("[policy.peers.Lab]\nreveal = true\n", "does not name a valid node"),
    ],
)
def test_policy_config_errors(extra: str, message: str) -> None:
    base = render_config("lab-b", "127.0.0.1:0")
    if extra.startswith("[policy]\n"):
        base = base.replace("[policy]\n", "[policy]\n" + extra.split("\n", 1)[1])
        extra = ""
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        parse_config(tomllib.loads(base + "\n" + extra), "config.toml")


def test_exposed_and_granted_dataset_can_be_matched(make_pair) -> None:
    a, _ = make_pair(exposure__datasets='["flagged", "customers"]', policy__datasets='["flagged", "customers"]')
    assert a.match("lab-b", peer_dataset="customers", kinds=["email"]).count == 3
