"""Count-only PSI that the responder enforces (protocol "cardinality"),
as two sans-IO state machines.

Why not OpenMined's count mode
------------------------------
In OpenMined PSI the *requester* computes the result: it blinds its items
with its key, the responder blinds them again and sorts them ("count" mode),
and the requester removes its key and looks the points up in the
responder's filter. Sorting only hides which point is which from a requester
that used one key. A modified requester blinds each item under its own key
and tries every key on every returned point: it learns exactly which of its
items match (1,000 of 1,000 in 143 s of local work). Here the *responder*
computes the count and releases nothing else.

The exchange
------------
``H`` hashes an item to P-256 (:func:`psi_share.crypto.ec.hash_to_x`), ``x(P)``
is a point's x coordinate (the wire form), ``a`` is the requester's secret
scalar, ``k`` a scalar the responder draws for this one session, ``w_t`` the
responder's decoy scalars, ``G`` the generator. Every list is sorted::

    requester                                        responder
      CardinalityOpen(dataset, kinds, n)   ---->     policy: grant, charge n items to the budget
                                           <----     opened(session, min_result k)
      queries:   A = x(a*G),
                 Q = {x(a*H(x))}  (n points) ---->   starts T = {x(k*q) : q in Q}
                                           <----     session-set: P = {x(k*H(y))}  ∪  {x(w_t*G)}
                                                                    (our items)      (m decoys)
      reblinded: Z = {x(a*p) : p in P}     ---->     checks Z (size, order, curve) and the decoys:
                                                     x(w_t*A) must be in Z for every t
                                                     c = |T ∩ Z|; r = release_count(c, k, noise)
                                           <----     count: r, or "withheld: fewer than k"

``x(k*a*H(v))`` is the same whichever side blinded first, so ``T ∩ Z`` holds
one point per item in both sets. ``k`` is fresh per session (the node
re-blinds its prepared per-revision sets, see ``node.counts.responder``), so
two sessions' session-sets share no point.

Who learns what
---------------
* The **requester** learns the responder's set size (``|P|`` minus the
  announced decoys) and the released count (or that it is below ``k``).
  It never receives anything computed from its own points.
* The **responder** learns the requester's set size and the exact
  intersection size (before noise). It sees the requester's items only
  under ``a``, which it does not know.

Why a cheating requester gains nothing
---------------------------------------
The requester controls ``A``, ``Q`` and ``Z``, and may use any keys at all.
The responder counts ``|T ∩ Z|``, where ``T`` is *its* one key ``k`` applied to
``Q``. Let ``S`` be the items ``v`` the requester put in ``Q`` as ``a*H(v)``
with the key ``a`` it announced in ``A``.

1. Points of ``Q`` under any other key, or that are not hashes of items at
   all, or that are the responder's own points sent back, only match an
   element of ``Z`` that the requester built to match them (``k*a'*H(v)``
   for a ``v`` in ``Y``): it never learns ``k``, so such an element can only
   be derived from a session-set point (``c*p``, "fanning out" a point).
2. ``Z`` must hold exactly ``|P|`` distinct points (sorted, on the curve). So
   every element the requester adds (a fan-out, a replay, a guess) takes the
   place of some ``a*p`` it leaves out. It cannot tell decoys from our
   items: both are uniformly random points, and both are fresh in every
   session. If a left-out point is a decoy, ``x(w_t*A)`` is missing from
   ``Z`` and the session fails as a **protocol violation**: no count is
   released, the session is recorded with status ``violation``, and the
   node refuses that peer every later session (``policy.py``).
3. When the check passes and the requester added nothing, ``Z`` is ``a*p``
   for a subset of ``P`` of its choosing by position only, and positions are
   uniformly random: the count is ``|S ∩ Y|``, or a random thinning of it
   that depends on nothing but ``|S ∩ Y|``. It could have sent ``S``
   honestly. ``min_result`` and the noise then apply to that count.

So the best a requester can do, beyond the count of a subset it chose, is to
gamble: replace ``d`` points with fan-outs, hoping none of the ``d`` is a
decoy (probability about ``(1 - m/N)^d`` for ``N = |P|``) and that the point
it fanned out is the one of the item it wants to test (``1/N`` per position:
it cannot choose). Lifting one guessed item over ``min_result`` takes ``k-1``
copies; a requester repeating this until caught tests, in all its sessions
together, about ``N/m`` positions: the chance that a given item of ours was
among them is about ``1/((k-1)*m)`` before it is refused for good (``m`` is
:data:`DECOYS`). Without ``min_result`` and noise there is nothing to lift:
the count of a one-item subset is allowed anyway, which is why policy should
set them for peers granted counts only.

What a cheating *responder* can learn (stated plainly)
------------------------------------------------------
The responder compares, so the mirror of OpenMined's weakness is on this
side: a responder running modified software can put a guessed item into the
session-set under a key ``u`` of its own, apply ``u`` to every query and look
for the result in ``Z``: for every guess it learns whether the requester's
set holds it, at ``|Q|`` exponentiations per guess. A requester cannot
detect this. Count-only therefore protects the *responder's* set from the
requester; what the requester risks is what a reveal grant on its own set
would expose to that responder, for items the responder guesses. (A
verifiable shuffle proof from the requester would stop both directions; it
costs far more than the protocol's budget of 1.5x OpenMined's count mode.)

``check_message(step, payload)`` parses one wire message and checks that it
holds only what its step may hold (the audit scan calls it).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ..crypto import ec
from ..errors import LocalProtocolError, OutOfOrder, RemoteProtocolError, VersionMismatch
from ..v1 import node_pb2 as pb
from . import PROTOCOL_VERSION, ProtocolSpec, register_protocol
from .intersection_sum import BlindedSet

SPEC = register_protocol(
    ProtocolSpec(
        name="cardinality",
        asks="how many do we share? (the responder computes and releases only the count)",
        requester_learns="the count after the responder's min_result and noise; the responder's set size",
        responder_learns="the requester's set size and the exact intersection size",
    )
)

STEPS = ("queries", "session-set", "reblinded", "count")
#: Decoys a responder mixes into every session-set (see "Why a cheating requester gains nothing").
DECOYS = 1024
#: The most decoys a requester accepts in one session-set.
MAX_DECOYS = 1 << 16
_GENERATOR_X = ec.base_x([1])[0]  # x(1*G): a requester "key" of 1 (or -1) would send its hashes in the clear


class ProtocolViolation(RemoteProtocolError):
    """The peer sent a well-formed message that this protocol's checks prove
    it did not compute as specified (only modified software does that)."""


# -- releasing the count -----------------------------------------------------


def release_count(true_count: int, *, min_result: int, noise: Callable[[int], int] | None = None) -> int | None:
    """The single place a cardinality count leaves the responder.

    ``noise`` maps the true count to the count to release; None releases it
    as is. The node passes its differential-privacy noise here
    (:mod:`psi_share.node.counts.responder`: discrete Laplace, charged first). ``min_result`` is
    applied to the noisy count, so that whether a count is withheld is
    itself covered by the noise. Returns the count to release, never below
    0, or None when it is withheld ("fewer than min_result").
    """
    if true_count < 0:
        raise LocalProtocolError("a count cannot be negative")
    released = max(0, true_count if noise is None else int(noise(true_count)))
    return None if released < min_result else released


# -- messages -----------------------------------------------------------------

_FIELDS = {
    "queries": {"key_point", "points"},
    "session-set": {"points", "decoys"},
    "reblinded": {"points"},
    "count": {"count", "withheld", "min_result"},
}


def encode(message: pb.CardinalityMessage) -> bytes:
    return message.SerializeToString()


def _message(step: str, **fields: object) -> bytes:
    return encode(pb.CardinalityMessage(protocol_version=PROTOCOL_VERSION, step=step, **fields))  # type: ignore[arg-type]


def parse(payload: bytes, expected_step: str) -> pb.CardinalityMessage:
    """Parse one message of ``expected_step`` holding only the fields that step may carry."""
    message = pb.CardinalityMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"peer's message is not a CardinalityMessage: {exc}") from None
    # Refusals describe what the peer sent, never repeat it (its text or numbers).
    if message.protocol_version != PROTOCOL_VERSION:
        raise VersionMismatch(f"peer's CardinalityMessage is of another protocol version (this node speaks {PROTOCOL_VERSION})")
    if message.step != expected_step:
        raise OutOfOrder(f"peer sent another step where {expected_step!r} was expected")
    extra = {f.name for f, _ in message.ListFields()} - {"protocol_version", "step"} - _FIELDS[expected_step]
    if extra:
        raise RemoteProtocolError(f"step {expected_step!r} may not carry {', '.join(sorted(extra))}")
    return message


def step_of(payload: bytes) -> str:
    """The step a serialized CardinalityMessage claims to be (for routing)."""
    message = pb.CardinalityMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"peer's message is not a CardinalityMessage: {exc}") from None
    if message.step not in STEPS:
        raise RemoteProtocolError(f"peer's message names no cardinality step (steps: {', '.join(STEPS)})")
    return message.step


def sorted_points(blob: bytes, what: str, *, count: int | None = None, check: bool = True) -> list[bytes]:
    """Cut a point list apart; it must be in strictly ascending order (so no point repeats).

    ``check=False`` is for points about to be blinded (lifting refuses a
    point off the curve there, on the worker processes).
    """
    if len(blob) % ec.X_BYTES:
        raise RemoteProtocolError(f"{what} is not a whole number of {ec.X_BYTES}-byte points")
    points = ec.split_points(blob, check=check)
    if count is not None and len(points) != count:
        more = "more" if len(points) > count else "fewer"
        raise RemoteProtocolError(f"{what} holds {more} points than were announced")
    if any(points[i] >= points[i + 1] for i in range(len(points) - 1)):
        raise RemoteProtocolError(f"{what} is not in ascending order or repeats a point")
    return points


def check_message(step: str, payload: bytes) -> int:
    """Parse one wire message of ``step`` and check it holds only what it may:
    points on P-256 in ascending order, a key point that is not the generator,
    a withheld count that says nothing but "fewer than k". Returns the number
    of points it holds. Raises RemoteProtocolError."""
    if step not in STEPS:
        raise RemoteProtocolError(f"unknown cardinality step {step!r}")
    m = parse(payload, step)
    if step == "count":
        if m.withheld and (m.count or m.min_result < 1):
            raise RemoteProtocolError("a withheld count carries a count or no minimum")
        if not m.withheld and m.min_result:
            raise RemoteProtocolError("a released count carries a minimum")
        return 0
    points = sorted_points(m.points, f"{step} points")
    if step == "queries":
        _check_key_point(m.key_point)
    if step == "session-set" and m.decoys > len(points):
        raise RemoteProtocolError("session-set announces more decoys than points")
    return len(points)


def _check_key_point(key_point: bytes) -> None:
    if len(key_point) != ec.X_BYTES:
        raise RemoteProtocolError(f"the key point is not {ec.X_BYTES} bytes")
    ec.check_x(key_point)
    if key_point == _GENERATOR_X:
        raise RemoteProtocolError("the requester's key point is the generator: its key is 1 or -1")


# -- the responder's per-session set ----------------------------------------------


@dataclass(frozen=True)
class SessionSet:
    """What a responder sends one session: its items under a fresh key, mixed
    with decoys, sorted. Built before the session (it needs nothing from the
    peer) and used once."""

    scalar: int  # k: the key our items are under in this session
    points: tuple[bytes, ...]  # sorted, ours and the decoys together
    decoys: tuple[int, ...]  # w_t: decoy t is x(w_t * G)
    items: int  # how many of the points are ours

    def __repr__(self) -> str:  # never show a scalar
        return f"SessionSet({self.items} items, {len(self.decoys)} decoys)"


def make_session_set(
    own: Sequence[BlindedSet], *, engine: ec.EcEngine, random_bytes: Callable[[int], bytes], decoys: int = DECOYS
) -> SessionSet:
    """Our items under a fresh key ``k``, mixed with decoys.

    ``own`` are prepared sets (one per kind, each under its own scalar
    ``b``): each is re-blinded with ``k / b``, so every item ends up under
    the one fresh ``k`` at one exponentiation per item.
    """
    k = ec.new_scalar(random_bytes)
    ours: list[bytes] = []
    for group in own:
        if group.points:
            ours += engine.blind(k * pow(group.scalar, -1, ec.P256_ORDER) % ec.P256_ORDER, group.points)
    while True:
        ws = tuple(ec.new_scalar(random_bytes) for _ in range(decoys))
        points = sorted([*ours, *ec.base_x(ws)])
        # A repeat (probability ~N^2 / 2^256) would break the requester's ordering check.
        if all(points[i] != points[i + 1] for i in range(len(points) - 1)):
            return SessionSet(k, tuple(points), ws, len(ours))


# -- the two parties ------------------------------------------------------------


class RequesterState(enum.Enum):
    NEW = "new"
    QUERIES_SENT = "queries-sent"
    REBLINDED_SENT = "reblinded-sent"
    DONE = "done"


class ResponderState(enum.Enum):
    NEW = "new"
    SET_SENT = "set-sent"
    DONE = "done"


_REQUESTER_STEPS = {
    (RequesterState.NEW, "queries"): RequesterState.QUERIES_SENT,
    (RequesterState.QUERIES_SENT, "session-set"): RequesterState.REBLINDED_SENT,
    (RequesterState.REBLINDED_SENT, "count"): RequesterState.DONE,
}
_RESPONDER_STEPS = {
    (ResponderState.NEW, "queries"): ResponderState.SET_SENT,
    (ResponderState.SET_SENT, "reblinded"): ResponderState.DONE,
}


def _advance(table: dict, state: enum.Enum, event: str, who: str) -> enum.Enum:  # type: ignore[type-arg]
    nxt = table.get((state, event))
    if nxt is None:
        raise OutOfOrder(f"the cardinality {who} cannot handle {event!r} in state {state.value}")
    return nxt


@dataclass(frozen=True)
class CountResult:
    """What the requester learned: the released count (None: fewer than ``fewer_than``)."""

    count: int | None
    fewer_than: int
    own_set_size: int
    peer_set_size: int


class CardinalityRequester:
    """The asking side. ``own`` is its prepared blinded set (scalar ``a``)."""

    def __init__(self, own: BlindedSet, *, engine: ec.EcEngine, max_peer_set_size: int) -> None:
        self._own = own
        self._engine = engine
        self._max_points = max_peer_set_size + MAX_DECOYS
        self.state = RequesterState.NEW
        self._peer_size = 0
        self.peer_points = 0  # in the responder's session-set, decoys included

    def _step(self, event: str) -> None:
        self.state = _advance(_REQUESTER_STEPS, self.state, event, "requester")  # type: ignore[assignment]

    def queries(self) -> bytes:
        self._step("queries")
        key_point = ec.base_x([self._own.scalar])[0]
        return _message("queries", key_point=key_point, points=b"".join(sorted(self._own.points)))

    def on_session_set(self, payload: bytes) -> bytes:
        """Blind every point of the responder's session-set with our key: the reblinded message."""
        self._step("session-set")
        m = parse(payload, "session-set")
        if len(m.points) > self._max_points * ec.X_BYTES:
            raise RemoteProtocolError(f"responder sent more than {self._max_points} points")
        theirs = sorted_points(m.points, "session-set", check=False)  # checked as they are blinded
        if m.decoys > len(theirs):
            raise RemoteProtocolError("responder announces more decoys than it sent points")
        self._peer_size = len(theirs) - m.decoys
        self.peer_points = len(theirs)
        return _message("reblinded", points=b"".join(sorted(self._engine.blind(self._own.scalar, theirs))))

    def on_count(self, payload: bytes) -> CountResult:
        self._step("count")
        m = parse(payload, "count")
        own = len(self._own.points)
        if m.withheld:
            if m.count or m.min_result < 1:
                raise RemoteProtocolError("responder withheld the count but sent a count or no minimum")
            return CountResult(None, m.min_result, own, self._peer_size)
        if m.min_result:
            raise RemoteProtocolError("responder released a count with a minimum attached")
        if m.count > own:
            raise RemoteProtocolError(f"responder reports {m.count} matches for our {own} items")
        return CountResult(m.count, 0, own, self._peer_size)


