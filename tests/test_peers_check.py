"""``peers check`` over real nodes and mutual TLS, default config: every check
passes against a healthy peer and each kind of broken configuration fails its
own check, named. A responder serving broken filters (its filter code
replaced here, as a peer running other software would) fails the canaries at
exactly the sizes where a real match would go wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from cli_helpers import LAB_A_ROWS, LAB_B_ROWS, put_crl

from psi_share import Mode, Node, init_home
from psi_share.audit.log import load_entries
from psi_share.audit.scan import scan_audit
from psi_share.errors import PeerRefused, RemoteProtocolError
from psi_share.identifiers import DEFAULT_CONTEXT, KINDS
from psi_share.node.checks import (
    DEFAULT_SIZES,
    EXIT_CHECK_FAILED,
    EXIT_UNREACHABLE,
    FAIL,
    OK,
    SKIPPED,
    WARN,
    check_peers,
    exit_code,
)
from psi_share.pki import init_ca, issue_node, revoke
from psi_share.protocols import psi as psi_protocol
from psi_share.transport import egress
from psi_share.node.checks.canary import DEFAULT_ITEMS
from psi_share.protocols.canary import ANCHORS
from psi_share.store.db import usage

A_ITEMS = 9  # lab-a's distinct email, phone and ip_prefix items (cli_helpers: 8 email/phone + 1 prefix)
B_KINDS = ["email", "ip_prefix", "phone"]


@pytest.fixture
def fed(federation, csv_file):  # type: ignore[no-untyped-def]
    """lab-a checks lab-b (healthy, serving); lab-c exists but is down."""
    a = federation.node("lab-a")
    b = federation.node("lab-b", audit__transcripts="true")
    federation.node("lab-c")
    a.import_file("flagged", csv_file("a.csv", LAB_A_ROWS), None)
    b.import_file("flagged", csv_file("b.csv", LAB_B_ROWS), None)
    return federation


def _start(federation, *serving: str) -> None:  # type: ignore[no-untyped-def]
    for name in serving:
        federation.serve(name)
    federation.connect_all()


def _check(node: Node, *peers: str, sizes=(16, 600)):  # type: ignore[no-untyped-def]
    reports = check_peers(node, list(peers) or None, sizes=sizes)
    return reports[0] if len(peers) == 1 else reports


def _statuses(report) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    out: dict[str, set[str]] = {}
    for f in report.findings:
        out.setdefault(f.check, set()).add(f.status)
    return out


def _canaries(report):  # type: ignore[no-untyped-def]
    return [f for f in report.findings if f.check == "canary"]


def _one(report, check: str):  # type: ignore[no-untyped-def]
    [finding] = [f for f in report.findings if f.check == check]
    return finding


def test_a_healthy_peer_passes_every_check_and_the_canary_sweeps_sizes(fed) -> None:  # type: ignore[no-untyped-def]
    a, b = fed.nodes["lab-a"], fed.nodes["lab-b"]
    _start(fed, "lab-b")
    report = _check(a, "lab-b", sizes=DEFAULT_SIZES)
    assert exit_code([report]) == 0, [f.detail for f in report.failed]
    assert [f.check for f in report.findings][:6] == ["connect", "tls", "access", "identity", "versions", "grants"]
    assert all(f.status == OK for f in report.findings), [(f.check, f.status, f.detail) for f in report.findings]
    tls = _one(report, "tls")
    assert "names lab-b" in tls.detail and tls.facts["expires_in_days"] > 300
    grants = _one(report, "grants")
    assert grants.facts["datasets"] == {"flagged": B_KINDS} and "psi" in grants.facts["protocols"]

    canaries = _canaries(report)
    assert len(canaries) == 2 + len(DEFAULT_SIZES)
    expected = min(ANCHORS, (A_ITEMS + 1) // 2)  # half of our items, known in advance
    for f in canaries:
        assert (f.facts["our_items"], f.facts["expected"], f.facts["got"]) == (A_ITEMS, expected, expected)
        # Each canary got the filter of a real session's size class: ours (9 items) rounds up to 1,024.
        assert f.facts["queries"] == psi_protocol.MIN_SIZE_CLASS and f.facts["kinds"] == B_KINDS
    assert [f.facts["mode"] for f in canaries[:2]] == ["reveal", "count"]
    assert [f.facts["asked"] for f in canaries[2:]] == [f"_canary.flagged.{n}" for n in DEFAULT_SIZES]
    assert {f.facts["filter"] for f in canaries} <= {"raw", "gcs", "bloom_filter"}  # every one read as a filter

    # The responder answered each canary as a session of its own, charged nothing to
    # lab-a's daily budget; lab-a stored nothing (the audit log has every message).
    theirs = [s for s in b.store.sessions(limit=100) if s.role == "responder"]
    assert len(theirs) == len(canaries) and all(s.status == "done" for s in theirs)
    assert {s.local_dataset for s in theirs} == {"_canary.flagged"} | {f"_canary.flagged.{n}" for n in DEFAULT_SIZES}
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert "lab-a" not in usage(b.store, today)
    assert a.store.sessions(limit=100) == []
    opens = [e for e in load_entries(a.home.audit_path) if e.get("step") == "open" and e["type"] == "sent"]
    assert len(opens) == len(canaries)
    # What lab-b sent (its transcripts) holds nothing of its data, and every message checks out.
    result = scan_audit(b.home.audit_path, [fed.root / "b.csv"], DEFAULT_CONTEXT)
    assert result.messages_checked >= len(canaries) and result.clean, (result.hits, result.invalid)


def test_a_peer_on_another_canonicalization_version_fails_versions_naming_the_kind(fed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # lab-b's node (in this process) speaks email at the next version: NodeInfo and its policy say so.
    import psi_share.node.policy as policy_module
    import psi_share.node.psi.responder as responder_module

    bumped = {**KINDS, "email": dataclasses.replace(KINDS["email"], version=KINDS["email"].version + 1)}
    monkeypatch.setattr(policy_module, "KINDS", bumped)
    monkeypatch.setattr(responder_module, "canonical_versions", lambda kinds=None: {k: s.version for k, s in bumped.items()})
    a = fed.nodes["lab-a"]
    _start(fed, "lab-b")
    report = _check(a, "lab-b")
    assert exit_code([report]) == EXIT_CHECK_FAILED
    assert [f.check for f in report.failed] == ["versions"]
    v = KINDS["email"].version
    assert f"canonicalization versions differ for email (ours v{v}, theirs v{v + 1})" in _one(report, "versions").detail
    assert _one(report, "versions").facts["canonicalization_differs"] == ["email"]
    # The canary runs on the kinds that agree, and passes: only email is broken.
    assert {tuple(f.facts["kinds"]) for f in _canaries(report)} == {("ip_prefix", "phone")}
    assert all(f.status == OK for f in _canaries(report))
    # What the check predicts: a real match on email is refused, naming the kind.
    with pytest.raises(PeerRefused, match=r"FAILED_PRECONDITION.*kind email"):
        a.match("lab-b", kinds=["email"])


def test_the_address_of_a_peer_reaching_another_members_node_fails_tls(fed) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    _start(fed, "lab-b", "lab-c")
    a.store.add_peer("lab-b", f"127.0.0.1:{fed.servers['lab-c'].port}", now=a.clock(), replace=True)
    report = _check(a, "lab-b")
    assert exit_code([report]) == EXIT_CHECK_FAILED
    assert [f.check for f in report.findings] == ["connect", "tls"]  # nothing is sent to the wrong node
    assert "presents no federation certificate naming lab-b: it names 'lab-c'" in _one(report, "tls").detail
    assert not [e for e in load_entries(a.home.audit_path) if e.get("peer") == "lab-b"]


def test_a_server_with_a_certificate_from_another_ca_fails_tls(fed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    _start(fed)
    rogue_ca = init_ca(tmp_path / "rogue-ca", "not the federation")
    home = init_home(tmp_path / "rogue", "lab-b", "127.0.0.1:0",
                     tls_from=issue_node(rogue_ca, "lab-b", tmp_path / "rogue-tls", addresses=["127.0.0.1"]).directory)
    with Node.open(home.path) as rogue:
        server = rogue.serve("127.0.0.1:0", prepare=False)
        try:
            a.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=a.clock(), replace=True)
            report = _check(a, "lab-b")
        finally:
            server.stop(grace=1)
    assert [f.check for f in report.failed] == ["tls"]
    assert "presents no federation certificate naming lab-b: it is not signed by the federation CA" in report.failed[0].detail
    assert "CN=not the federation" in report.failed[0].detail


def test_a_revoked_server_certificate_fails_tls_and_one_ending_soon_warns(fed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    # lab-d's certificate ends in 10 days: a warning, not a failure.
    short = issue_node(fed.ca, "lab-d", tmp_path / "lab-d-tls", addresses=["127.0.0.1"], days=10)
    fed.nodes["lab-d"] = Node.open(init_home(tmp_path / "lab-d", "lab-d", "127.0.0.1:0", tls_from=short.directory).path)
    _start(fed, "lab-b", "lab-d")
    soon = _check(a, "lab-d", sizes=())
    tls = _one(soon, "tls")
    assert tls.status == WARN and "expires in 9 days; lab-d needs a new one from the CA" in tls.detail
    assert exit_code([soon]) == 0
    # lab-b's certificate is revoked and lab-a receives the new CRL: nothing more is sent to lab-b.
    revoke(fed.ca, name="lab-b")
    put_crl(fed.ca.crl_path, a.home.tls_path / "crl.pem")
    report = _check(a, "lab-b")
    assert [f.check for f in report.findings] == ["connect", "tls"]
    assert "which the federation CA has revoked (our revocation list)" in report.failed[0].detail
    assert exit_code([report]) == EXIT_CHECK_FAILED


def test_a_peer_whose_node_info_names_another_node_fails_identity(fed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = fed.nodes["lab-a"], fed.nodes["lab-b"]
    real = b.responder.node_info
    # A peer running other software: its egress does not hold names to the name rule.
    monkeypatch.setitem(egress.TEXT_RULES, "name", (re.compile(".*"), "anything"))
    monkeypatch.setattr(b.responder, "node_info", lambda peer: dataclasses.replace(real(peer), node_name="lab-x"))
    _start(fed, "lab-b")
    report = _check(a, "lab-b")
    assert exit_code([report]) == EXIT_CHECK_FAILED
    assert [f.check for f in report.failed] == ["identity"] and report.findings[-1].check == "identity"
    assert "calls itself 'lab-x' in NodeInfo, not 'lab-b'" in report.failed[0].detail


def test_a_peer_that_is_down_fails_connect_with_its_own_exit_code(fed) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    _start(fed, "lab-b")  # lab-c is not serving: its address is 127.0.0.1:1
    down = _check(a, "lab-c")
    assert [(f.check, f.status) for f in down.findings] == [("connect", FAIL)]
    assert "peer lab-c is unavailable: 127.0.0.1:1" in down.findings[0].detail
    assert exit_code([down]) == EXIT_UNREACHABLE
    # Every known peer by default: one down and one healthy is still "unreachable" ...
    reports = check_peers(a, sizes=(16,))
    assert [r.peer for r in reports] == ["lab-b", "lab-c"] and reports[0].ok
    assert exit_code(reports) == EXIT_UNREACHABLE
    # ... and one down beside one refusing us is a failed check.
    fed.nodes["lab-b"].store.remove_peer("lab-a")
    assert exit_code(check_peers(a, sizes=(16,))) == EXIT_CHECK_FAILED


def test_a_peer_that_does_not_know_us_fails_access(fed) -> None:  # type: ignore[no-untyped-def]
    a = fed.nodes["lab-a"]
    _start(fed, "lab-b")
    fed.nodes["lab-b"].store.remove_peer("lab-a")
    report = _check(a, "lab-b")
    assert [f.check for f in report.findings] == ["connect", "tls", "access"]
    assert report.failed[0].detail.startswith("lab-b refuses us: UNAUTHENTICATED: node 'lab-a' is not a known peer")
    assert exit_code([report]) == EXIT_CHECK_FAILED


@pytest.mark.parametrize(
    ("policy", "status", "expected"),
    [({"policy.peers.lab-a__protocols": "[]"}, FAIL, "lab-b grants us no protocol"),
     ({"policy.peers.lab-a__protocols": '["psi"]', "policy.peers.lab-a__datasets": "[]"}, FAIL,
      "lab-b grants us no dataset holding data"),
     ({"policy.peers.lab-a__datasets": "[]"}, WARN, "lab-b grants us no dataset holding data")],
    ids=["no-protocol", "matching-without-dataset", "only-federation-totals-usable"],
)
def test_a_peer_that_grants_us_nothing_to_match_on_says_so(federation, csv_file, policy, status, expected) -> None:  # type: ignore[no-untyped-def]
    a, b = federation.node("lab-a"), federation.node("lab-b", **policy)
    b.import_file("flagged", csv_file("b.csv", LAB_B_ROWS), None)
    _start(federation, "lab-b")
    report = _check(a, "lab-b")
    grants = _one(report, "grants")
    assert grants.status == status and expected in grants.detail
    assert _one(report, "canary").status == SKIPPED  # nothing to run a canary on
    assert exit_code([report]) == (EXIT_CHECK_FAILED if status == FAIL else 0)


def test_node_info_listing_a_dataset_that_is_not_a_name_fails_grants(fed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = fed.nodes["lab-a"], fed.nodes["lab-b"]
    real = b.responder.node_info
    # A peer running other software: its egress does not hold names to the name rule.
    monkeypatch.setitem(egress.TEXT_RULES, "name", (re.compile(".*"), "anything"))
    monkeypatch.setattr(b.responder, "node_info",
                        lambda peer: dataclasses.replace(real(peer), datasets={"../etc": ("email",), **real(peer).datasets}))
    _start(fed, "lab-b")
    report = _check(a, "lab-b")
    assert [f.check for f in report.failed] == ["grants"]
    assert "lists 1 dataset names that are not plain names" in report.failed[0].detail
    assert _one(report, "canary").status == SKIPPED


def test_a_counts_only_grant_skips_the_psi_canaries_and_says_why(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    # OpenMined's count mode needs the reveal grant too (a modified requester learns the
    # matches): a peer granting counts only answers no PSI session, canary or real.
    a, b = federation.node("lab-a"), federation.node("lab-b", policy__reveal="false")
    b.import_file("flagged", csv_file("b.csv", LAB_B_ROWS), None)
    _start(federation, "lab-b")
    report = _check(a, "lab-b")
    assert exit_code([report]) == 0, [f.detail for f in report.failed]
    canaries = _canaries(report)
    assert [(f.facts["mode"], f.status) for f in canaries] == [("reveal", SKIPPED), ("count", SKIPPED)]
    assert all("PERMISSION_DENIED" in f.detail and "counts only" in f.detail for f in canaries)
    assert [f.facts["our_items"] for f in canaries] == [DEFAULT_ITEMS] * 2  # lab-a holds no dataset "flagged"


# -- a responder serving broken filters ------------------------------------------


def _corrupt(setup):  # type: ignore[no-untyped-def]
    """A raw setup truncated to one point, a GCS or Bloom filter with its bits scrambled."""
    kind = setup.WhichOneof("data_structure")
    if kind == "raw":
        kept = list(setup.raw.encrypted_elements)[:1]
        del setup.raw.encrypted_elements[:]
        setup.raw.encrypted_elements.extend(kept)
    elif kind == "gcs":
        setup.gcs.bits = bytes(b ^ 0x5A for b in setup.gcs.bits)
    else:
        setup.bloom_filter.bits = bytes(b ^ 0x5A for b in setup.bloom_filter.bits)
    return setup


def _serve_corrupted_filters(monkeypatch, sizes=range(0, 1 << 30)) -> None:  # type: ignore[no-untyped-def]
    """Every filter built from now on over a set whose size is in ``sizes`` is corrupted
    after its own check (as a responder running other software would serve it)."""
    real = psi_protocol.build_setup

    def build(points, fpr, queries):  # type: ignore[no-untyped-def]
        setup = real(points, fpr, queries)
        return _corrupt(setup) if len(points) in sizes else setup

    monkeypatch.setattr(psi_protocol, "build_setup", build)


def test_a_corrupted_filter_fails_the_canary_and_would_fail_a_real_match(fed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = fed.nodes["lab-a"], fed.nodes["lab-b"]
    _serve_corrupted_filters(monkeypatch)
    _start(fed, "lab-b")
    report = _check(a, "lab-b", sizes=(16, 2000))
    assert exit_code([report]) == EXIT_CHECK_FAILED
    assert {f.check for f in report.failed} == {"canary"}
    failed = [f for f in _canaries(report) if f.status == FAIL]
    assert len(failed) == len(_canaries(report)) == 4  # at the real size, 16 and 2000, both modes
    assert any(f.detail.startswith("flagged (16 synthetic items, reveal, 9 of ours):") for f in failed)
    assert any("flagged (2000 synthetic items, reveal" in f.detail for f in failed)
    # The real match against the same corrupted filters goes wrong too, as the canary said it
    # would: our check refuses the filter, or (a scrambled GCS that still decodes) it misses matches.
    try:
        outcome = a.match("lab-b", kinds=B_KINDS)
    except RemoteProtocolError:
        return
    matched = {m.actor_id for m in a.store.matches([outcome.session_id])}
    assert matched != {"a1", "a2", "a5", "a6", "a7", "a8"}  # the plaintext intersection on these kinds


def test_a_filter_broken_at_some_sizes_fails_the_canary_at_those_sizes_only(federation, csv_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The shape of the int64 overflow this check was built for: 520 to 4,600 items broken.
    a, b = federation.node("lab-a"), federation.node("lab-b")
    b.import_file("flagged", csv_file("b.csv", LAB_B_ROWS), None)
    _serve_corrupted_filters(monkeypatch, range(520, 4601))
    _start(federation, "lab-b")
    report = _check(a, "lab-b", sizes=(16, 520, 4600, 5000))
    verdicts = {f.facts["asked"]: f.status for f in _canaries(report) if f.facts["mode"] == "reveal"}
    assert verdicts == {"_canary.flagged": OK, "_canary.flagged.16": OK, "_canary.flagged.520": FAIL,
                        "_canary.flagged.4600": FAIL, "_canary.flagged.5000": OK}, report.failed
    assert exit_code([report]) == EXIT_CHECK_FAILED


def test_the_canary_agrees_with_real_matches_at_every_size(federation, csv_file) -> None:  # type: ignore[no-untyped-def]
    """Default sizing, real datasets of several sizes at the responder: the canary at
    each dataset's own size fails exactly where a real match gives a wrong answer
    (or none), judged against the plaintext intersection."""
    sizes = (20, 600, 4600, 6000)
    datasets = [f"d{n}" for n in sizes]
    a = federation.node("lab-a")
    b = federation.node("lab-b", exposure__datasets=str(datasets).replace("'", '"'))
    ours = [(f"a{i}", "payment_fingerprint", f"card-{i:06d}") for i in range(20)]
    ours += [(f"x{i}", "payment_fingerprint", f"other-{i:06d}") for i in range(20)]
    a.import_file("flagged", csv_file("a.csv", ours), None)
    for n, name in zip(sizes, datasets):
        b.import_file(name, csv_file(f"{name}.csv", [(f"b{i}", "payment_fingerprint", f"card-{i:06d}") for i in range(n)]), None)
    _start(federation, "lab-b")
    report = _check(a, "lab-b", sizes=())
    canary_ok = {f.facts["dataset"]: f.status == OK for f in _canaries(report) if f.facts["mode"] == "reveal"}
    real_ok = {}
    for name in datasets:
        try:
            outcome = a.match("lab-b", peer_dataset=name, kinds=["payment_fingerprint"], mode=Mode.REVEAL)
        except PeerRefused:
            raise  # the peer refusing is not what this test is about
        except RemoteProtocolError:  # a filter the requester cannot read: the match failed
            real_ok[name] = False
            continue
        matched = {m.actor_id for m in a.store.matches([outcome.session_id])}
        real_ok[name] = matched == {f"a{i}" for i in range(20)}
    assert canary_ok == real_ok, (canary_ok, real_ok)
