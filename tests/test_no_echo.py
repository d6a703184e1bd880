"""Refusals never echo what a peer sent, and text that leaves a node is checked
and on record (issue 13, item 3 in part; item 5: reused session ids).

The attacking member sends a marker (an email, a phone number's digits) in
every free-text and number field a refusal could repeat; no status it gets
back may hold the marker. A requester refuses a peer dataset that is not a
name before it contacts anyone; a name that *is* valid but is also a
customer's handle is in the audit entry itself, where ``audit scan`` finds it
with transcripts off. A responder that hands out an id already recorded gets
a clear error, never a database traceback.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from psi_share.audit.log import load_entries
from psi_share.audit.scan import scan_audit
from psi_share.errors import LocalProtocolError, RemoteProtocolError
from psi_share.identifiers import DEFAULT_CONTEXT
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

ROWS = [(f"r{i}", "email", f"user{i}@example.org") for i in range(8)]
EMAIL = "victim.marker@example.org"
DIGITS = 14155550123  # a phone number's digits, as a number field
SHORT = 415555012  # the same in a 32-bit field
SID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def pair(federation, csv_file):  # type: ignore[no-untyped-def]
    b = federation.node("lab-b", exposure__datasets='["flagged", "customers"]', policy__datasets='["flagged"]')
    b.import_file("flagged", csv_file("b.csv", ROWS), None)
    b.import_file("customers", csv_file("bc.csv", ROWS), None)
    a = federation.node("lab-a")
    a.import_file("flagged", csv_file("a.csv", ROWS), None)
    federation.serve("lab-b")
    federation.connect_all()
    return a, b


def _details(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        reply = call()
        if hasattr(reply, "__next__"):
            list(reply)
    return err.value.code().name, err.value.details() or ""


def _chunk(sid: str, **kw) -> pb.Chunk:  # type: ignore[no-untyped-def]
    fields = dict(protocol_version=PROTOCOL_VERSION, session_id=sid, index=0, last=True, total_bytes=3, data=b"abc")
    fields.update(kw)
    return pb.Chunk(**fields)


def test_no_refusal_repeats_what_the_peer_sent(pair, federation) -> None:
    v = PROTOCOL_VERSION
    kind = [pb.KindVersion(kind="email", version=1)]
    cases = {
        "dataset": lambda s: s.PsiOpen(pb.PsiOpenRequest(protocol_version=v, dataset=EMAIL, kinds=kind, set_size=5)),
        "kind": lambda s: s.PsiOpen(pb.PsiOpenRequest(protocol_version=v, dataset="flagged", set_size=5,
                                                      kinds=[pb.KindVersion(kind=EMAIL, version=1)])),
        "set size": lambda s: s.PsiOpen(pb.PsiOpenRequest(protocol_version=v, dataset="flagged", kinds=kind,
                                                          set_size=DIGITS)),
        "version": lambda s: s.NodeInfo(pb.NodeInfoRequest(protocol_version=SHORT)),
        "setup session": lambda s: s.PsiSetup(pb.PsiSetupRequest(protocol_version=v, session_id=EMAIL)),
        "close session": lambda s: s.PsiClose(pb.PsiCloseRequest(protocol_version=v, session_id=EMAIL)),
        "chunk session": lambda s: s.PsiProcess(iter([_chunk(EMAIL)])),
        "chunk version": lambda s: s.PsiProcess(iter([_chunk(SID, protocol_version=SHORT)])),
        "sum dataset": lambda s: s.SumOpen(pb.SumOpenRequest(protocol_version=v, dataset=EMAIL, set_size=5,
                                                             kind=kind[0], value_holder=pb.VALUE_HOLDER_RESPONDER, key_bits=2048)),
        "federation metric": lambda s: s.FederationPass(pb.FederationPassRequest(
            protocol_version=v, run_id=SID, metric=EMAIL, initiator="lab-a", contributors=1, min_contributors=3,
            route=["lab-c"])),
        "federation run": lambda s: s.FederationRelease(pb.FederationReleaseRequest(
            protocol_version=v, run_id=EMAIL, metric="m", contributors=3)),
    }
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        # A session of its own, for the chunk whose numbers lie.
        stub.PsiOpen(pb.PsiOpenRequest(protocol_version=v, dataset="flagged", kinds=kind, set_size=5))
        seen = {name: _details(lambda: call(stub)) for name, call in cases.items()}
    for name, (code, details) in seen.items():
        assert details, name
        assert EMAIL not in details and "victim" not in details, (name, details)
        assert str(DIGITS) not in details and str(SHORT) not in details, (name, details)
    assert seen["dataset"][0] == "NOT_FOUND" and seen["set size"][0] == "INVALID_ARGUMENT"
    assert seen["version"][0] == "FAILED_PRECONDITION" and seen["setup session"][0] == "NOT_FOUND"
    # What it sent is in lab-b's record as received bytes; none of it in a status lab-b sent.
    texts = [e["params"]["text"] for e in load_entries(b_home(federation)) if e["type"] == "sent" and "text" in e["params"]]
    assert texts and not [t for t in texts if EMAIL in str(t)]


def b_home(federation):  # type: ignore[no-untyped-def]
    return federation.nodes["lab-b"].home.audit_path


def test_a_hidden_and_a_missing_dataset_get_the_same_answer(pair, federation) -> None:
    answers = set()
    with federation.channel("lab-a", "lab-b") as channel:
        stub = pb_grpc.PsiShareNodeStub(channel)
        for dataset in ("customers", "nonexistent"):  # hidden from lab-a; missing everywhere
            answers.add(_details(lambda: stub.PsiOpen(pb.PsiOpenRequest(
                protocol_version=PROTOCOL_VERSION, dataset=dataset, set_size=5,
                kinds=[pb.KindVersion(kind="email", version=1)]))))
            answers.add(_details(lambda: stub.SumOpen(pb.SumOpenRequest(
                protocol_version=PROTOCOL_VERSION, dataset=dataset, set_size=5,
                kind=pb.KindVersion(kind="email", version=1), value_holder=pb.VALUE_HOLDER_RESPONDER, key_bits=2048))))
    assert len(answers) == 1 and next(iter(answers))[0] == "NOT_FOUND"


@pytest.mark.parametrize("bad", [EMAIL, "+14155550123", "Customers", "a b", "x" * 64, "1flagged"])
def test_a_peer_dataset_that_is_not_a_name_is_refused_before_any_contact(pair, bad) -> None:
    a, b = pair
    before_a, before_b = len(load_entries(a.home.audit_path)), len(load_entries(b.home.audit_path))
    for run in (lambda: a.match("lab-b", peer_dataset=bad, kinds=["email"]),
                lambda: a.intersection_sum("lab-b", dataset="flagged", peer_dataset=bad, kind="email")):
        with pytest.raises(LocalProtocolError, match="is not a dataset name.*nothing was sent") as err:
            run()
        assert bad not in str(err.value)
    assert len(load_entries(a.home.audit_path)) == before_a and len(load_entries(b.home.audit_path)) == before_b
    # The egress refuses it too, whoever builds the message.
    with pytest.raises(LocalProtocolError, match="field dataset must be"):
        a.egress.send(pb.PsiOpenRequest(protocol_version=1, dataset=bad), peer="lab-b", protocol="psi", step="open")


def test_the_cli_refuses_a_customer_email_as_peer_dataset_and_sends_nothing(pair, tmp_path) -> None:
    from cli_helpers import cli

    a, b = pair
    before = len(load_entries(b.home.audit_path))
    result = cli(tmp_path, "match", "lab-b", "--kinds", "email", "--peer-dataset", EMAIL, home=a.home.path)
    assert result.returncode == 1 and "is not a dataset name" in result.stderr and "nothing was sent" in result.stderr
    assert EMAIL not in result.stdout + result.stderr
    assert len(load_entries(b.home.audit_path)) == before  # lab-b heard nothing


def test_text_that_left_is_on_record_and_scanned_without_transcripts(pair, csv_file) -> None:
    a, b = pair
    assert not a.config.audit.transcripts
    handle = "jsmith-campaign-ops"  # a valid name that is also a customer's account handle
    customers = csv_file("customers.csv", [("c1", "account_handle", handle), ("c2", "email", "someone@example.org")])
    from psi_share.errors import PeerRefused

    with pytest.raises(PeerRefused):
        a.match("lab-b", peer_dataset=handle, kinds=["email"])
    [opened] = [e for e in load_entries(a.home.audit_path) if e["type"] == "sent" and e["step"] == "open"]
    assert opened["params"]["text"]["dataset"] == handle and "transcript" not in opened
    result = scan_audit(a.home.audit_path, [customers], DEFAULT_CONTEXT)
    assert result.entry_texts >= 1 and not result.clean
    assert any("recorded text" in f.place and "text of" in f.what and "actor c1, account_handle" in f.what
               for f in result.hits), result.hits


class _ReusingResponder:
    """A responder written from the proto that hands out a session id of its choice."""

    def __init__(self, tls_dir, session_id: str) -> None:  # type: ignore[no-untyped-def]
        self.session_id, self.closed = session_id, []
        handlers = {
            "PsiOpen": grpc.unary_unary_rpc_method_handler(
                self._open, request_deserializer=pb.PsiOpenRequest.FromString,
                response_serializer=pb.PsiOpenResponse.SerializeToString),
            "PsiClose": grpc.unary_unary_rpc_method_handler(
                self._close, request_deserializer=pb.PsiCloseRequest.FromString,
                response_serializer=pb.PsiCloseResponse.SerializeToString),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("psi_share.v1.PsiShareNode", handlers),))
        credentials = grpc.ssl_server_credentials([((tls_dir / "node.key").read_bytes(), (tls_dir / "node.crt").read_bytes())],
                                                  root_certificates=(tls_dir / "ca.crt").read_bytes(), require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def _open(self, request, context):  # type: ignore[no-untyped-def]
        return pb.PsiOpenResponse(protocol_version=PROTOCOL_VERSION, session_id=self.session_id,
                                  false_positive_rate=1e-9, max_set_size=1024, openmined_psi_version="2.0.6",
                                  session_ttl_seconds=900)

    def _close(self, request, context):  # type: ignore[no-untyped-def]
        self.closed.append(request.session_id)
        return pb.PsiCloseResponse(protocol_version=PROTOCOL_VERSION)


@pytest.mark.parametrize("which", ["own earlier session", "not an id"])
def test_a_responder_that_reuses_or_forges_a_session_id_gets_a_clear_error(pair, federation, which) -> None:
    a, b = pair
    earlier = a.match("lab-b", kinds=["email"]).session_id
    sid = earlier if which == "own earlier session" else "abc@example.org"
    fake = _ReusingResponder(b.home.tls_path, sid)  # lab-b's certificate: the requester's checks pass
    try:
        a.store.add_peer("lab-b", f"127.0.0.1:{fake.port}", now=0, replace=True)
        with pytest.raises(RemoteProtocolError) as err:
            a.match("lab-b", kinds=["email"])
        assert ("reused session id" if which == "own earlier session" else "without a valid id") in str(err.value)
        assert sid not in str(err.value)
        assert a.store.session(earlier).status == "done"  # the earlier record is untouched
        assert fake.closed == ([earlier] if which == "own earlier session" else [])
    finally:
        fake.server.stop(0)


def test_every_string_field_of_the_wire_contract_has_a_text_rule() -> None:
    # A field added to the proto later must be classified in egress.TEXT_RULES
    # (name, id or version): unclassified text would only get the id rule.
    from psi_share.transport.egress import TEXT_RULES

    strings = {
        field.name
        for message in pb.DESCRIPTOR.message_types_by_name.values()
        for field in message.fields
        if field.type == field.TYPE_STRING
    }
    assert strings - set(TEXT_RULES) == set()
