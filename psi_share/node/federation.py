"""Federation totals on a node: the contributor's hop and the initiator's run.

See :mod:`psi_share.protocols.federation_total` for the protocol and who
learns what. A contributor adds the figure it holds for the run's metric
(``psi-share federation figure METRIC VALUE``) and calls the next hop
itself; a failure anywhere in the ring travels back up the chain of calls to
the initiator, which records the run as failed. A rerun starts from scratch
with a new run id and a new key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..crypto.paillier import PrivateKey, PublicKey, decode_ciphertext, encode_ciphertexts
from ..errors import NotFound, PeerRefused, PeerUnavailable, PsiShareError, Refused, RemoteProtocolError
from ..protocols import PROTOCOL_VERSION
from ..protocols.federation_total import (
    FederationInitiator,
    FederationPass,
    check_pass,
    contribute,
    decode_total,
    encode_total,
)
from ..store import FederationRunRecord, Store
from ..transport.client import PeerClient
from ..v1 import node_pb2 as pb
from .config import NodeConfig
from .policy import AccessRequest, Policy

log = logging.getLogger("psi_share.federation")


@dataclass(frozen=True)
class FederationOutcome:
    run_id: str
    metric: str
    total: int
    contributors: int
    participants: tuple[str, ...]
    release_failures: tuple[str, ...] = ()


def to_message(p: FederationPass) -> pb.FederationPassRequest:
    return pb.FederationPassRequest(
        protocol_version=PROTOCOL_VERSION, run_id=p.run_id, metric=p.metric, initiator=p.initiator,
        public_key=p.public_key.encode(), ciphertext=encode_ciphertexts(p.public_key, [p.ciphertext]),
        contributors=p.contributors, route=list(p.route), min_contributors=p.min_contributors, job_id=p.job_id,
    )


def from_message(m: pb.FederationPassRequest) -> FederationPass:
    key = PublicKey.decode(m.public_key)
    return FederationPass(
        run_id=m.run_id, metric=m.metric, initiator=m.initiator, public_key=key,
        ciphertext=decode_ciphertext(key, m.ciphertext), contributors=m.contributors, route=tuple(m.route),
        min_contributors=m.min_contributors, job_id=m.job_id,
    )


class FederationService:
    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        policy: Policy,
        peer_client: Callable[[str], PeerClient],
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.config = config
        self._store = store
        self._policy = policy
        self._peer_client = peer_client
        self._clock = clock
        self._random = random_bytes

    # -- contributor ---------------------------------------------------------

    def on_pass(self, peer: str, message: pb.FederationPassRequest) -> tuple[bytes, int]:
        """Add our figure and pass on; returns the final ciphertext and count."""
        name = self.config.name
        announced = message.contributors + 1 + len(message.route)
        self._policy.check(peer, AccessRequest(protocol="federation-total", dataset="", metric=message.metric, participants=announced))
        p = from_message(message)
        check_pass(p, receiver=name, own_minimum=self.config.federation.min_contributors)
        if p.contributors == 1 and peer != p.initiator:
            raise RemoteProtocolError(f"{peer} passed a first hop on behalf of another initiator")
        if p.route:
            try:
                self._store.peer(p.route[0])
            except NotFound:
                raise Refused("FAILED_PRECONDITION", f"the next hop the route names is not a known peer of {name}") from None
        try:
            self._store.federation_run(p.run_id, "contributor")
        except NotFound:
            pass
        else:
            raise Refused("FAILED_PRECONDITION", f"{name} already contributed to the federation run this pass names")
        now = self._clock()
        self._store.start_federation_run(
            FederationRunRecord(
                id=p.run_id, role="contributor", metric=p.metric, initiator=p.initiator,
                # Earlier hops are not named to us: only the initiator, us and the rest of the route.
                participants=(p.initiator, name, *p.route),
                min_contributors=p.min_contributors, job_run_id=None, status="running", started_at=now,
            )
        )
        try:
            out = contribute(p, self._store.figure(p.metric), self._random)
            if p.route:
                nxt = p.route[0]
                try:
                    with self._peer_client(nxt) as client:
                        ciphertext, contributors = client.federation_pass(to_message(out))
                except (PeerUnavailable, PeerRefused) as exc:
                    raise Refused("ABORTED", f"the federation run stopped at {name}: {exc}") from None
            else:
                ciphertext, contributors = encode_ciphertexts(out.public_key, [out.ciphertext]), out.contributors
        except Exception as exc:
            self._store.finish_federation_run(p.run_id, "contributor", "failed", now=self._clock(), error=str(exc)[:500])
            raise
        self._store.finish_federation_run(p.run_id, "contributor", "passed", now=self._clock())
        log.info("contributed to federation run %s (metric %s) for %s", p.run_id, p.metric, p.initiator)
        return ciphertext, contributors

    def on_release(self, peer: str, message: pb.FederationReleaseRequest) -> None:
        try:
            run = self._store.federation_run(message.run_id, "contributor")
        except NotFound:
            raise Refused("NOT_FOUND", f"{self.config.name} did not contribute to the federation run this release names") from None
        if run.initiator != peer or run.metric != message.metric:
            raise Refused("PERMISSION_DENIED", f"the federation run this release names was not initiated by {peer}")
        total = decode_total(message.total, message.contributors)
        self._store.finish_federation_run(
            run.id, "contributor", "released", now=self._clock(), contributors=message.contributors, total=total
        )

    # -- initiator -------------------------------------------------------------

    def run_total(
        self,
        metric: str,
        participants: Sequence[str],
        *,
        min_contributors: int | None = None,
        key_bits: int | None = None,
        job_run_id: str | None = None,
    ) -> FederationOutcome:
        name = self.config.name
        contributors = [p for p in participants if p != name]
        if name not in participants:
            raise PsiShareError(f"the participants of a federation total must include this node ({name})")
        for p in contributors:
            self._store.peer(p)
        k = max(self.config.federation.min_contributors, min_contributors or 0)
        figure = self._store.figure(metric)
        key = PrivateKey.generate(key_bits or self.config.paillier.key_bits, self._random)
        run_id = uuid.UUID(bytes=self._random(16), version=4).hex
        initiator = FederationInitiator(
            run_id=run_id, metric=metric, initiator=name, contributors=contributors, figure=figure, key=key,
            min_contributors=k, random_bytes=self._random, job_id=job_run_id or "",
        )
        self._store.start_federation_run(
            FederationRunRecord(
                id=run_id, role="initiator", metric=metric, initiator=name, participants=(name, *contributors),
                min_contributors=k, job_run_id=job_run_id, status="running", started_at=self._clock(),
            )
        )
        try:
            first, p = initiator.first_pass()
            with self._peer_client(first) as client:
                ciphertext, count = client.federation_pass(to_message(p))
            result = initiator.on_returned(ciphertext, count)
        except BaseException as exc:
            self._store.finish_federation_run(run_id, "initiator", "failed", now=self._clock(), error=str(exc)[:500])
            raise
        failures = []
        for peer in contributors:
            try:
                with self._peer_client(peer) as client:
                    client.federation_release(run_id, metric, result.contributors, encode_total(result.total), result.total)
            except PsiShareError as exc:
                log.warning("could not release federation run %s to %s: %s", run_id, peer, exc)
                failures.append(peer)
        self._store.finish_federation_run(
            run_id, "initiator", "done", now=self._clock(), contributors=result.contributors, total=result.total,
            error="; ".join(f"release to {p} failed" for p in failures),
        )
        log.info("federation run %s (metric %s): %d contributors", run_id, metric, result.contributors)
        return FederationOutcome(run_id, metric, result.total, result.contributors, (name, *contributors), tuple(failures))
