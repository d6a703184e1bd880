"""NodeInfo advertises the prompt parameter set, and ``peers check`` compares it before any session.

Real nodes (gRPC on loopback, mutual TLS): lab-a checks a peer with the same
``[prompts]`` settings (agrees), one with another threshold and another seed
(fails, naming each differing field and never the seed), and one without
prompts (a warning; its NodeInfo carries no parameter set). No prompt session
is opened by any of it.
"""

from __future__ import annotations

import pytest

from psi_share.node.checks import FAIL, OK, WARN, check_peers, exit_code
from psi_share.prompts import PromptParams
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

SEED = "5e" * 32
OTHER_SEED = "6f" * 32


def _prompts(seed: str = SEED, **extra: str) -> dict[str, str]:
    return {"prompts__seed": f'"{seed}"', **extra}


@pytest.fixture
def fed(federation):  # type: ignore[no-untyped-def]
    federation.node("lab-a", **_prompts())
    federation.node("lab-b", **_prompts())
    federation.node("lab-c", **_prompts(OTHER_SEED, prompts__threshold="0.7"))
    federation.node("lab-d")  # no [prompts]
    for name in ("lab-a", "lab-b", "lab-c", "lab-d"):
        federation.serve(name)
    federation.connect_all()
    return federation


def _finding(report, check: str):  # type: ignore[no-untyped-def]
    return [f for f in report.findings if f.check == check]


def test_node_info_carries_the_prompt_parameters_only_when_configured(fed) -> None:  # type: ignore[no-untyped-def]
    ask = pb.NodeInfoRequest(protocol_version=PROTOCOL_VERSION)
    info = pb_grpc.PsiShareNodeStub(fed.channel("lab-a", "lab-c")).NodeInfo(ask, timeout=30)
    assert info.HasField("prompt_params")
    expected = PromptParams.from_config(OTHER_SEED, threshold=0.7).describe()
    assert {k: getattr(info.prompt_params, k) for k in expected} == expected
    assert OTHER_SEED not in str(info) and bytes.fromhex(OTHER_SEED) not in info.SerializeToString()
    bare = pb_grpc.PsiShareNodeStub(fed.channel("lab-a", "lab-d")).NodeInfo(ask, timeout=30)
    assert not bare.HasField("prompt_params")


def test_peers_check_reports_prompt_parameters_before_any_session(fed) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    same, other, bare = check_peers(a, ["lab-b", "lab-c", "lab-d"], canary=False)

    [agree] = _finding(same, "prompts")
    ours = PromptParams.from_config(SEED).describe()
    assert agree.status == OK and agree.facts["ours"] == ours
    assert f"{ours['bands']} bands x {ours['rows']} rows" in agree.detail and ours["seed_id"] in agree.detail

    [differ] = _finding(other, "prompts")
    theirs = PromptParams.from_config(OTHER_SEED, threshold=0.7).describe()
    assert differ.status == FAIL
    for field in ("bands", "rows", "seed_id"):
        assert ours[field] != theirs[field], field  # the two settings really differ in these fields
    assert f"bands: {ours['bands']} at lab-a, {theirs['bands']} at lab-c" in differ.detail
    assert f"rows per band: {ours['rows']} at lab-a, {theirs['rows']} at lab-c" in differ.detail
    assert "federation seed (by id)" in differ.detail
    for unchanged in ("normalisation version", "words per shingle", "MinHash scheme"):
        assert unchanged not in differ.detail
    assert SEED not in differ.detail and OTHER_SEED not in differ.detail
    # The findings before it still passed: only the prompt parameters are wrong.
    assert {f.check for f in other.findings if f.status == FAIL} == {"prompts"}

    [warn] = _finding(bare, "prompts")
    assert warn.status == WARN and "lab-d has no [prompts] seed" in warn.detail

    assert exit_code([same]) == 0 and exit_code([other]) != 0 and exit_code([bare]) == 0
    # All of it came from NodeInfo: no session was opened anywhere.
    assert all(n.store.sessions(limit=10) == [] for n in fed.nodes.values())


def test_peers_check_says_nothing_of_prompts_when_neither_node_has_them(fed) -> None:  # type: ignore[no-untyped-def]
    d = fed.nodes["lab-d"]
    [to_a] = check_peers(d, ["lab-a"], canary=False)
    assert [f.status for f in _finding(to_a, "prompts")] == [WARN]  # we have none, lab-a has
    assert "we have no [prompts] seed" in _finding(to_a, "prompts")[0].detail
    fed.node("lab-e")
    fed.serve("lab-e")
    fed.connect_all()
    [to_e] = check_peers(d, ["lab-e"], canary=False)
    assert _finding(to_e, "prompts") == [] and to_e.ok
