"""What a peer may ask of this node: the single place policy is decided.

Every protocol's responder builds an :class:`AccessRequest` when a peer opens
a session and calls :meth:`Policy.check` before doing any work. A refusal is a
:class:`~psi_share.errors.Refused` carrying the gRPC status the peer sees and
a message its operator can act on; an accepted request returns a
:class:`Grant` (what the session may release, e.g. the minimum result).

The rule for a peer is its ``[policy]`` (defaults, overridden by
``[policy.peers.NAME]``) intersected with what the node exposes at all
(``[exposure]``, ``[matching] max_set_size``). Checks, in order:

=====================  ==========================================  =====================
check                  key                                         status when refused
=====================  ==========================================  =====================
caught cheating        (a session of it ended as ``violation``)    PERMISSION_DENIED
protocol               ``protocols``                               PERMISSION_DENIED
dataset                ``datasets`` and ``[exposure] datasets``    NOT_FOUND
canonicalization       (both sides' versions; for ``prompt`` also  FAILED_PRECONDITION
                       the prompt parameter set)
identifier kinds       ``kinds`` and ``[exposure] kinds``          PERMISSION_DENIED
                       (``prompt`` only when ``kinds`` names it)
learn matches          ``reveal`` and ``[exposure] reveal``        PERMISSION_DENIED
                       (OpenMined's count mode counts as reveal)
set size               ``min_set_size`` / ``max_set_size``         INVALID_ARGUMENT
daily budget           ``sessions_per_day`` / ``items_per_day``    RESOURCE_EXHAUSTED
=====================  ==========================================  =====================

The budget is charged when a session is granted (an abandoned session still
counts), in the store, so that a restart does not reset it.

Counts only (``reveal = false``) means the ``cardinality`` protocol, where
this node computes the count and releases nothing else. OpenMined's count
mode (PSI with ``reveal_intersection`` false) lets the requester compute the
count from our filter, so a modified requester learns which items match: it
needs the reveal grant. A peer whose session here ended as a protocol
violation (it sent what only modified software sends, e.g. a cardinality
re-blinded set its announced key cannot have produced) is refused every
session until the operator re-admits it by removing and adding it again.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import NotFound, Refused, VersionMismatch
from ..identifiers import KINDS
from ..prompts import PROMPT_KIND, check_agreement
from ..store import Store
from ..store.db import charge_usage, violations
from .config import NodeConfig
from .policy_config import PeerPolicy

PROMPT = PROMPT_KIND.name


@dataclass(frozen=True)
class AccessRequest:
    """One session a peer asks to open, as far as policy is concerned."""

    protocol: str  # a name from psi_share.protocols.PROTOCOLS
    dataset: str  # our dataset the peer wants to match against
    kinds: Mapping[str, int] = field(default_factory=dict)  # kind -> canonicalization version
    set_size: int = 0  # items the peer will send
    reveal: bool = False  # whether the peer would learn which items match
    # PSI in OpenMined's count mode: the requester computes the count from our
    # filter, so a modified requester can learn the matches (needs reveal).
    requester_counts: bool = False
    value_holder: str = ""  # intersection-sum: "requester" or "responder" (whose data carries values)
    metric: str = ""  # federation-total: the figure asked for
    # The requester's prompt parameter set (required when kinds include "prompt").
    prompt_params: Mapping[str, object] | None = None
    participants: int = 0  # federation-total: labs whose figures the total will hold


@dataclass(frozen=True)
class Grant:
    """What an accepted session may release."""

    peer: str
    min_result: int  # results below this are released only as "fewer than min_result"
    max_set_size: int


@dataclass(frozen=True)
class EffectivePolicy:
    """A peer's policy intersected with what the node exposes."""

    protocols: frozenset[str]
    datasets: frozenset[str]
    kinds: frozenset[str]
    reveal: bool
    min_set_size: int
    max_set_size: int
    items_per_day: int
    sessions_per_day: int
    min_result: int


