"""The initiator's side of a federation total: sign the route, gather every
member's key (FederationJoin), start the pass, decrypt the final the last
member signed, release the total.

The initiator is a client only: the pass goes around the ring as a chain of
calls, each member calling its next hop, and the last member's signed final
travels back up that chain. So ``psi-share federation total`` works from a
CLI process while the node's ``serve`` process runs beside it. A failure
anywhere (a member down, a refusal) comes back naming the hop; the run is
recorded failed and nothing is released. A rerun has a new run id, route and
key.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from ...crypto.paillier import PrivateKey
from ...errors import LocalProtocolError, PsiShareError, RemoteProtocolError
from ...protocols import PROTOCOL_VERSION
from ...protocols.federation_route import MIN_CONTRIBUTORS, ROUTE_LIFETIME_SECONDS, Route, Signed
from ...protocols.federation_total import FederationInitiator, FederationResult, encode_total
from ...store import FederationRunRecord
from ...v1 import node_pb2 as pb
from .context import FederationContext
from .contributor import route_parameters
from .figures import contributed_figure, difference

log = logging.getLogger("psi_share.federation")


@dataclass(frozen=True)
class FederationOutcome:
    run_id: str
    metric: str
    total: int
    contributors: int
    participants: tuple[str, ...]
    release_failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class TotalRequest:
    metric: str
    participants: tuple[str, ...]
    min_contributors: int | None = None
    key_bits: int | None = None
    job_run_id: str | None = None


class FederationRunner:
    def __init__(self, ctx: FederationContext) -> None:
        self._ctx = ctx
        self.config, self._store, self._peer_client = ctx.config, ctx.store, ctx.peer_client
        self._clock, self._random = ctx.clock, ctx.random_bytes

    def _members(self, request: TotalRequest) -> tuple[tuple[str, ...], int]:
        """The ring (this node first, then the others in the order given) and k."""
        name = self.config.name
        if name not in request.participants:
            raise PsiShareError(f"the participants of a federation total must include this node ({name})")
        twice = sorted({p for p in request.participants if request.participants.count(p) > 1})
        if twice:
            raise PsiShareError(f"the participants name {', '.join(twice)} more than once")
        members = (name, *(p for p in request.participants if p != name))
        for p in members[1:]:
            self._store.peer(p)  # NotFound naming it, before anything is sent
        k = max(self.config.federation.min_contributors, request.min_contributors or 0, MIN_CONTRIBUTORS)
        if len(members) < k:
            raise LocalProtocolError(f"{len(members)} participants cannot reach the minimum of {k} contributors")
        earlier = difference(self._store, metric=request.metric, members=members, k=k)
        if earlier is not None:
            raise LocalProtocolError(earlier.local(name, request.metric))
        return members, k

    def run(self, request: TotalRequest) -> FederationOutcome:
        members, k = self._members(request)
        self._store.figure(request.metric)  # NotFound before a key is made
        creds = self._ctx.credentials()
        key = PrivateKey.generate(request.key_bits or self.config.paillier.key_bits, self._random)
        now = int(self._clock())
        route = Route(
            run_id=uuid.UUID(bytes=self._random(16), version=4).hex, metric=request.metric, members=members,
            min_contributors=k, public_key_bytes=key.public.encode(), issued_at=now,
            expires_at=now + ROUTE_LIFETIME_SECONDS,
        )
        figure = contributed_figure(self._store, route, self._ctx.figure_noise)
        initiator = FederationInitiator(route=route, signer=creds.signer, trust=creds.trust, key=key, figure=figure,
                                        random_bytes=self._random,
                                        is_known=self._ctx.is_known)
        self._store.start_federation_run(FederationRunRecord(
            id=route.run_id, role="initiator", metric=route.metric, initiator=route.initiator, participants=members,
            min_contributors=k, job_run_id=request.job_run_id, status="running", started_at=self._clock(),
        ))
        try:
            self._join_all(initiator, request.job_run_id or "")
            result = self._pass(initiator, request.job_run_id or "")
        except BaseException as exc:
            self._store.finish_federation_run(route.run_id, "initiator", "failed", now=self._clock(), error=str(exc)[:500])
            raise
        failures = self._release(route, result)
        self._store.finish_federation_run(
            route.run_id, "initiator", "done", now=self._clock(), contributors=result.contributors, total=result.total,
            error="; ".join(f"release to {p} failed" for p in failures),
        )
        log.info("federation run %s (metric %s): %d contributors", route.run_id, route.metric, result.contributors)
        return FederationOutcome(route.run_id, route.metric, result.total, result.contributors, members, tuple(failures))

    def _join_all(self, initiator: FederationInitiator, job_id: str) -> None:
        route = initiator.route
        request = pb.FederationJoinRequest(protocol_version=PROTOCOL_VERSION, run_id=route.run_id,
                                           signed_route=initiator.signed_route.to_message(), job_id=job_id)
        parameters = route_parameters(route)
        for member in route.members[1:]:
            with self._peer_client(member) as client:
                reply = client.federation_join(request, parameters)
            if not reply.HasField("member_key"):
                raise RemoteProtocolError(f"{member} joined run {route.run_id} without a signed key")
            initiator.on_joined(member, Signed.from_message(reply.member_key))

    def _pass(self, initiator: FederationInitiator, job_id: str) -> FederationResult:
        route = initiator.route
        first, ciphertext, keys = initiator.first_pass()
        request = pb.FederationPassRequest(
            protocol_version=PROTOCOL_VERSION, run_id=route.run_id, ciphertext=ciphertext, job_id=job_id,
            signed_route=initiator.signed_route.to_message(), member_keys=[k.to_message() for k in keys],
        )
        with self._peer_client(first) as client:
            reply = client.federation_pass(request, route_parameters(route, 1))
        if not reply.HasField("final"):
            raise RemoteProtocolError(f"{first} answered the pass of run {route.run_id} without a signed final")
        return initiator.on_final(Signed.from_message(reply.final))

    def _release(self, route: Route, result: FederationResult) -> list[str]:
        failures = []
        for peer in route.members[1:]:
            try:
                with self._peer_client(peer) as client:
                    client.federation_release(route.run_id, route.metric, result.contributors,
                                              encode_total(result.total), result.total)
            except PsiShareError as exc:
                log.warning("could not release federation run %s to %s: %s", route.run_id, peer, exc)
                failures.append(peer)
        return failures