@dataclass(frozen=True)
class CountOutcome:
    """What the responder learned (``true_count``) and what it released."""

    true_count: int
    released: int | None  # None: withheld
    peer_set_size: int


class CardinalityResponder:
    """The answering side: one session, ``session_set`` used once.

    ``release`` is :func:`release_count` with the peer's ``min_result`` and
    noise bound in.
    """

    def __init__(
        self,
        session_set: SessionSet,
        *,
        engine: ec.EcEngine,
        set_size: int,
        min_result: int,
        release: Callable[[int], int | None],
    ) -> None:
        self._set = session_set
        self._engine = engine
        self._set_size = set_size  # what the requester announced (and was charged for)
        self._min_result = min_result
        self._release = release
        self.state = ResponderState.NEW
        self._key_point = b""
        self._queries: list[bytes] = []
        self._blinded: set[bytes] | None = None
        self._blind_lock = threading.Lock()

    def _step(self, event: str) -> None:
        self.state = _advance(_RESPONDER_STEPS, self.state, event, "responder")  # type: ignore[assignment]

    def on_queries(self, payload: bytes) -> bytes:
        """Keep the requester's key point and queries; answer with our session-set."""
        self._step("queries")
        m = parse(payload, "queries")
        _check_key_point(m.key_point)
        self._queries = sorted_points(m.points, "queries", count=self._set_size, check=False)  # checked when blinded
        self._key_point = m.key_point
        return _message("session-set", points=b"".join(self._set.points), decoys=len(self._set.decoys))

    def blind_queries(self) -> None:
        """T = k * Q. Needs nothing more from the peer, so the node runs it as
        soon as the queries arrive, while the requester re-blinds our set;
        :meth:`on_reblinded` does it itself if nobody did."""
        with self._blind_lock:
            if self._blinded is None and self.state is not ResponderState.NEW:
                self._blinded = set(self._engine.blind(self._set.scalar, self._queries))

    def on_reblinded(self, payload: bytes) -> tuple[bytes, CountOutcome]:
        """Check the re-blinded set, count, release: the count message and what we learned."""
        self._step("reblinded")
        m = parse(payload, "reblinded")
        z = set(sorted_points(m.points, "reblinded set", count=len(self._set.points)))
        expected = ec.multiply_x(self._set.decoys, self._key_point)
        # How many are missing is not said: it would tell a cheat how many decoys it hit.
        if any(e not in z for e in expected):
            raise ProtocolViolation(
                "the re-blinded set lacks points the requester's announced key must give: "
                "it did not blind every point of the session-set with that one key"
            )
        self.blind_queries()
        assert self._blinded is not None
        true_count = len(self._blinded & z)
        released = self._release(true_count)
        if released is None:
            reply = _message("count", withheld=True, min_result=self._min_result)
        else:
            reply = _message("count", count=released)
        return reply, CountOutcome(true_count, released, len(self._queries))


# -- opening a session ------------------------------------------------------------


@dataclass(frozen=True)
class CardinalityOpen:
    """Requester -> responder: what to count against, and its set size."""

    dataset: str
    kinds: Mapping[str, int]  # kind -> canonicalization version
    set_size: int
    job_id: str = ""
    protocol_version: int = PROTOCOL_VERSION
    prompt_params: Mapping[str, object] | None = None  # required when kinds include "prompt"

    def __post_init__(self) -> None:
        if self.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"unsupported protocol version (this node speaks {PROTOCOL_VERSION})"
            )
        if not self.dataset or not self.kinds:
            raise RemoteProtocolError("CardinalityOpen names no dataset or no kinds")
        if self.set_size < 0:
            raise RemoteProtocolError("CardinalityOpen.set_size is negative")


@dataclass(frozen=True)
class CardinalityOpened:
    session_id: str
    max_set_size: int
    session_ttl_seconds: int = 0
    min_result: int = 0
    protocol_version: int = PROTOCOL_VERSION

