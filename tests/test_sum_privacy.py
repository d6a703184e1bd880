"""Differential privacy on intersection-sum (issue 11): clipping, noise, budgets.

Real nodes over gRPC with a noise sampler injected through ``Node.noise_sampler``
(the released figure must be exactly clipped truth + the injected noise), the
ledger in the store across a restart, refusal once the day's budget is spent,
and a cheating matcher, written here as an attacker would, that sums one
ciphertext while claiming five.
"""

from __future__ import annotations

import random
import secrets
from fractions import Fraction

import pytest
from cli_helpers import cli, ok_json
from test_intersection_sum import A_FLAGGED, B_USAGE, write_amount_csv

from psi_share import Node
from psi_share.audit.log import load_entries
from psi_share.crypto import ec
from psi_share.crypto.paillier import PrivateKey, decode_ciphertexts, encode_ciphertexts
from psi_share.errors import PeerRefused
from psi_share.privacy import BudgetExhausted, spending, utc_day
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.protocols.intersection_sum import Matcher, SumNoise, ValueHolderParty, blind_own_items, parse
from psi_share.v1 import node_pb2 as pb

ENGINE = ec.EcEngine(workers=1)
KEY = PrivateKey.generate(2048, secrets.token_bytes)


class Injected:
    """A NoiseSampler that returns the noise the test chose, and records each scale asked for."""

    def __init__(self, *noise: int) -> None:
        self.noise, self.scales = list(noise), []  # type: ignore[var-annotated]

    def discrete_laplace(self, scale: float) -> int:
        self.scales.append(scale)
        return self.noise.pop(0)

    def discrete_gaussian(self, sigma: float) -> int:  # pragma: no cover - sums never use it
        raise AssertionError("intersection-sum releases use discrete Laplace")


# -- protocol layer: honest sweep, and the cheating matcher -----------------------------


def _holder(items, values, noise: SumNoise, rb):  # type: ignore[no-untyped-def]
    h_set = blind_own_items(ENGINE, ec.new_scalar(rb), items)
    return ValueHolderParty(
        h_set, values, key=KEY, encrypt=lambda v: KEY.encrypt_with(v, KEY.randomness(rb(32 * len(v)))),
        engine=ENGINE, random_bytes=rb, max_peer_set_size=10**6, noise=noise,
    )


@pytest.mark.parametrize("bound", [1, 7, 1000, 2**40])
@pytest.mark.parametrize("injected", [-(10**6), -5, 0, 3, 10**6])
def test_honest_release_is_clipped_truth_plus_noise_clamped_to_the_honest_range(bound: int, injected: int) -> None:
    rng = random.Random(bound * 31 + injected)
    rb = rng.randbytes
    holder_items = [f"i{k}" for k in range(12)]
    values = [rng.choice([0, 1, 5, bound - 1, bound, bound + 1, 2**50]) for _ in holder_items]
    matcher_items = [i for i in holder_items if rng.random() < 0.6] + ["only-matcher"]
    sampler = Injected(injected)
    holder = _holder(holder_items, values, SumNoise(bound, Fraction(1, 2), sampler), rb)
    matcher = Matcher(blind_own_items(ENGINE, ec.new_scalar(rb), matcher_items), engine=ENGINE, random_bytes=rb,
                      max_peer_set_size=10**6, key_bits=2048)
    reply, held = holder.on_encrypted_sum(matcher.on_double_blinded(holder.on_blinded_set(matcher.blinded_set())))
    got = matcher.on_sum(reply)
    # ground truth computed here, independently: clip per item, sum the matched ones
    mine = set(matcher_items)
    matched = [min(max(v, 0), bound) for i, v in zip(holder_items, values) if i in mine]
    expected = min(max(sum(matched) + injected, 0), len(matched) * bound)
    assert (got.intersection_size, got.sum) == (held.intersection_size, held.sum) == (len(matched), expected)
    assert sampler.scales == [float(bound * 2)]  # scale = bound / epsilon
    assert held.release is not None and held.release.value == expected and held.release.epsilon == Fraction(1, 2)


@pytest.mark.parametrize("injected", [-40, -1, 0, 1, 17, 2500])
def test_a_matcher_summing_one_ciphertext_while_claiming_five_gets_a_noisy_value(injected: int) -> None:
    rb = random.Random(injected).randbytes
    items = ["a", "b", "c", "d", "e"]
    values = [120, 5000, 30, 999, 45]  # 5000 is above the bound: clipped to 1000 before encryption
    sampler = Injected(injected)
    holder = _holder(items, values, SumNoise(1000, Fraction(1, 2), sampler), rb)
    # The attacker: a matcher running modified software. It blinds its five items
    # honestly, then multiplies nothing: it returns one of the value holder's
    # ciphertexts, re-randomized, as "the sum" of the five it claims matched.
    scalar = ec.new_scalar(rb)
    own = blind_own_items(ENGINE, scalar, items)
    reply = parse(holder.on_blinded_set(pb.SumMessage(
        protocol_version=PROTOCOL_VERSION, step="blinded-set", points=b"".join(own.points)).SerializeToString()),
        "double-blinded")
    pk = KEY.public
    ciphertexts = decode_ciphertexts(pk, reply.ciphertexts, len(ec.split_points(reply.paired_points)))
    lone = ciphertexts[0]
    cheat = pb.SumMessage(protocol_version=PROTOCOL_VERSION, step="encrypted-sum", count=5,
                          ciphertexts=encode_ciphertexts(pk, [pk.rerandomize(lone, rb)])).SerializeToString()
    message, held = holder.on_encrypted_sum(cheat)
    single = KEY.decrypt(lone)  # what the attacker wanted: one item's (clipped) value
    assert single in (120, 1000, 30, 999, 45)
    released = int.from_bytes(parse(message, "sum").sum, "big")
    # The mechanism applied regardless of the lie: the single value plus the
    # injected noise at scale bound / epsilon (clamped only at 0 and 5 * bound).
    assert released == max(single + injected, 0) == held.sum
    assert sampler.scales == [2000.0]


