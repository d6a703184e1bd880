"""A member's side of federation totals: join a signed route, add our figure
once for our previous hop, call our next hop, record the released total.

Every refusal is a status naming what was wrong, with a reason slug the
audit log records beside it (``Refused.reason``; the servicer's ``_rpc``
writes the entry). A member keeps the run's mask secret in memory between
its join and its pass, at most until the route expires; a run it joined
whose pass never came is recorded ``expired`` then.
"""

from __future__ import annotations

import logging
import threading

from ...errors import ConfigError, NotFound, PeerRefused, PeerUnavailable, Refused, RemoteProtocolError
from ...protocols import PROTOCOL_VERSION
from ...protocols.federation_route import Route, RouteRejected, RouteRules, Signed
from ...protocols.federation_total import FederationContributor, decode_total
from ...store import FederationRunRecord
from ...v1 import node_pb2 as pb
from ..policy import AccessRequest
from .context import FederationContext
from .credentials import Credentials, refusal
from .figures import contributed_figure, difference

log = logging.getLogger("psi_share.federation")

MAX_PENDING_RUNS = 256  # joined, pass not yet arrived


def route_parameters(route: Route, position: int | None = None) -> dict[str, object]:
    """What the audit log keeps with a join or pass we send: what the receiver may read in
    it besides ciphertexts and keys. The route's text travels inside signed bytes, where
    the egress does not look: its names (checked by ``check_route``) are recorded here."""
    out: dict[str, object] = {"metric": route.metric, "members": list(route.members),
                              "min_contributors": route.min_contributors,
                              "key_bits": (len(route.public_key_bytes) - 1) * 8}
    if position is not None:
        out["hop"] = position
    return out


