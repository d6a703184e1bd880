"""Three labs over mutual TLS that run a session of every protocol with each other.

For the tests that need real logs of every kind of message (witnessing,
the audit registry's descriptions): PSI, cardinality (counts), intersection-sum with
either side holding the values, a federation total around all three.
"""

from __future__ import annotations

from pathlib import Path

from cli_helpers import write_csv
from conftest import Federation

from psi_share import Mode

KINDS = ["email", "phone", "ip_prefix"]
ROWS = {
    "lab-a": [("a1", "email", "J.Smith+promo@GMAIL.com"), ("a2", "phone", "(415) 555-0123"),
              ("a3", "ip_prefix", "198.51.100.77/24"), ("a4", "email", "nobody@example.org")],
    "lab-b": [("b1", "email", "jsmith@googlemail.com"), ("b2", "phone", "+1 415 555 0123"),
              ("b4", "email", "somebody@example.org")],
    "lab-c": [("c1", "email", "jsmith@gmail.com"), ("c3", "ip_prefix", "198.51.100.0/24")],
}
# Amounts (API requests) per identifier, for intersection-sum.
USAGE = {
    "lab-a": [("a1", "email", "J.Smith+promo@GMAIL.com", "7"), ("a4", "email", "nobody@example.org", "3")],
    "lab-c": [("c1", "email", "jsmith@gmail.com", "1200"), ("c2", "email", "nobody@example.org", "30"),
              ("c5", "email", "other@example.org", "999")],
}
FIGURES = {"lab-a": 11, "lab-b": 220, "lab-c": 3300}


def _usage_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path.write_text("actor_id,kind,value,amount\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def three_labs(root: Path) -> Federation:
    """lab-a, lab-b and lab-c with data, amounts and figures, all serving, peers of each other."""
    fed = Federation(root)
    for name, rows in ROWS.items():
        # [privacy] off: the sums are checked against the exact figures
        node = fed.node(name, paillier__pool_size=16, exposure__datasets='["flagged", "usage"]', privacy__enabled="false")
        node.import_file("flagged", write_csv(root / f"{name}.csv", rows), None)
        if name in USAGE:
            node.import_file("usage", _usage_csv(root / f"{name}-usage.csv", USAGE[name]), None)
        node.store.set_figure("campaign", FIGURES[name], now=0)
    for name in ROWS:
        fed.serve(name)
    fed.connect_all()
    return fed


def run_every_protocol(fed: Federation) -> None:
    """lab-a asks each peer something in every protocol; lab-b asks lab-a once."""
    a, b = fed.nodes["lab-a"], fed.nodes["lab-b"]
    assert a.match("lab-b", kinds=KINDS).count == 2  # the gmail address and the phone
    assert a.match("lab-c", kinds=["email"], mode=Mode.COUNT).count == 1
    held_by_c = a.intersection_sum("lab-c", dataset="flagged", peer_dataset="usage", kind="email")
    assert (held_by_c.intersection_size, held_by_c.sum) == (2, 1230)
    held_by_a = a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email",
                                   value_holder="requester")
    assert (held_by_a.intersection_size, held_by_a.sum) == (1, 7)
    total = a.federation_total("campaign", ["lab-a", "lab-b", "lab-c"])
    assert (total.total, total.contributors) == (sum(FIGURES.values()), 3)
    assert b.match("lab-a", kinds=["email"]).count == 1
