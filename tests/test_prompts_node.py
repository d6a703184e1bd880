"""Prompt chains between real nodes: gRPC on loopback, mutual TLS, real OpenMined PSI.

Three labs import the synthetic campaign's prompt files (small sizes) with
the federation stoplist and their own benign samples; lab-a runs a job over
the ``prompt`` kind against lab-b and lab-c. What it learns is checked
twice: against the plaintext intersection of the labs' band items (PSI must
give exactly that) and against the generator's truth (precision and recall
>= 0.95, no benign prompt linking actors). Then the refusals: prompt matching
is granted only by name, a parameter set that differs is FAILED_PRECONDITION
naming the field, and an attacker's open without parameters is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from psi_share import Mode
from psi_share.audit.scan import NeedleIndex, load_sources, scan_audit
from psi_share.cli.prompts import run_rows
from psi_share.errors import PeerRefused
from psi_share.identifiers import DEFAULT_CONTEXT
from psi_share.jobs.history import diff_runs
from psi_share.jobs.exports import collect, to_stix
from psi_share.jobs.runner import run_job
from psi_share.jobs.spec import load_job
from psi_share.node.prompts.matches import chain_actors, chain_sightings, parse_raw
from psi_share.prompts import PromptParams, SignatureEngine
from psi_share.prompts.synthetic import generate, score_matches, write_files
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.node.prompts.matches import prompt_matches
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

SEED = "5e" * 32
LABS = ("lab-a", "lab-b", "lab-c")


def prompt_config(files: dict[str, Path], **extra: object) -> dict[str, object]:
    return {
        "prompts__seed": f'"{SEED}"', "prompts__stoplist": f'["{files["stoplist.txt"]}"]',
        "exposure__datasets": '["flagged", "prompts"]', "policy__kinds": '["email", "prompt"]',
        "privacy__enabled": "false", "audit__transcripts": "true", **extra,
    }


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):  # type: ignore[no-untyped-def]
    fed = generate(seed=7, campaign_accounts=12, ordinary_users=20, near_miss_actors=4, local_actors=4,
                   benign_sample_users=300)
    return fed, write_files(fed, tmp_path_factory.mktemp("campaign"))


def _start(federation, campaign, b_extra=None, labs=LABS[:2]):  # type: ignore[no-untyped-def]
    """lab-a and the peers in ``labs``, each with its prompt file imported; the peers serve."""
    fed, files = campaign
    nodes = {}
    for lab in labs:
        extra = (b_extra or {}) if lab == "lab-b" else {}
        node = nodes[lab] = federation.node(lab, **prompt_config(files, **extra))
        node.import_prompts("prompts", files[f"{lab}/prompts.jsonl"], None, benign=files[f"{lab}/benign-sample.jsonl"])
    for lab in labs[1:]:
        federation.serve(lab)
    federation.connect_all()
    return nodes


def test_campaign_job_between_three_nodes(federation, campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed, files = campaign
    nodes = _start(federation, campaign, labs=LABS)
    a = nodes["lab-a"]
    job = tmp_path / "chains.toml"
    job.write_text('[job]\nname = "chains"\nparticipants = ["lab-a", "lab-b", "lab-c"]\ndataset = "prompts"\n'
                   'kinds = ["prompt"]\nmode = "reveal"\n')
    result = run_job(a, load_job(job))
    assert result.status == "ok", result
    sessions = {s.peer: s for s in a.store.sessions(job_run_id=result.run_id) if s.role == "requester"}
    rows = {lab: nodes[lab].store.identifiers("prompts", ["prompt"]) for lab in LABS}
    params = PromptParams.from_config(SEED)
    items = {lab: {f"psi-share/1/prompt/v1/{r.canonical}" for r in rows[lab]} for lab in LABS}
    for peer in ("lab-b", "lab-c"):
        # PSI gives exactly the plaintext intersection of the band items.
        assert sessions[peer].matched_count == len(items["lab-a"] & items[peer])
        records = prompt_matches(a.store, [sessions[peer].id])
        # Stored and shown: exactly our clusters with at least min_bands items in the intersection.
        clusters: dict[tuple[str, str], set[str]] = {}
        for r in rows["lab-a"]:
            clusters.setdefault((r.actor_id, r.raw), set()).add(f"psi-share/1/prompt/v1/{r.canonical}")
        expected = {(actor, parse_raw(raw).line) for (actor, raw), its in clusters.items()  # type: ignore[union-attr]
                    if len(its & items[peer]) >= params.min_bands}
        assert {(r.actor_id, r.line) for r in records} == expected
        score = score_matches(fed, "lab-a", peer, {r.line for r in records})
        assert score.templates[0] >= 3 and score.actors[0] >= 5, score  # a non-trivial truth
        assert min(score.template_precision, score.template_recall) >= 0.95, score
        assert min(score.actor_precision, score.actor_recall) >= 0.95, score
        assert score.benign_links == 0
        assert all(params.min_bands <= r.bands_matched <= r.bands == params.bands for r in records)
    # Accounts whose prompts share a chain seen at both other labs, against the truth.
    linked = chain_actors(chain_sightings(a.store, [s.id for s in sessions.values()]), 2)
    truth = fed.linked_actors("lab-a", "lab-b") & fed.linked_actors("lab-a", "lab-c")
    both = {p.actor_id for p in fed.prompts["lab-a"]
            if p.template in fed.shared_templates("lab-a", "lab-b") & fed.shared_templates("lab-a", "lab-c")}
    assert set(linked) <= truth and len(set(linked) & both) >= 0.95 * len(both) > 0
    # 'results run --chain-peers 2' lists exactly those actors, each with its chains.
    rows = run_rows(a, result.run_id, 1, 2)
    assert {r["actor_id"] for r in rows} == set(linked) and all(r["chains"] for r in rows)
    # The STIX export names chains as attack patterns, never with prompt text.
    stix = json.loads(to_stix(collect(a.store, "lab-a", a.store.job_run(result.run_id))))
    patterns = [o for o in stix["objects"] if o["type"] == "attack-pattern"]
    assert patterns and all(o["name"].startswith("prompt chain chain-") for o in patterns)
    text = json.dumps(stix)
    assert not any(p.text[:30] in text for p in fed.prompts["lab-a"] if len(p.text) >= 30)
    # A second run finds the same: its diff has no change, prompt chains included.
    again = run_job(a, load_job(job))
    diff = diff_runs(a.store, a.store.job_run(result.run_id), a.store.job_run(again.run_id))
    assert diff.empty and not diff.chains and diff.compared_peers == ("lab-b", "lab-c")
    # The compliance officer's scan: no form of any prompt left any of the three nodes.
    params = PromptParams.from_config(SEED)
    for lab in LABS:
        scan = scan_audit(nodes[lab].home.audit_path, [files[f"{lab}/prompts.jsonl"]], DEFAULT_CONTEXT, params)
        assert scan.transcripts > 0 and scan.identifiers > 1000 and scan.clean, (lab, scan.hits[:3], scan.invalid[:3])
    # ... and the same needles do find a band item, a shingle and the raw text when they are there.
    index = NeedleIndex(load_sources([files["lab-a/prompts.jsonl"]], DEFAULT_CONTEXT, params))
    first = fed.prompts["lab-a"][0]
    banded = SignatureEngine(params).band(first.text)
    for planted in (banded.items[3], sorted(banded.shingles)[0], first.text):
        assert index.find(b"\x00" * 40 + planted.encode() + b"\x00" * 40), "a planted form was not found"


def test_count_only_on_prompt_items(federation, campaign) -> None:  # type: ignore[no-untyped-def]
    nodes = _start(federation, campaign, {"policy__reveal": "false"})
    a, b = nodes["lab-a"], nodes["lab-b"]
    outcome = a.match("lab-b", dataset="prompts", kinds=["prompt"], mode=Mode.COUNT)
    mine = {r.canonical for r in a.store.identifiers("prompts", ["prompt"])}
    theirs = {r.canonical for r in b.store.identifiers("prompts", ["prompt"])}
    assert outcome.count == len(mine & theirs) > 0
    with pytest.raises(PeerRefused, match="PERMISSION_DENIED"):
        a.match("lab-b", dataset="prompts", kinds=["prompt"], mode=Mode.REVEAL)


@pytest.mark.parametrize("b_extra, named", [
    ({"prompts__threshold": "0.7"}, "bands: 38 at lab-b, 48 at lab-a; rows per band: 5 at lab-b, 4 at lab-a"),
    ({"prompts__seed": f'"{"6f" * 32}"'}, "federation seed (by id)"),
])
def test_parameter_mismatch_is_failed_precondition(federation, campaign, b_extra, named) -> None:  # type: ignore[no-untyped-def]
    nodes = _start(federation, campaign, b_extra)
    with pytest.raises(PeerRefused, match="FAILED_PRECONDITION") as info:
        nodes["lab-a"].match("lab-b", dataset="prompts", kinds=["prompt"])
    assert named in str(info.value)


def test_prompt_needs_a_grant_by_name(federation, campaign) -> None:  # type: ignore[no-untyped-def]
    nodes = _start(federation, campaign, {"policy__kinds": "[]"})
    with pytest.raises(PeerRefused, match="PERMISSION_DENIED.*prompt"):
        nodes["lab-a"].match("lab-b", dataset="prompts", kinds=["prompt"])


def test_attacker_open_without_or_with_forged_parameters(federation, campaign) -> None:  # type: ignore[no-untyped-def]
    """A modified client names the prompt kind but sends no parameter set, or one with another seed."""
    _start(federation, campaign)
    stub = pb_grpc.PsiShareNodeStub(federation.channel("lab-a", "lab-b"))
    good = PromptParams.from_config(SEED).describe()
    forged = pb.PromptParameters(**{**good, "seed_id": "0" * 16})
    for params in (None, forged):
        request = pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset="prompts", set_size=100,
                                    kinds=[pb.KindVersion(kind="prompt", version=1)], reveal_intersection=True,
                                    prompt_params=params)
        with pytest.raises(grpc.RpcError) as info:
            stub.PsiOpen(request, timeout=30)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert ("without its prompt parameter set" if params is None else "federation seed") in info.value.details()


def test_peers_check_passes_against_a_peer_exposing_prompts(federation, campaign) -> None:  # type: ignore[no-untyped-def]
    """A prompt dataset is granted but is no canary target (band items need the parameters
    agreed in a session of their own): peers check stays green, its canaries on email."""
    from psi_share.node.checks.peer import check_peer

    nodes = _start(federation, campaign)
    report = check_peer(nodes["lab-a"], "lab-b", sizes=(1,))
    assert report.ok, [(f.check, f.detail) for f in report.failed]
    canaries = [f for f in report.findings if f.check.startswith("canary")]
    assert canaries and all("prompt" not in f.facts.get("kinds", []) for f in canaries)