class FederationMember:
    def __init__(self, ctx: FederationContext) -> None:
        self._ctx = ctx
        self.config, self._store, self._policy = ctx.config, ctx.store, ctx.policy
        self._clock, self._random = ctx.clock, ctx.random_bytes
        self._pending: dict[str, FederationContributor] = {}
        self._lock = threading.Lock()

    def _creds(self) -> Credentials:
        try:
            return self._ctx.credentials()
        except ConfigError as exc:
            raise Refused("FAILED_PRECONDITION", f"{self.config.name} cannot take part in federation totals: {exc}") from None

    # -- join ------------------------------------------------------------------

    def on_join(self, peer: str, message: pb.FederationJoinRequest) -> pb.FederationSigned:
        """Check the initiator's route; answer with our signed mask key for it."""
        name = self.config.name
        if not message.HasField("signed_route"):
            raise Refused("FAILED_PRECONDITION", "the join carries no route signed by its initiator",
                          reason="unsigned-route")
        creds = self._creds()
        now = self._clock()
        rules = RouteRules(name, self.config.federation.min_contributors, self._ctx.is_known, now)
        try:
            joined = FederationContributor(signed_route=Signed.from_message(message.signed_route), caller=peer,
                                           trust=creds.trust, rules=rules, signer=creds.signer, random_bytes=self._random)
            route = joined.route
            if message.run_id != route.run_id:
                raise RouteRejected("malformed", "the join's run id is not its signed route's")
        except RouteRejected as exc:
            raise refusal(exc) from None
        self._policy.check(peer, AccessRequest(protocol="federation-total", dataset="", metric=route.metric,
                                               participants=len(route.members)))
        k = max(route.min_contributors, self.config.federation.min_contributors)
        earlier = difference(self._store, metric=route.metric, members=route.members, k=k)
        if earlier is not None:
            raise Refused("FAILED_PRECONDITION", earlier.refusal(name), reason="difference")
        with self._lock:
            self._expire(now)
            self._refuse_known_run(route.run_id)
            if len(self._pending) >= MAX_PENDING_RUNS:
                raise Refused("RESOURCE_EXHAUSTED", f"{name} holds {MAX_PENDING_RUNS} joined federation runs "
                                                    "whose pass has not come; try again later")
            self._store.start_federation_run(FederationRunRecord(
                id=route.run_id, role="contributor", metric=route.metric, initiator=route.initiator,
                participants=route.members, min_contributors=route.min_contributors, job_run_id=None,
                status="joined", started_at=now,
            ))
            self._pending[route.run_id] = joined
        log.info("joined federation run %s (metric %s, %d members) for %s", route.run_id, route.metric,
                 len(route.members), peer)
        return joined.member_key.to_message()

    def _refuse_known_run(self, run_id: str) -> None:
        if run_id in self._pending:
            raise Refused("FAILED_PRECONDITION", f"{self.config.name} already joined this federation run",
                          reason="replay")
        try:
            run = self._store.federation_run(run_id, "contributor")
        except NotFound:
            return
        raise Refused("FAILED_PRECONDITION", f"{self.config.name} already took part in this federation run "
                                             f"({run.status}); a run id is used once", reason="replay")

    def _expire(self, now: float) -> None:
        """Forget runs whose route expired before their pass came (lock held)."""
        for run_id in [r for r, c in self._pending.items() if c.route.expires_at < now]:
            del self._pending[run_id]
            self._store.finish_federation_run(run_id, "contributor", "expired", now=now,
                                              error="the route expired before the pass came")

    # -- pass --------------------------------------------------------------------

    def on_pass(self, peer: str, message: pb.FederationPassRequest) -> pb.FederationSigned:
        """Add our figure and call our next hop; returns the last member's signed final."""
        name, run_id = self.config.name, message.run_id
        if not message.HasField("signed_route"):
            raise Refused("FAILED_PRECONDITION", f"the pass carries no route signed by its initiator: {name} speaks "
                          "federation-total route version 2 only (a version-1 pass, with an unsigned route and a "
                          "contributor count of the sender's choosing, is refused)", reason="unsigned-route")
        with self._lock:
            joined = self._pending.get(run_id)
        if joined is None:
            self._refuse_known_run(run_id)
            raise Refused("FAILED_PRECONDITION", f"{name} has not joined this federation run: a pass comes "
                                                 "after its initiator's join", reason="not-joined")
        try:
            joined.check_pass(peer, Signed.from_message(message.signed_route))
        except RouteRejected as exc:
            raise refusal(exc) from None
        with self._lock:
            if self._pending.pop(run_id, None) is not joined:
                raise Refused("FAILED_PRECONDITION", f"{name} already took its pass of this run", reason="replay")
        try:
            final = self._add_and_forward(joined, message)
        except Exception as exc:
            self._store.finish_federation_run(run_id, "contributor", "failed", now=self._clock(), error=str(exc)[:500])
            if isinstance(exc, RouteRejected):
                raise refusal(exc) from None
            raise
        self._store.finish_federation_run(run_id, "contributor", "passed", now=self._clock())
        log.info("contributed to federation run %s (metric %s) for %s", run_id, joined.route.metric, joined.route.initiator)
        return final

    def _add_and_forward(self, joined: FederationContributor, message: pb.FederationPassRequest) -> pb.FederationSigned:
        route, name = joined.route, self.config.name
        figure = contributed_figure(self._store, route, self._ctx.figure_noise)
        passed = joined.add([Signed.from_message(k) for k in message.member_keys], message.ciphertext, figure,
                            now=self._clock())
        if passed.next_hop is None:
            assert passed.final is not None
            return passed.final.to_message()
        request = pb.FederationPassRequest(
            protocol_version=PROTOCOL_VERSION, run_id=route.run_id, ciphertext=passed.ciphertext,
            job_id=message.job_id, signed_route=message.signed_route, member_keys=message.member_keys,
        )
        try:
            with self._ctx.peer_client(passed.next_hop) as client:
                reply = client.federation_pass(request, route_parameters(route, route.position(passed.next_hop)))
            if not reply.HasField("final"):
                raise RemoteProtocolError(f"{passed.next_hop} answered the pass without the last member's signed final")
        except (PeerUnavailable, RemoteProtocolError) as exc:  # PeerRefused is a RemoteProtocolError
            detail = exc if isinstance(exc, (PeerUnavailable, PeerRefused)) else f"{passed.next_hop}: {exc}"
            raise Refused("ABORTED", f"the federation run stopped at {name}: {detail}",
                          reason="next-hop") from None
        return reply.final

    # -- release -------------------------------------------------------------------

    def on_release(self, peer: str, message: pb.FederationReleaseRequest) -> None:
        try:
            run = self._store.federation_run(message.run_id, "contributor")
        except NotFound:
            raise Refused("NOT_FOUND", f"{self.config.name} did not contribute to the federation run this release names") from None
        if run.initiator != peer or run.metric != message.metric:
            raise Refused("PERMISSION_DENIED", f"the federation run this release names was not initiated by {peer}")
        if run.status != "passed" or message.contributors != len(run.participants):
            raise Refused("FAILED_PRECONDITION", f"the federation run this release names is {run.status} here, or the "
                                                 "release counts other members than its route: nothing to release")
        total = decode_total(message.total, message.contributors)
        self._store.finish_federation_run(
            run.id, "contributor", "released", now=self._clock(), contributors=message.contributors, total=total
        )