# -- two real nodes over gRPC -----------------------------------------------------------


def _pair(federation, tmp_path, csv_file, **privacy):  # type: ignore[no-untyped-def]
    conf = {f"privacy__{k}": v for k, v in {"sum_clip_bound": 1000, **privacy}.items()}
    a = federation.node("lab-a", paillier__pool_size=16, exposure__datasets='["flagged", "usage"]', **conf)
    b = federation.node("lab-b", paillier__pool_size=16, exposure__datasets='["flagged", "usage"]', **conf)
    a.import_file("flagged", csv_file("a.csv", A_FLAGGED), None)
    a.import_file("usage", write_amount_csv(tmp_path / "au.csv", [("a1", "email", "J.Smith+x@gmail.com", "7")]), None)
    b.import_file("usage", write_amount_csv(tmp_path / "bu.csv", B_USAGE), None)
    b.import_file("flagged", csv_file("bf.csv", [("b1", "email", "jsmith@gmail.com"), ("b5", "email", "x@y.org")]), None)
    federation.serve("lab-b")
    federation.serve("lab-a")
    federation.connect_all()
    return a, b


def _disclosures(node: Node) -> list[dict]:
    return [e["result"] for e in load_entries(node.home.audit_path)
            if e["type"] == "disclosure" and e.get("protocol") == "intersection-sum" and "mechanism" in e["result"]]


def test_two_nodes_release_clipped_truth_plus_injected_noise_and_charge_the_receiver(federation, tmp_path, csv_file):
    a, b = _pair(federation, tmp_path, csv_file)
    b.noise_sampler, a.noise_sampler = Injected(-9), Injected(4)
    # lab-b holds the values: 1200 is clipped to 1000, the eve@ item is 30 + 5 = 35
    o = a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    assert (o.intersection_size, o.sum) == (2, 1000 + 35 - 9)
    assert a.store.sum_result(o.session_id).total == b.store.sum_result(o.session_id).total == 1026
    assert b.noise_sampler.scales == [2000.0]
    # lab-a holds the values (7), and releases to lab-b
    o2 = a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email", value_holder="requester")
    assert (o2.intersection_size, o2.sum) == (1, 11) and b.store.sum_result(o2.session_id).total == 11
    # each value holder charged the peer that received the figure, in its store
    day = utc_day(b.clock())
    assert [(s.peer, s.epsilon, s.releases) for s in spending(b.store, day=day)] == [("lab-a", Fraction(1, 2), 1)]
    assert [(s.peer, s.epsilon, s.releases) for s in spending(a.store, day=day)] == [("lab-b", Fraction(1, 2), 1)]
    # the audit's disclosure ledger: released value, mechanism, scale, epsilon; never the truth
    (entry,) = _disclosures(b)
    assert entry == {"intersection_size": 2, "sum": 1026, "mechanism": "discrete-laplace", "scale": "2000.0",
                     "sensitivity": 1000, "epsilon": "1/2", "count_noised": False}
    assert 1035 not in entry.values()
    assert [e["sum"] for e in _disclosures(a)] == [11]


def test_the_ledger_survives_a_restart_and_policy_show_reports_it(federation, tmp_path, csv_file):
    a, b = _pair(federation, tmp_path, csv_file)
    b.noise_sampler = Injected(0)
    a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    federation.servers.pop("lab-b").stop(grace=1)
    federation.nodes.pop("lab-b").close()
    again = Node.open(b.home.path)
    try:
        assert [(s.peer, s.epsilon) for s in spending(again.store)] == [("lab-a", Fraction(1, 2))]
    finally:
        again.close()
    # the CLI, in its own process, on lab-b's home
    rows = {r["peer"]: r for r in ok_json(cli(tmp_path, "policy", "show", "--format", "json", home=b.home.path))}
    assert rows["lab-a"]["epsilon_today"] == "0.5/4"


def test_a_spent_budget_refuses_with_resource_exhausted_and_discloses_nothing(federation, tmp_path, csv_file):
    a, b = _pair(federation, tmp_path, csv_file, epsilon_per_release=0.5, daily_epsilon_budget=1.0)
    b.noise_sampler, a.noise_sampler = Injected(1, 2), Injected(3, 4)
    for _ in range(2):
        a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    with pytest.raises(PeerRefused, match=r"RESOURCE_EXHAUSTED.*lab-a has used epsilon 1 .* budget of epsilon 1"):
        a.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind="email", value_holder="responder")
    assert len(_disclosures(b)) == 2 and b.noise_sampler.noise == []  # no third draw, no third release
    failed = [s for s in a.store.sessions() if s.status == "failed"]
    assert len(failed) == 1 and a.store.sum_result(failed[0].id) is None
    # The other direction spends lab-a's own ledger for lab-b, refused locally
    # before decrypting: lab-b receives no sum message.
    for _ in range(2):
        a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email", value_holder="requester")
    with pytest.raises(BudgetExhausted, match="peer lab-b has used epsilon 1"):
        a.intersection_sum("lab-b", dataset="usage", peer_dataset="flagged", kind="email", value_holder="requester")
    assert len(_disclosures(a)) == 2 and a.noise_sampler.noise == []
    assert sum(1 for s in b.store.sessions() if b.store.sum_result(s.id) is not None) == 4