class Policy:
    def __init__(self, config: NodeConfig, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._store = store
        self._clock = clock

    def for_peer(self, peer: str) -> EffectivePolicy:
        p: PeerPolicy = self.config.policy.for_peer(peer)
        exposure, limit = self.config.exposure, self.config.matching.max_set_size
        kinds = set(self.config.exposed_kinds())
        # Prompt matching is granted only by name: an empty ``kinds`` means
        # every identifier kind but ``prompt`` (README "Prompt chains").
        kinds &= set(p.kinds) if p.kinds else kinds - {PROMPT}
        return EffectivePolicy(
            protocols=frozenset(p.protocols),
            datasets=frozenset(exposure.datasets) & frozenset(p.datasets),
            kinds=frozenset(kinds),
            reveal=exposure.reveal and p.reveal,
            min_set_size=p.min_set_size,
            max_set_size=min(limit, p.max_set_size) if p.max_set_size else limit,
            items_per_day=p.items_per_day,
            sessions_per_day=p.sessions_per_day,
            min_result=p.min_result,
        )

    def datasets_granted(self, protocol: str) -> list[str]:
        """The exposed datasets some peer may run ``protocol`` on (the
        defaults, which any newly added peer gets, or a peer's own table), in
        ``[exposure]`` order: what serve start prepares for that protocol."""
        from ..protocols import PROTOCOLS

        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}")
        rules = (self.config.policy.defaults, *self.config.policy.peers.values())
        return [d for d in self.config.exposure.datasets
                if any(protocol in r.protocols and d in r.datasets for r in rules)]

    def check(self, peer: str, request: AccessRequest, *, charge: bool = True) -> Grant:
        """Raise :class:`Refused` (or :class:`VersionMismatch`) unless
        ``peer`` may open ``request``; with ``charge``, also charge it to the
        peer's daily budget (see :meth:`charge`)."""
        if request.protocol == "federation-total":
            return self._check_federation(peer, request, charge=charge)
        name = self.config.name
        eff = self.for_peer(peer)
        fix = f"ask {name}'s operator to change [policy.peers.{peer}]"
        self._check_not_caught(peer)
        if request.protocol not in eff.protocols:
            raise Refused("PERMISSION_DENIED", f"{name} does not allow {peer} the protocol {request.protocol!r} "
                          f"(allowed: {', '.join(sorted(eff.protocols)) or 'none'}); {fix} protocols")
        # One text for a hidden, a missing and an empty dataset, which never
        # repeats the name asked for (the peer's text): a peer cannot map
        # what exists here beyond what NodeInfo shows it.
        not_found = Refused("NOT_FOUND", f"{name} has no dataset of that name for {peer} (NodeInfo lists those "
                            "it may match against)")
        if request.dataset not in self.config.exposure.datasets or request.dataset not in eff.datasets:
            raise not_found
        try:
            self._store.dataset(request.dataset)
        except NotFound:
            raise not_found from None
        for kind, version in sorted(request.kinds.items()):
            if kind not in KINDS:
                raise VersionMismatch(f"the request names an identifier kind unknown to {name} "
                                      f"(known: {', '.join(sorted(KINDS))})")
            if version != KINDS[kind].version:
                raise VersionMismatch(
                    f"kind {kind}: requester canonicalizes with version {version}, "
                    f"{name} with version {KINDS[kind].version}; both sides must upgrade to the same version"
                )
            if kind == PROMPT:
                self._check_prompt_params(peer, request)
            if kind not in eff.kinds:
                raise Refused("PERMISSION_DENIED", f"{name} does not expose identifier kind {kind!r} to {peer}")
        if request.reveal and not eff.reveal:
            raise Refused("PERMISSION_DENIED", f"{name} answers {peer} with counts only; ask with --count "
                          f"(mode = \"count\"), or {fix} reveal")
        if request.requester_counts and not eff.reveal:
            raise Refused("PERMISSION_DENIED", f"{name} answers {peer} with counts only, and OpenMined's count mode "
                          "lets the requester compute the count itself (a modified client learns which items "
                          "match), so it needs the reveal grant; count with the cardinality protocol "
                          f"('psi-share match --count', mode = \"count\"), or {fix} reveal")
        # Sizes are the peer's numbers: described, never repeated back.
        if request.set_size > eff.max_set_size:
            raise Refused(
                "INVALID_ARGUMENT", f"the announced set exceeds {name}'s limit of {eff.max_set_size} items for {peer}",
            )
        # Every session that matches a set is held to the minimum, an empty
        # one (size 0) included: "no minimum for size 0" was a way around it.
        if request.set_size < eff.min_set_size:
            raise Refused(
                "INVALID_ARGUMENT",
                f"the announced set is below {name}'s minimum of {eff.min_set_size} items for {peer} "
                "(small sets are how identifiers get probed); send a larger set",
            )
        if request.protocol == "intersection-sum":
            self._check_intersection_sum(request)
        if charge:
            self.charge(peer, request)
        return Grant(peer=peer, min_result=eff.min_result, max_set_size=eff.max_set_size)

    def _check_prompt_params(self, peer: str, request: AccessRequest) -> None:
        """Both sides must cut prompts into band items with the same parameters
        (FAILED_PRECONDITION naming every field that differs, as for versions)."""
        name = self.config.name
        if not self.config.prompts.enabled:
            raise VersionMismatch(f"{name} does not match prompts (no [prompts] seed configured)")
        theirs = request.prompt_params
        if theirs is None:
            raise VersionMismatch(f"the request names the prompt kind without its prompt parameter set; "
                                  f"{name} needs it to check that both sides cut prompts alike")
        check_agreement(self.config.prompts.params.describe(), theirs, us=name, peer=peer)

    def charge(self, peer: str, request: AccessRequest) -> None:
        """Charge one session of ``request.set_size`` items to ``peer``'s
        budget for today (UTC), or refuse with RESOURCE_EXHAUSTED."""
        eff = self.for_peer(peer)
        day = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc).strftime("%Y-%m-%d")
        result = charge_usage(self._store, peer, day, request.set_size,
                              max_sessions=eff.sessions_per_day, max_items=eff.items_per_day)
        if not result.charged:
            if result.sessions_used + 1 > eff.sessions_per_day:
                what = f"all {eff.sessions_per_day} sessions"
            else:
                what = f"{result.items_used} of its {eff.items_per_day} items (this session's set would exceed them)"
            raise Refused("RESOURCE_EXHAUSTED", f"{peer} has used {what} of its daily budget at "
                          f"{self.config.name} for {day}; the budget resets at 00:00 UTC")

    def _check_not_caught(self, peer: str) -> None:
        """Refuse a peer caught sending forged protocol messages since it was (re-)added."""
        try:
            since = self._store.peer(peer).added_at
        except NotFound:
            since = 0.0
        caught = violations(self._store, peer, since=since)
        if caught:
            first = caught[0]
            when = dt.datetime.fromtimestamp(first.started_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            raise Refused(
                "PERMISSION_DENIED",
                f"{self.config.name} refuses {peer}: in a {first.protocol} session ({when}) it sent a message "
                "that the protocol's checks prove was not computed as specified; the operator of "
                f"{self.config.name} re-admits a peer by removing and adding it ('psi-share peers remove {peer}')",
            )

    # -- Paillier aggregates ----------------------------------------------

    def _check_intersection_sum(self, request: AccessRequest) -> None:
        name = self.config.name
        if len(request.kinds) != 1:
            raise Refused("INVALID_ARGUMENT", "an intersection-sum session matches on exactly one identifier kind")
        if request.value_holder not in self.config.intersection_sum.value_holders:
            allowed = ", ".join(self.config.intersection_sum.value_holders) or "none"
            raise Refused(
                "PERMISSION_DENIED",
                f"{name} does not run intersection-sum with the values held by the {request.value_holder or '?'} "
                f"(allowed: {allowed})",
            )

    def _check_federation(self, peer: str, request: AccessRequest, *, charge: bool) -> Grant:
        name = self.config.name
        eff = self.for_peer(peer)
        self._check_not_caught(peer)
        if request.protocol not in eff.protocols:
            raise Refused("PERMISSION_DENIED", f"{name} does not allow {peer} the protocol {request.protocol!r}; "
                          f"ask {name}'s operator to change [policy.peers.{peer}] protocols")
        try:
            self._store.figure(request.metric)
        except NotFound:
            raise Refused("NOT_FOUND", f"{name} holds no figure for the metric this run names") from None
        minimum = self.config.federation.min_contributors
        if request.participants < minimum:
            raise Refused(
                "FAILED_PRECONDITION",
                f"{name} contributes only to totals over at least {minimum} labs; this run announces fewer",
            )
        if charge:
            self.charge(peer, request)  # one session, no items
        return Grant(peer=peer, min_result=eff.min_result, max_set_size=eff.max_set_size)
