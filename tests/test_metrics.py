"""What an operator watches (issue 13, item 6): the node's Prometheus metrics after
real traffic, the epsilon hook, and the example alert rules in deploy/, whose
every metric must be one the node exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

ROWS = [(f"r{i}", "email", f"user{i}@example.org") for i in range(12)]
ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus-alerts.yml"


@pytest.fixture
def pair(federation, csv_file):  # type: ignore[no-untyped-def]
    b = federation.node("lab-b")
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    a = federation.node("lab-a")
    a.import_file("flagged", csv_file("a.csv", ROWS[::2]), None)
    federation.serve("lab-b")
    federation.connect_all()
    return a, b


def _scrape(node) -> str:  # type: ignore[no-untyped-def]
    return generate_latest(node.metrics.registry).decode()


def _value(text: str, sample: str) -> float:
    found = re.search(re.escape(sample) + r" ([0-9.e+-]+)\n", text)
    assert found, f"no sample {sample} in:\n{text}"
    return float(found.group(1))


def test_sessions_bytes_refusals_budget_and_audit_latency_after_real_traffic(pair) -> None:
    a, b = pair
    for _ in range(2):
        assert a.match("lab-b", kinds=["email"]).count == 6
    from psi_share.errors import PeerRefused

    with pytest.raises(PeerRefused):
        a.match("lab-b", peer_dataset="customers", kinds=["email"])
    text = _scrape(b)
    assert _value(text, 'psi_share_sessions{outcome="done",peer="lab-a",protocol="psi",role="responder"}') == 2
    assert _value(text, 'psi_share_session_seconds_count{peer="lab-a",protocol="psi",role="responder"}') == 2
    assert _value(text, 'psi_share_messages_total{direction="received",peer="lab-a",protocol="psi"}') >= 8
    # at least the two responses: each holds every requester point (33 bytes), 6 or more of them
    assert _value(text, 'psi_share_bytes_total{direction="sent",peer="lab-a",protocol="psi"}') >= 2 * 6 * 33
    assert _value(text, 'psi_share_refusals_total{peer="lab-a",reason="",status="NOT_FOUND",where="rpc"}') == 1
    assert _value(text, 'psi_share_budget_sessions_used{peer="lab-a"}') == 2
    assert _value(text, 'psi_share_budget_items_used{peer="lab-a"}') == 12
    assert _value(text, 'psi_share_budget_sessions_limit{peer="lab-a"}') == 1000
    assert _value(text, "psi_share_audit_append_seconds_count") > 10
    # The requester side counts its own sessions as requester.
    assert _value(_scrape(a), 'psi_share_sessions{outcome="done",peer="lab-b",protocol="psi",role="requester"}') == 2
    # Nothing about data: no dataset content, no identifier.
    assert "example.org" not in text and "user1" not in text


def test_epsilon_is_a_hook_absent_until_the_privacy_ledger_sets_it(pair) -> None:
    a, b = pair
    assert "psi_share_epsilon_used{" not in _scrape(b)
    b.metrics.epsilon_source = lambda: {"lab-a": 0.75}
    assert _value(_scrape(b), 'psi_share_epsilon_used{peer="lab-a"}') == 0.75


def _exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind in ("histogram", "summary"):
                names |= {name + "_bucket", name + "_count", name + "_sum"}
    return names


def test_the_example_alert_rules_use_only_metrics_the_node_exports(pair) -> None:
    a, b = pair
    a.match("lab-b", kinds=["email"])
    b.metrics.epsilon_source = lambda: {}
    exported = _exported_names(_scrape(b))
    text = ALERTS.read_text()
    try:
        import yaml  # only if a YAML parser is already installed: none is added for this
    except ImportError:
        exprs = [line.split("expr:", 1)[1] for line in text.splitlines() if line.strip().startswith("expr:")]
        assert text.count("- alert:") == len(exprs) >= 5
    else:
        groups = yaml.safe_load(text)["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert all({"alert", "expr", "annotations"} <= set(rule) for rule in rules) and len(rules) >= 5
        exprs = [str(rule["expr"]) for rule in rules]
    used = {name for expr in exprs for name in re.findall(r"\bpsi_share_[a-z_]+", expr)}
    assert used and used <= exported, used - exported
    assert any("refusals_total" in e and "peer" in e for e in exprs)  # a flood from one peer
