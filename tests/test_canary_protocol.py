"""The canary rules in memory: names, synthetic sets that no identifier can equal,
and the answer a correct PSI run gives, swept over requester and responder sizes
against the plaintext intersection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_psi_pair

from psi_share.errors import LocalProtocolError, RemoteProtocolError
from psi_share.identifiers import KINDS, canonicalize, domain_separated_item, parse_item
from psi_share.protocols.canary import (
    ANCHORS,
    CANARY_ITEM_PREFIX,
    MAX_CANARY_ITEMS,
    CanaryAsk,
    CanaryPlan,
    check_outcome,
    filter_kind,
    held_items,
    parse_canary_dataset,
    requester_plan,
)
from psi_share.prompts.signature import band_item
from psi_share.protocols.psi import Mode, PsiOutcome
from psi_share.transport.egress import text_fields
from psi_share.v1 import node_pb2 as pb

VECTORS = Path(__file__).resolve().parents[1] / "protos" / "vectors" / "canonicalization.json"


def test_no_identifier_of_any_kind_can_be_a_canary_item() -> None:
    vectors = json.loads(VECTORS.read_text())["valid"]
    # every identifier kind (prompts have no canonical value: their items are band items, below)
    assert {v["kind"] for v in vectors} == set(KINDS) - {"prompt"}
    assert not [v["item"] for v in vectors if v["item"].startswith(CANARY_ITEM_PREFIX)]
    assert not band_item(1, "b0/" + "0" * 32).startswith(CANARY_ITEM_PREFIX)
    # Even text that looks like a canary item stays a real item of its kind when canonicalized.
    for text in ("psi-share/canary/v1/held/0", "held/0"):
        made = domain_separated_item("device_id", canonicalize("device_id", text))
        assert made.startswith("psi-share/1/device_id/") and not made.startswith(CANARY_ITEM_PREFIX)
    for canary in held_items(3):
        with pytest.raises(ValueError):
            parse_item(canary)


@pytest.mark.parametrize(("name", "ask"), [
    ("_canary.flagged", CanaryAsk("flagged")),
    ("_canary.flagged.1", CanaryAsk("flagged", 1)),
    (f"_canary.my-data_2.{MAX_CANARY_ITEMS}", CanaryAsk("my-data_2", MAX_CANARY_ITEMS)),
    ("flagged", None), ("canary", None), ("", None), ("_other", None),
])
def test_canary_names_parse_to_what_they_ask(name: str, ask: CanaryAsk | None) -> None:
    assert parse_canary_dataset(name) == ask
    if ask is not None:
        assert ask.name == name


@pytest.mark.parametrize("name", ["_canary", "_canary.", "_canary.9lives", "_canary.flagged.0", "_canary.flagged.-1",
                                  f"_canary.flagged.{MAX_CANARY_ITEMS + 1}", "_canary.flagged.1\n", "_canary.a.1.2"])
def test_a_broken_canary_name_is_the_peers_error(name: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_canary_dataset(name)


@pytest.mark.parametrize("asked", [None, 1, 2, 31, 32, 33, 600])
@pytest.mark.parametrize("our_items", [1, 2, 3, 63, 64, 65, 200])
def test_a_correct_psi_run_gives_exactly_the_planned_answer(asked: int | None, our_items: int) -> None:
    ask = CanaryAsk("flagged", asked)
    real_sizes = (0, 5, 100) if asked is None else (0,)
    for real in real_sizes:
        theirs = held_items(ask.responder_count(real))
        plan = requester_plan(our_items, ask)
        assert len(plan.items) == our_items == len(set(plan.items))
        truth = {i for i, x in enumerate(plan.items) if x in set(theirs)}  # the plaintext intersection
        assert plan.expected == truth and 1 <= len(truth) <= ANCHORS
        for mode in (Mode.REVEAL, Mode.COUNT):
            outcome = run_psi_pair(plan.items, theirs, mode=mode, max_set_size=1024)
            assert check_outcome(plan, outcome) == []


def test_a_wrong_answer_is_named() -> None:
    plan = CanaryPlan(("a", "b", "c", "d"), frozenset({1, 2}))
    right = PsiOutcome(2, (1, 2), 4, 1e-9)
    assert check_outcome(plan, right) == []
    assert check_outcome(plan, PsiOutcome(1, None, 4, 1e-9)) == ["1 matching canary items where 2 were expected"]
    assert check_outcome(plan, PsiOutcome(2, (0, 1), 4, 1e-9)) == [
        "1 items the peer holds were not found", "1 items the peer does not hold were reported as matches"]


def test_filter_kind_reads_the_setup() -> None:
    from private_set_intersection.python import ServerSetup

    raw = ServerSetup()
    raw.raw.encrypted_elements.append(b"\x02" + b"\x01" * 32)
    assert filter_kind(raw.SerializeToString()) == "raw"
    assert filter_kind(b"\xff\xff") == "unreadable"
    assert filter_kind(b"") == "empty"


@pytest.mark.parametrize("dataset", ["flagged", "_canary.flagged", "_canary.flagged.16", "_canary.a.65536"])
def test_the_egress_sends_a_dataset_field_holding_a_name_or_a_canary_name(dataset: str) -> None:
    message = pb.PsiOpenRequest(protocol_version=1, dataset=dataset, set_size=1)
    assert text_fields(message)["dataset"] == dataset


@pytest.mark.parametrize("dataset", ["_canary.flagged\n", "flagged\n", "_canary.jsmith@gmail.com", "_canary.flagged.0",
                                     "_canary.flagged.016", "_canary.Flagged", "_canary", "x_canary.flagged"])
def test_the_egress_refuses_anything_else_in_a_dataset_field_without_repeating_it(dataset: str) -> None:
    with pytest.raises(LocalProtocolError) as refused:
        text_fields(pb.PsiOpenRequest(protocol_version=1, dataset=dataset, set_size=1))
    assert "field dataset" in str(refused.value) and "gmail" not in str(refused.value)


def test_a_canary_name_is_a_dataset_field_only() -> None:
    # Other name fields keep the plain name rule: a canary's name means nothing there.
    with pytest.raises(LocalProtocolError, match="field metric"):
        text_fields(pb.FederationReleaseRequest(metric="_canary.flagged"))
