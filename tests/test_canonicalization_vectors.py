"""protos/vectors/canonicalization.json, the test vectors a third party
implementing the wire contract checks itself against, run against our code.

The vectors were written by hand from the rules in identifiers.py; this test
is what keeps the file and the code in step (a rule change that forgets to
update the vectors, or its version, fails here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psi_share.errors import InvalidIdentifier
from psi_share.identifiers import (
    ITEM_PREFIX,
    KINDS,
    CanonicalizationContext,
    canonical_versions,
    canonicalize,
    domain_separated_item,
    parse_item,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "protos" / "vectors" / "canonicalization.json").read_text(encoding="utf-8")
)


def _ctx(vector: dict) -> CanonicalizationContext:
    return CanonicalizationContext(**(vector.get("context") or VECTORS["default_context"]))


def _id(vector: dict) -> str:
    return f"{vector['kind']}:{vector['input'][:40]!r}"


def test_versions_and_item_format_match_the_code() -> None:
    assert VECTORS["versions"] == canonical_versions()
    assert VECTORS["item_format"].startswith(ITEM_PREFIX)


def test_every_kind_has_valid_and_invalid_vectors() -> None:
    for kind in KINDS:
        # A prompt is never canonicalized from a value (it becomes band items,
        # tests/test_prompts_signature.py): it has refusals only.
        assert kind == "prompt" or any(v["kind"] == kind for v in VECTORS["valid"]), kind
        assert any(v["kind"] == kind for v in VECTORS["invalid"]), kind


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=_id)
def test_valid_vector(vector: dict) -> None:
    kind = vector["kind"]
    canonical = canonicalize(kind, vector["input"], _ctx(vector))
    assert canonical == vector["canonical"]
    assert domain_separated_item(kind, canonical) == vector["item"]
    # The item is built exactly as item_format says, and parses back.
    assert vector["item"] == f"{ITEM_PREFIX}{kind}/v{VECTORS['versions'][kind]}/{canonical}"
    assert parse_item(vector["item"]) == (kind, VECTORS["versions"][kind], canonical)
    # A canonical form is a fixed point.
    assert canonicalize(kind, canonical, _ctx(vector)) == canonical


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=_id)
def test_invalid_vector(vector: dict) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        canonicalize(vector["kind"], vector["input"], _ctx(vector))
    assert info.value.reason == vector["reason"]
    assert info.value.kind == vector["kind"]


def test_same_text_under_different_kinds_gives_different_items() -> None:
    items = [v["item"] for v in VECTORS["valid"] if v["input"] == "abc123"]
    assert len(items) == len(set(items)) == 3
