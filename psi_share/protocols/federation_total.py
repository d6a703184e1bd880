"""Federation total: a Paillier secure sum of one figure per lab, along a signed route.

The initiator fixes the run in a **route** it signs with the key of its
federation certificate (run id, metric, the ring of n distinct members with
itself first, k, its fresh Paillier key, an expiry; see
:mod:`.federation_route`). Every other member **joins**: it checks the route
and answers with a fresh X25519 key, signed and bound to the route. Then the
ciphertext goes once around the ring, each member calling the next itself::

    initiator A          B                    C                    D (last)
      join(route) ---->  checks, key_B
      join(route) ----------------------->   checks, key_C
      join(route) -------------------------------------------->   checks, key_D
      Enc(x_A+M_A) ----> pass came from A?
                         + (x_B+M_B), rerand -> from B? + (x_C+M_C) -> from C? + (x_D+M_D)
                                                                      signs Final(Enc(total))
      <-------- the signed final travels back up the chain of calls, unchanged -----
      checks D's signature, decrypts, checks the bound, releases the total to B, C, D

``M_i`` are pairwise masks that cancel in the total (:func:`.federation_route.mask`).

Who learns what
---------------
* Every member learns the total and n, the number of members (all of them
  contributed: there is no partial total).
* A member (not the initiator) sees ciphertexts under a key it does not
  hold, each re-randomized by the previous hop, and the signed route and
  keys (who takes part): nothing about any figure.
* The initiator decrypts one value, the final ciphertext signed by the
  route's last member. It holds every member's masked figure; the masks
  cancel only when every member's contribution is in it.
* Collusion: a coalition learns member X's figure only when it holds every
  other member of the run (n - 1 >= k - 1 members, the initiator among
  them), which is what the total itself reveals to n - 1 colluders. A smaller
  coalition, even one holding intermediate ciphertexts and the key, decrypts
  only sums masked by masks between honest members. (Without the masks the
  initiator and the member right after X would read X's figure by themselves,
  whatever k is.)
* Two runs over member sets that differ by one lab reveal that lab's figure
  by difference; members refuse such a run while their figure is unchanged
  (see ``node/federation``), and figures may carry noise (the DP seam there).

Every check a member makes, and what it refuses with, is in
:func:`.federation_route.check_route` and the state machines below. This
module has no I/O; randomness, clocks and the revocation list are passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..crypto.paillier import MAX_VALUE, PrivateKey, PublicKey, decode_ciphertext, encode_ciphertexts
from ..errors import LocalProtocolError, OutOfOrder, RemoteProtocolError
from . import ProtocolSpec, register_protocol
from .federation_route import (
    MAX_PARTICIPANTS,
    MIN_CONTRIBUTORS,
    MemberKey,
    Route,
    RouteRejected,
    RouteRules,
    Signed,
    Signer,
    Trust,
    check_route,
    digest,
    final_body,
    mask,
    mask_public,
    new_mask_secret,
    open_final,
    open_member_key,
    open_member_keys,
    open_route,
)

SPEC = register_protocol(
    ProtocolSpec(
        name="federation-total",
        asks="what is the total of one figure across all labs?",
        requester_learns="the total and the number of contributors, only when at least k (>= 3) labs contributed",
        responder_learns="the total and the number of contributors (nothing about any other lab's figure)",
    )
)

TOTAL_BYTES = 16  # 64 figures below 2^63 sum below 2^69

__all__ = [
    "MAX_PARTICIPANTS", "MIN_CONTRIBUTORS", "TOTAL_BYTES", "FederationContributor", "FederationInitiator",
    "FederationResult", "Passed", "check_figure", "check_message", "decode_total", "encode_total",
]


def check_figure(value: int) -> int:
    """A figure as it goes into a run: an integer of absolute value at most
    2^63 - 1. Exact figures are never negative; a noised one may be (DP shares
    are signed), and the masks work mod n either way."""
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_VALUE:
        raise LocalProtocolError(f"a contributed figure must be an integer of absolute value at most {MAX_VALUE}")
    return value


def _add_masked(key: PublicKey, c: int, masked: int, random_bytes: Callable[[int], bytes]) -> int:
    """Enc(m + masked) from Enc(m), re-randomized: masked is any residue mod n."""
    return key.rerandomize((1 + masked * key.n) * c % key.n2, random_bytes)


@dataclass(frozen=True)
class FederationResult:
    total: int
    contributors: int


class _Step(enum.Enum):
    NEW = "new"
    JOINED = "joined"
    PASSED = "passed"
    DONE = "done"


class FederationInitiator:
    """The initiator of one run: signs the route, owns the run's fresh key
    (the only decrypter), collects the members' keys, starts the pass and
    decrypts what the last member signed."""

    def __init__(
        self,
        *,
        route: Route,
        signer: Signer,
        trust: Trust,
        key: PrivateKey,
        figure: int,
        random_bytes: Callable[[int], bytes],
        is_known: Callable[[str], bool],
    ) -> None:
        if route.initiator != signer.name or route.public_key_bytes != key.public.encode():
            raise LocalProtocolError("the route must name this node first and carry this run's key")
        try:
            check_route(route, RouteRules(signer.name, route.min_contributors, is_known, trust.clock()))
        except RouteRejected as exc:
            raise LocalProtocolError(str(exc)) from None
        self.route, self._key, self._figure, self._random = route, key, check_figure(figure), random_bytes
        self._trust = trust
        self.signed_route = signer.sign("route", route.encode())
        self.route_sha256 = digest(self.signed_route)
        self._secret = new_mask_secret(random_bytes)
        own = MemberKey(route.run_id, self.route_sha256, signer.name, mask_public(self._secret))
        self._member_keys: dict[str, Signed] = {signer.name: signer.sign("member key", own.encode())}
        self._mask_keys: dict[str, bytes] = {signer.name: own.mask_key}
        self._step = _Step.NEW

    def _expect(self, step: _Step, event: str) -> None:
        if self._step is not step:
            raise OutOfOrder(f"initiator cannot handle {event!r} in state {self._step.value}")

    def on_joined(self, member: str, member_key: Signed) -> None:
        """A member's signed key, checked to be that member's for this route."""
        self._expect(_Step.NEW, "joined")
        if member not in self.route.members[1:] or member in self._member_keys:
            raise RemoteProtocolError(f"{member} is not a member still to join run {self.route.run_id}")
        key = open_member_key(member_key, member, self.route, self.route_sha256, self._trust)
        self._member_keys[member], self._mask_keys[member] = member_key, key

    def first_pass(self) -> tuple[str, bytes, list[Signed]]:
        """(first hop, Enc(our masked figure), every member's signed key in route order)."""
        self._expect(_Step.NEW, "start")
        missing = [m for m in self.route.members if m not in self._member_keys]
        if missing:
            raise LocalProtocolError(f"members {', '.join(missing)} have not joined run {self.route.run_id}")
        self._step = _Step.PASSED
        pk = self._key.public
        masked = (self._figure + mask(self.route, self.route_sha256, self.route.initiator, self._secret,
                                      self._mask_keys, pk.n)) % pk.n
        c = _add_masked(pk, 1, masked, self._random)  # Enc(masked) = (1 + masked*n) * r^n
        keys = [self._member_keys[m] for m in self.route.members]
        return self.route.members[1], encode_ciphertexts(pk, [c]), keys

    def on_final(self, final: Signed) -> FederationResult:
        """Decrypt the total, only from the final the route's last member signed."""
        self._expect(_Step.PASSED, "final")
        self._step = _Step.DONE
        ciphertext = open_final(final, self.route, self.route_sha256, self._trust)
        n, key_n = len(self.route.members), self._key.public.n
        total = self._key.decrypt(decode_ciphertext(self._key.public, ciphertext))
        if total > key_n // 2:  # a negative sum (noised figures may be below 0)
            total -= key_n
        if abs(total) > n * MAX_VALUE:
            raise RemoteProtocolError(
                f"the final ciphertext of run {self.route.run_id} is not a sum of {n} figures (out of bounds): "
                "a member dropped a contribution or added something else"
            )
        # A total of non-negative figures is never below 0: clamping one that noise
        # took there is post-processing by a public fact.
        return FederationResult(max(total, 0), n)


@dataclass(frozen=True)
class Passed:
    """What a member does after adding its figure: call ``next_hop`` with
    ``ciphertext``, or, as the last member, answer with ``final``."""

    next_hop: str | None
    ciphertext: bytes
    final: Signed | None


class FederationContributor:
    """One member's part in one run (any member but the initiator): it joins
    the route, then adds its figure exactly once, for its previous hop only."""

    def __init__(
        self,
        *,
        signed_route: Signed,
        caller: str,
        trust: Trust,
        rules: RouteRules,
        signer: Signer,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.route = open_route(signed_route, trust, rules)
        if caller != self.route.initiator:
            raise RouteRejected("not-initiator", f"{caller} asked {rules.me} to join a route that its initiator "
                                                 f"{self.route.initiator} signed: only the initiator asks")
        if self.route.position(rules.me) == 0:
            raise RouteRejected("not-a-member", f"{rules.me} is the route's initiator, not a member to join it")
        self.signed_route, self.route_sha256 = signed_route, digest(signed_route)
        self.me, self._trust, self._signer, self._random = rules.me, trust, signer, random_bytes
        self._secret = new_mask_secret(random_bytes)
        own = MemberKey(self.route.run_id, self.route_sha256, rules.me, mask_public(self._secret))
        self.member_key = signer.sign("member key", own.encode())
        self._mask_key = own.mask_key
        self._step = _Step.JOINED

    @property
    def previous_hop(self) -> str:
        return self.route.previous(self.me)

    def check_pass(self, caller: str, signed_route: Signed) -> None:
        """Before anything is consumed: the pass is for the route we joined and
        comes from our previous hop (the caller is who its certificate names)."""
        if signed_route.body != self.signed_route.body:
            raise RouteRejected("not-joined", f"the pass carries another route than the one {self.me} joined for "
                                              "this run")
        if caller != self.previous_hop:
            raise RouteRejected("previous-hop", f"the pass came from {caller}, but {self.me}'s previous hop on the "
                                                f"signed route is {self.previous_hop}")

    def add(self, member_keys: Sequence[Signed], ciphertext: bytes, figure: int, *, now: float) -> Passed:
        """Add our masked figure, re-randomize; forward, or sign the final."""
        if self._step is not _Step.JOINED:
            raise RouteRejected("replay", f"{self.me} already added its figure to this run")
        self._step = _Step.PASSED
        if self.route.expires_at < now:
            raise RouteRejected("expired", f"the route has expired by {self.me}'s clock")
        keys = open_member_keys(self.route, self.route_sha256, member_keys, self._trust)
        if keys[self.me] != self._mask_key:
            raise RouteRejected("member-keys", f"the pass carries a key for {self.me} other than the one it gave")
        pk = self.route.public_key()
        masked = (check_figure(figure) + mask(self.route, self.route_sha256, self.me, self._secret, keys, pk.n)) % pk.n
        out = encode_ciphertexts(pk, [_add_masked(pk, decode_ciphertext(pk, ciphertext), masked, self._random)])
        nxt = self.route.next(self.me)
        if nxt is not None:
            return Passed(nxt, out, None)
        return Passed(None, out, self._signer.sign("final", final_body(self.route.run_id, self.route_sha256, out)))


def encode_total(total: int) -> bytes:
    return total.to_bytes(TOTAL_BYTES, "big")


def decode_total(data: bytes, contributors: int) -> int:
    if len(data) > TOTAL_BYTES:
        raise RemoteProtocolError("released total is out of range")
    total = int.from_bytes(data, "big")
    if not MIN_CONTRIBUTORS <= contributors <= MAX_PARTICIPANTS or total > contributors * MAX_VALUE:
        raise RemoteProtocolError("released total or contributor count is out of bounds")
    return total


def check_message(step: str, payload: bytes) -> int:
    """Parse one recorded federation-total message and check it holds only what it may.

    ``step`` is the Egress step: "join" (the initiator's signed route),
    "joined" (a member's signed mask key), "pass" (signed route, every
    member's key, the running ciphertext), "passed" (the last member's signed
    final ciphertext) or "release" (the total). Signatures are not checked
    here (a recorded message is ours, or was checked when it arrived).
    Returns the number of ciphertexts carried. Raises RemoteProtocolError.
    """
    from google.protobuf.message import DecodeError

    from ..v1 import node_pb2 as pb

    types = {"join": pb.FederationJoinRequest, "joined": pb.FederationJoinResponse, "pass": pb.FederationPassRequest,
             "passed": pb.FederationPassResponse, "release": pb.FederationReleaseRequest}
    if step not in types:
        raise RemoteProtocolError(f"unknown federation-total step {step!r}")
    try:
        message = types[step].FromString(payload)
        if step in ("join", "pass"):
            route = Route.decode(message.signed_route.body)
            if route.run_id != message.run_id or not MIN_CONTRIBUTORS <= len(route.members) <= MAX_PARTICIPANTS:
                raise RemoteProtocolError("federation route does not match its run or has an implausible size")
            key = PublicKey.decode(route.public_key_bytes)
            if step == "join":
                return 0
            decode_ciphertext(key, message.ciphertext)
            if len(message.member_keys) != len(route.members):
                raise RemoteProtocolError("federation pass carries a key count other than its member count")
            for signed in message.member_keys:
                _member_key_shape(pb.FederationMemberKey.FromString(signed.body))
            return 1
        if step == "joined":
            _member_key_shape(pb.FederationMemberKey.FromString(message.member_key.body))
            return 0
        if step == "passed":
            final = pb.FederationFinal.FromString(message.final.body)
            if len(final.ciphertext) * 4 not in (2048, 3072):
                raise RemoteProtocolError("final ciphertext has the size of no allowed key")
            return 1
    except DecodeError as exc:
        raise RemoteProtocolError(f"not a valid {step} message of a federation total: {exc}") from None
    decode_total(message.total, message.contributors)
    return 0


def _member_key_shape(m) -> None:  # type: ignore[no-untyped-def]
    if len(m.mask_key) != 32 or len(m.route_sha256) != 32:
        raise RemoteProtocolError("federation member key has a mask key or route digest of the wrong size")
