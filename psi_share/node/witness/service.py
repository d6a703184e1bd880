"""Witnessing on this node: the signed-head exchange after every session, on
both sides, and the heads this node holds for its peers.

After every session this node requested (PSI, intersection-sum, a
federation hop or release: whatever protocol a :class:`PeerClient` carried,
see its ``after_session`` hook), it takes a signed head of its audit log (a
checkpoint over everything so far, the session included) and calls the
peer's ``WitnessHeads`` with it; the peer checks it, stores it and answers
with its own head, which this node checks and stores. Both heads come with
the sender's audit key bound by its certificate from the federation CA
(:class:`~psi_share.audit.witness.KeyBinding`), checked against our CA and
CRL before anything is stored. ``GetWitnessedHeads`` hands a peer the heads
of *its* log that we hold, for its ``audit verify --witnesses``.

Who learns what: each side learns the other's entry count, head hash and
time (how busy its log is) and its audit public key; nothing else. The
exchange is audit metadata: the egress records it like every message.
Witnessing needs the audit log and mutual TLS; a node without either
neither asks nor answers.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable

from ...audit.log import AuditLog
from ...audit.witness import MAX_HEADS_RETURNED, KeyBinding, SignedHead, bind_key
from ...errors import PsiShareError, Refused, RemoteProtocolError
from ...pki import NodeTls
from ...protocols import PROTOCOL_VERSION
from ...store import Store
from ...store.witnesses import add_head, held_heads, peer_keys, record_peer_key
from ...transport.client import PeerClient
from ...v1 import node_pb2 as pb

log = logging.getLogger("psi_share.witness")


class Witness:
    """Both sides of head witnessing for the node called ``name``.

    ``tls`` returns the node's checked TLS material (None in plaintext mode);
    ``audit_log`` is None when the audit is disabled.
    """

    def __init__(self, *, name: str, store: Store, audit_log: AuditLog | None, tls: Callable[[], NodeTls | None],
                 clock: Callable[[], float]) -> None:
        self.name = name
        self._store = store
        self._log = audit_log
        self._tls = tls
        self._clock = clock
        self._bindings: dict[tuple[str, bytes], KeyBinding] = {}

    def unavailable(self) -> str:
        """Why this node cannot witness ("" when it can)."""
        if self._log is None:
            return f"node {self.name} keeps no audit log ([audit] enabled = false)"
        if self._tls() is None:
            return f"node {self.name} runs without TLS (--insecure): audit keys cannot be bound to certificates"
        return ""

    def _ready(self) -> tuple[AuditLog, NodeTls]:
        tls = self._tls()
        if self._log is None or tls is None or tls.ca_cert is None:
            raise Refused("FAILED_PRECONDITION", f"{self.unavailable() or 'no federation CA loaded'}: it does not witness")
        return self._log, tls

    def our_head(self) -> tuple[SignedHead, KeyBinding]:
        """A signed head over everything logged so far, and our certificate's binding of its key."""
        audit_log, tls = self._ready()
        head = SignedHead.from_checkpoint(audit_log.signed_head())
        cache = (head.key, tls.cert_pem)
        if cache not in self._bindings:  # one signature per key and certificate
            self._bindings[cache] = bind_key(self.name, head.key, tls.cert_pem, tls.key_pem)
        return head, self._bindings[cache]

    def accept(self, peer: str, head_message: pb.SignedHead, binding_message: pb.AuditKeyBinding) -> SignedHead:
        """Check ``peer``'s head and its key binding, then store both.

        The head must name ``peer`` (the node its certificate names on this
        connection), its key must be bound by a certificate from our CA
        naming ``peer``, valid now and not revoked, and its signature must
        verify. RemoteProtocolError otherwise: nothing is stored.
        """
        head = SignedHead.from_message(head_message)
        binding = KeyBinding.from_message(binding_message)
        if head.node != peer or binding.node != peer:
            raise RemoteProtocolError("the signed head or its key binding names another node than the caller")
        if binding.key != head.key:
            raise RemoteProtocolError("the key binding is for another audit key than the head's")
        _, tls = self._ready()
        now = self._clock()
        cert = binding.check(tls.ca_cert, now=dt.datetime.fromtimestamp(now, dt.timezone.utc),  # type: ignore[arg-type]
                             revoked=tls.crl.is_revoked if tls.crl is not None else None)
        head.verify()
        serial = format(cert.serial_number, "x")
        before = record_peer_key(self._store, peer, head.key, binding.certificate, binding.sig, serial, now=now)
        if before is not None:
            log.warning("witness: peer %s now signs its audit log with key %s (before: %s), bound by its certificate "
                        "%s; both keys stay on record", peer, head.key, before, serial)
        forks = add_head(self._store, peer, head.key, head.count, head.head, head.time_ns, head.sig, now=now)
        if forks:
            log.error("witness: peer %s signed two different heads for entry count %d under one audit key: its log "
                      "forked (both heads stay on record)", peer, head.count)
        return head

    # -- responder ---------------------------------------------------------------

    def exchange_heads(self, peer: str, request: pb.WitnessHeadsRequest) -> pb.WitnessHeadsResponse:
        """Store ``peer``'s head, answer with ours (taken after it was stored, so it covers that)."""
        self._ready()
        if not request.HasField("head") or not request.HasField("binding"):
            raise RemoteProtocolError("WitnessHeads carries no head or no key binding")
        self.accept(peer, request.head, request.binding)
        head, binding = self.our_head()
        return pb.WitnessHeadsResponse(protocol_version=PROTOCOL_VERSION, head=head.to_message(),
                                       binding=binding.to_message())

    def held_for(self, peer: str) -> pb.GetWitnessedHeadsResponse:
        """The heads of ``peer``'s own log we hold (the latest per audit key), with their bindings."""
        heads = held_heads(self._store, peer, per_key=MAX_HEADS_RETURNED)
        keys = {k.key: k for k in peer_keys(self._store, peer)}
        return pb.GetWitnessedHeadsResponse(
            protocol_version=PROTOCOL_VERSION,
            heads=[SignedHead(peer, h.count, h.head, h.time_ns, h.key, h.signature,
                              int(h.received_at * 1e9)).to_message() for h in heads],
            bindings=[KeyBinding(peer, k, keys[k].certificate, keys[k].binding).to_message()
                      for k in sorted({h.key for h in heads}) if k in keys],
        )

    # -- requester ---------------------------------------------------------------

    def exchange(self, client: PeerClient) -> None:
        """After a session with ``client.peer``: hand it our head, keep its own.

        The session is already done: a failure here is logged, never raised.
        """
        if self.unavailable():
            return
        try:
            head, binding = self.our_head()
            reply = client.witness_heads(pb.WitnessHeadsRequest(
                protocol_version=PROTOCOL_VERSION, head=head.to_message(), binding=binding.to_message()))
            if not reply.HasField("head") or not reply.HasField("binding"):
                raise RemoteProtocolError("WitnessHeads answer carries no head or no key binding")
            theirs = self.accept(client.peer, reply.head, reply.binding)
        except (PsiShareError, sqlite3.Error, OSError) as exc:
            log.warning("witness: signed audit heads not exchanged with %s: %s", client.peer, exc)
            return
        log.debug("witness: %s holds our head %s; we hold its head %s", client.peer, head.text, theirs.text)
