"""Private intersection-sum with cardinality, as two sans-IO state machines.

The protocol of Ion et al., "On Deploying Secure Computing: Private
Intersection-Sum-with-Cardinality" (EuroS&P 2020), as deployed in Google's
private-join-and-compute. Two parties:

* the **matcher** holds identifiers (say its flagged actors);
* the **value holder** holds identifiers with a non-negative integer each
  (say API requests per account) and owns the Paillier key.

The requester of a session chooses which side holds the values (policy
permitting); the roles below do not depend on who asked.

The exchange (H = hash to P-256, k1/k2 = the parties' secret scalars,
every list shuffled by its sender)::

    matcher                                        value holder
      blinded-set:    {H(v)^k1}               ---->
                                              <----  double-blinded: pk,
                                                     proof(pk well formed),
                                                     {H(v)^k1k2},
                                                     {(H(w)^k2, Enc(t_w))}
      computes (H(w)^k2)^k1, matches, multiplies the
      matching ciphertexts, re-randomizes:
      encrypted-sum:  |I|, Enc(sum)           ---->  decrypts (the only decryption)
                                              <----  sum: |I|, sum

Who learns what
---------------
* Both learn the intersection size |I|, the sum over I, and the other's
  set size.
* Neither learns which items are in I: the matcher sees the value holder's
  points under k2 only and its own points double-blinded in shuffled order;
  the value holder sees only the matcher's points under k1 and one
  re-randomized ciphertext.
* Neither learns any single value exactly. The matcher only ever holds
  ciphertexts; the sum is re-randomized before the value holder decrypts,
  so the value holder cannot tell which ciphertexts were multiplied.

Differential privacy (``noise``: a :class:`SumNoise`, issue 11)
--------------------------------------------------------------
Without noise the matcher learns a single value whenever |I| = 1, by
differencing two sessions whose sets differ by one item, or by lying: it
may multiply fewer ciphertexts than the count it claims (one, say, while
claiming 5). So the value holder clips every item's value to ``[0,
clip_bound]`` *before encrypting* and adds discrete Laplace noise of scale
``clip_bound / epsilon`` to whatever it decrypts, *always*, whatever the
matcher did: the released sum is epsilon-DP for each identifier's value.
What stays outside that guarantee, stated plainly:

* |I| is not noised: the matcher computes it itself (noise added by the
  value holder would buy nothing) and the value holder learns it from the
  matcher's message;
* the value holder decrypts the exact sum of its own (clipped) values over I
  (and keeps only the released figure); a matcher's membership is protected
  from it by set-size policy only;
* an actor with m identifiers of the session's kind weighs m items (m * epsilon);
* a matcher may raise a ciphertext to a power k (count one item k times):
  the released figure then bears on that item with k * epsilon. The value
  holder refuses a decrypted sum above ``count * MAX_VALUE`` only; a
  secret-tag encoding that would detect the multiplicity is not built yet.

The value holder's key
-----------------------
The matcher accepts the value holder's Paillier key only with a valid proof
that its modulus is well formed (:mod:`psi_share.crypto.modulus_proof`: no
prime factor below 65537, gcd(N, phi(N)) = 1, exactly two primes), bound to
the key, the protocol version and the session (``proof_context``), and checks
it before it touches a ciphertext. With a crafted modulus, re-randomizing the
sum would not hide which ciphertexts went into it (issue 11: N = 1009 * q let
a value holder read the match vector). The proof reveals nothing about the
key's factors.

Double counting: a session matches on exactly one identifier kind; a value
belongs to an identifier row (see the store), and an item's value is the
total over the rows that share that canonical identifier. Matching the same
activity under two kinds would count it twice, so kinds are not mixed.

``check_message(step, payload)`` parses one wire message and checks that it
holds only what that step may hold; the audit log calls it on recorded
messages. On the wire each message travels as the ``Chunk`` stream of one
``SumExchange`` call, recorded by Egress under protocol "intersection-sum"
and step ``<step>-chunk`` (requests) or ``<step>-chunk`` of the reply's step
(the servicer names the reply's step): reassemble the chunks of one
(session, step) and pass the bytes here.
"""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from google.protobuf.message import DecodeError

from ..crypto import ec, modulus_proof
from ..crypto.paillier import (
    KEY_BITS,
    MAX_SUM_TERMS,
    MAX_VALUE,
    PrivateKey,
    PublicKey,
    check_value,
    decode_ciphertext,
    decode_ciphertexts,
    encode_ciphertexts,
)
from ..errors import LocalProtocolError, OutOfOrder, RemoteProtocolError, VersionMismatch
from ..privacy.mechanisms import NoiseSampler, Release, clip, release_sum
from ..v1 import node_pb2 as pb
from . import PROTOCOL_VERSION, ProtocolSpec, register_protocol

SPEC = register_protocol(
    ProtocolSpec(
        name="intersection-sum",
        asks="how much activity do the actors we share generate? (count and sum over the intersection)",
        requester_learns="the intersection size and the sum of the value holder's values over it "
        "(clipped and noised when the responder holds the values); the responder's set size",
        responder_learns="the same intersection size and sum (noised when the requester holds the values); "
        "the requester's set size",
    )
)

STEPS = ("start", "blinded-set", "double-blinded", "encrypted-sum", "sum", "ack")
_SUM_BYTES = 16  # a sum is below 2^87 (see crypto.paillier "Value bounds")


class ValueHolder(str, enum.Enum):
    REQUESTER = "requester"
    RESPONDER = "responder"


@dataclass(frozen=True)
class SumResult:
    """What a party learned (the value holder: what it released; with noise,
    ``sum`` is the released figure and ``release`` says how it was made)."""

    intersection_size: int
    sum: int
    own_set_size: int
    peer_set_size: int
    release: Release | None = None


@dataclass(frozen=True)
class SumNoise:
    """How the value holder protects each identifier's value in the sum it releases:
    values clipped to [0, clip_bound] before encryption, discrete Laplace noise of
    scale clip_bound / epsilon on every decrypted sum. ``sampler`` None: OpenDP's."""

    clip_bound: int
    epsilon: Fraction | float
    sampler: NoiseSampler | None = None

    def release(self, total: int, count: int) -> Release:
        """``total`` plus noise, then clamped to [0, count * clip_bound]: every
        honest sum lies there and the wire carries no negative sum; clamping a
        noisy figure by public facts (count, bound) is post-processing, so the
        guarantee holds."""
        r = release_sum(total, bound=self.clip_bound, epsilon=self.epsilon, sampler=self.sampler)
        clamped = min(max(r.value, 0), count * self.clip_bound)
        return Release(clamped, r.mechanism, r.scale, r.sensitivity, r.epsilon, r.delta)


# -- messages -----------------------------------------------------------


def encode(message: pb.SumMessage) -> bytes:
    return message.SerializeToString()


def parse(payload: bytes, expected_step: str) -> pb.SumMessage:
    message = pb.SumMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"peer's message is not a SumMessage: {exc}") from None
    if message.protocol_version != PROTOCOL_VERSION:
        raise VersionMismatch(f"peer's SumMessage has protocol version {message.protocol_version}")
    if message.step != expected_step:
        raise OutOfOrder(f"peer sent step {message.step!r} where {expected_step!r} was expected")
    return message


def _only(message: pb.SumMessage, allowed: set[str]) -> None:
    present = {f.name for f, _ in message.ListFields()} - {"protocol_version", "step"}
    extra = present - allowed
    if extra:
        raise RemoteProtocolError(f"step {message.step!r} may not carry {', '.join(sorted(extra))}")


def _decode_sum(data: bytes) -> int:
    if len(data) > _SUM_BYTES:
        raise RemoteProtocolError("peer's sum is out of range")
    return int.from_bytes(data, "big")


def check_message(step: str, payload: bytes, key: PublicKey | None = None) -> int:
    """Parse one wire message of ``step`` and check it holds only what it may.

    Points must be on P-256, ciphertexts in range and invertible (for the
    double-blinded step, under the key the message itself carries; for the
    encrypted sum, under ``key`` when given), counts and sums in bounds.
    Returns the number of items (points or ciphertexts) the message holds.
    Raises RemoteProtocolError.
    """
    if step not in STEPS:
        raise RemoteProtocolError(f"unknown intersection-sum step {step!r}")
    m = parse(payload, step)
    if step in ("start", "ack"):
        _only(m, set())
        return 0
    if step == "blinded-set":
        _only(m, {"points"})
        return len(ec.split_points(m.points))
    if step == "double-blinded":
        _only(m, {"public_key", "key_proof", "points", "paired_points", "ciphertexts"})
        pk = PublicKey.decode(m.public_key)
        if m.key_proof:  # its session context is not in the message: parsed, not verified
            modulus_proof.ModulusProof.decode(pk, m.key_proof)
        points = ec.split_points(m.points)
        paired = ec.split_points(m.paired_points)
        decode_ciphertexts(pk, m.ciphertexts, len(paired))
        if len(set(points)) != len(points) or len(set(paired)) != len(paired):
            raise RemoteProtocolError("double-blinded message repeats a point")
        return len(points) + len(paired)
    if step == "encrypted-sum":
        _only(m, {"count", "ciphertexts"})
        if key is not None:
            decode_ciphertext(key, m.ciphertexts)
        elif len(m.ciphertexts) * 4 not in tuple(b for b in KEY_BITS):
            raise RemoteProtocolError("encrypted sum has the size of no allowed key")
        return 1
    _only(m, {"count", "sum"})
    if _decode_sum(m.sum) > m.count * MAX_VALUE:
        raise RemoteProtocolError("sum exceeds count * MAX_VALUE")
    return 0


# -- the two parties ----------------------------------------------------


class MatcherState(enum.Enum):
    NEW = "new"
    SET_SENT = "set-sent"
    SUM_SENT = "sum-sent"
    DONE = "done"


class HolderState(enum.Enum):
    NEW = "new"
    REPLIED = "replied"
    DONE = "done"


# Everything that moves a party's state is in these two tables.
_MATCHER_STEPS = {
    (MatcherState.NEW, "blinded-set"): MatcherState.SET_SENT,
    (MatcherState.SET_SENT, "double-blinded"): MatcherState.SUM_SENT,
    (MatcherState.SUM_SENT, "sum"): MatcherState.DONE,
}
_HOLDER_STEPS = {
    (HolderState.NEW, "blinded-set"): HolderState.REPLIED,
    (HolderState.REPLIED, "encrypted-sum"): HolderState.DONE,
}


def proof_context(session_id: str, value_holder: str, matcher: str) -> bytes:
    """What binds the value holder's key proof to one session: the session id
    and both parties' node names, as both sides know them (length-prefixed)."""
    parts = [session_id.encode(), value_holder.encode(), matcher.encode()]
    return b"intersection-sum" + b"".join(len(x).to_bytes(2, "big") + x for x in parts)


def shuffled(values: list, random_bytes: Callable[[int], bytes]) -> list:
    """A uniformly random permutation (Fisher-Yates keyed from ``random_bytes``)."""
    out = list(values)
    rng = random.Random(random_bytes(32))
    rng.shuffle(out)
    return out


@dataclass(frozen=True)
class BlindedSet:
    """A party's own items under its secret scalar, computed before any
    session (per dataset revision); ``points[i]`` belongs to item ``i``."""

    scalar: int
    points: tuple[bytes, ...]

    def __repr__(self) -> str:  # never show the scalar
        return f"BlindedSet({len(self.points)} points)"


def blind_own_items(engine: ec.EcEngine, scalar: int, items: Sequence[str]) -> BlindedSet:
    return BlindedSet(scalar, tuple(engine.hash_and_blind(scalar, [i.encode() for i in items])))


class Matcher:
    """The party without values. ``own`` is its prepared blinded set;
    ``context`` is :func:`proof_context` of the session (the value holder's
    key proof must be bound to the same bytes)."""

    def __init__(
        self,
        own: BlindedSet,
        *,
        engine: ec.EcEngine,
        random_bytes: Callable[[int], bytes],
        max_peer_set_size: int,
        key_bits: int,
        context: bytes = b"",
    ) -> None:
        self._own = own
        self._context = context
        self._engine = engine
        self._random = random_bytes
        self._max_peer = max_peer_set_size
        self._key_bits = key_bits
        self.state = MatcherState.NEW
        self._count = -1
        self._peer_size = 0

    @property
    def intersection_size(self) -> int:
        """Known after the double-blinded step (-1 before)."""
        return self._count

    def _step(self, event: str) -> None:
        nxt = _MATCHER_STEPS.get((self.state, event))
        if nxt is None:
            raise OutOfOrder(f"matcher cannot handle {event!r} in state {self.state.value}")
        self.state = nxt

    def blinded_set(self) -> bytes:
        self._step("blinded-set")
        points = shuffled(list(self._own.points), self._random)
        return encode(pb.SumMessage(protocol_version=PROTOCOL_VERSION, step="blinded-set", points=b"".join(points)))

    def on_double_blinded(self, payload: bytes) -> bytes:
        """Match, sum the matching ciphertexts, re-randomize: the encrypted-sum message."""
        self._step("double-blinded")
        m = parse(payload, "double-blinded")
        _only(m, {"public_key", "key_proof", "points", "paired_points", "ciphertexts"})
        pk = PublicKey.decode(m.public_key)
        if pk.bits != self._key_bits:
            raise RemoteProtocolError(f"value holder's key has {pk.bits} bits; the session agreed on {self._key_bits}")
        # Nothing under the key is used before its modulus is proven well formed.
        modulus_proof.verify(pk, m.key_proof, context=self._context, protocol_version=PROTOCOL_VERSION)
        mine = ec.split_points(m.points, len(self._own.points))
        if len(set(mine)) != len(mine):
            raise RemoteProtocolError("double-blinded set repeats a point")
        paired = ec.split_points(m.paired_points, check=False)  # checked as they are blinded below
        if len(paired) > self._max_peer:
            raise RemoteProtocolError(f"value holder sent {len(paired)} items; the limit is {self._max_peer}")
        if len(set(paired)) != len(paired):
            raise RemoteProtocolError("value holder's set repeats a point")
        ciphertexts = decode_ciphertexts(pk, m.ciphertexts, len(paired))
        theirs = self._engine.blind(self._own.scalar, paired)
        mine_set = set(mine)
        matched = [c for point, c in zip(theirs, ciphertexts) if point in mine_set]
        self._count = len(matched)
        self._peer_size = len(paired)
        encrypted = pk.rerandomize(pk.sum(matched), self._random)
        return encode(
            pb.SumMessage(
                protocol_version=PROTOCOL_VERSION, step="encrypted-sum", count=len(matched),
                ciphertexts=encode_ciphertexts(pk, [encrypted]),
            )
        )

    def on_sum(self, payload: bytes) -> SumResult:
        self._step("sum")
        m = parse(payload, "sum")
        _only(m, {"count", "sum"})
        if m.count != self._count:
            raise RemoteProtocolError(f"value holder reports {m.count} matches; we counted {self._count}")
        total = _decode_sum(m.sum)
        if total > self._count * MAX_VALUE:
            raise RemoteProtocolError("value holder's sum exceeds count * MAX_VALUE")
        return SumResult(self._count, total, len(self._own.points), self._peer_size)


class ValueHolderParty:
    """The party with values and the Paillier key (the only decrypter).

    ``values[i]`` is the value of the item whose prepared point is
    ``own.points[i]``; ``encrypt`` turns values into ciphertexts (the node
    uses its randomness pool and worker processes). ``context`` is
    :func:`proof_context` of the session: the key proof is bound to it.
    """

    def __init__(
        self,
        own: BlindedSet,
        values: Sequence[int],
        *,
        key: PrivateKey,
        encrypt: Callable[[Sequence[int]], list[int]],
        engine: ec.EcEngine,
        random_bytes: Callable[[int], bytes],
        max_peer_set_size: int,
        context: bytes = b"",
        noise: SumNoise | None = None,
    ) -> None:
        if len(values) != len(own.points):
            raise LocalProtocolError("one value per item")
        if len(values) > MAX_SUM_TERMS:
            raise LocalProtocolError(f"at most {MAX_SUM_TERMS} valued items per session")
        for v in values:
            check_value(v)
        self._own = own
        self._noise = noise
        # Clipped before encryption: no ciphertext the matcher holds exceeds the bound.
        self._values = clip(values, noise.clip_bound) if noise else list(values)
        self._key = key
        self._encrypt = encrypt
        self._engine = engine
        self._random = random_bytes
        self._max_peer = max_peer_set_size
        self.state = HolderState.NEW
        self._peer_size = 0
        self._ciphertexts: tuple[list[int], list[int]] | None = None  # (order, Enc(values in that order))
        self._context = context
        self._key_proof: bytes | None = None
        self._prepare_lock = threading.Lock()

    def prepare_ciphertexts(self) -> None:
        """Draw the shuffle, encrypt every value and prove the key now.

        Needs nothing from the peer, so the node runs it as soon as the
        session opens, while the matcher is still blinding its set;
        :meth:`on_blinded_set` does it itself if nobody did.
        """
        with self._prepare_lock:
            if self._key_proof is None:
                self._key_proof = modulus_proof.prove(self._key, context=self._context, protocol_version=PROTOCOL_VERSION)
            if self._ciphertexts is None:
                order = shuffled(list(range(len(self._values))), self._random)
                self._ciphertexts = (order, self._encrypt([self._values[i] for i in order]))

    def _step(self, event: str) -> None:
        nxt = _HOLDER_STEPS.get((self.state, event))
        if nxt is None:
            raise OutOfOrder(f"value holder cannot handle {event!r} in state {self.state.value}")
        self.state = nxt

    def on_blinded_set(self, payload: bytes) -> bytes:
        self._step("blinded-set")
        m = parse(payload, "blinded-set")
        _only(m, {"points"})
        if len(m.points) > self._max_peer * ec.X_BYTES:
            raise RemoteProtocolError(f"matcher sent more than the limit of {self._max_peer} items")
        theirs = ec.split_points(m.points, check=False)  # checked as they are blinded below
        if len(set(theirs)) != len(theirs):
            raise RemoteProtocolError("matcher's set repeats a point")
        self._peer_size = len(theirs)
        double = shuffled(self._engine.blind(self._own.scalar, theirs), self._random)
        self.prepare_ciphertexts()
        assert self._ciphertexts is not None and self._key_proof is not None
        order, ciphertexts = self._ciphertexts
        self._ciphertexts = None  # used once
        pk = self._key.public
        return encode(
            pb.SumMessage(
                protocol_version=PROTOCOL_VERSION, step="double-blinded", public_key=pk.encode(),
                key_proof=self._key_proof, points=b"".join(double), paired_points=b"".join(self._own.points[i] for i in order),
                ciphertexts=encode_ciphertexts(pk, ciphertexts),
            )
        )

    def on_encrypted_sum(self, payload: bytes) -> tuple[bytes, SumResult]:
        """Decrypt the sum; returns the "sum" message for the matcher and our result."""
        self._step("encrypted-sum")
        m = parse(payload, "encrypted-sum")
        _only(m, {"count", "ciphertexts"})
        count = m.count
        if count > min(self._peer_size, len(self._values)):
            raise RemoteProtocolError(f"matcher reports {count} matches, more than either set holds")
        total = self._key.decrypt(decode_ciphertext(self._key.public, m.ciphertexts))
        if total > count * MAX_VALUE:
            raise RemoteProtocolError("the encrypted sum decrypts to more than count * MAX_VALUE (not a sum of our values)")
        # With noise the exact total goes no further than this line: whatever the
        # matcher multiplied, what leaves is noisy (the node charged the budget before).
        released = self._noise.release(total, count) if self._noise else None
        figure = released.value if released else total
        reply = pb.SumMessage(protocol_version=PROTOCOL_VERSION, step="sum", count=count, sum=figure.to_bytes(_SUM_BYTES, "big"))
        return encode(reply), SumResult(count, figure, len(self._values), self._peer_size, released)


def control(step: str) -> bytes:
    """The empty "start" / "ack" messages of the transport flow."""
    if step not in ("start", "ack"):
        raise LocalProtocolError(f"{step!r} is not a control step")
    return encode(pb.SumMessage(protocol_version=PROTOCOL_VERSION, step=step))


# -- opening a session ----------------------------------------------------


@dataclass(frozen=True)
class SumOpen:
    """Requester -> responder: what to match on, who holds the values."""

    dataset: str  # the responder's dataset
    kind: str
    kind_version: int
    set_size: int  # the requester's items
    value_holder: ValueHolder
    key_bits: int
    job_id: str = ""
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"unsupported protocol version {self.protocol_version} (this node speaks {PROTOCOL_VERSION})"
            )
        if not self.dataset or not self.kind:
            raise RemoteProtocolError("SumOpen names no dataset or no kind")
        if self.set_size < 0:
            raise RemoteProtocolError("SumOpen.set_size is negative")
        if self.key_bits not in KEY_BITS:
            raise RemoteProtocolError(f"Paillier key size {self.key_bits} is not one of {KEY_BITS}")

    @property
    def responder_is_matcher(self) -> bool:
        return self.value_holder is ValueHolder.REQUESTER


@dataclass(frozen=True)
class SumOpened:
    session_id: str
    max_set_size: int
    session_ttl_seconds: int = 0
    protocol_version: int = PROTOCOL_VERSION


#: The requester's steps for each choice of value holder: what it sends in
#: each SumExchange and what it expects back.
EXCHANGES = {
    ValueHolder.RESPONDER: (("blinded-set", "double-blinded"), ("encrypted-sum", "sum")),
    ValueHolder.REQUESTER: (("start", "blinded-set"), ("double-blinded", "encrypted-sum"), ("sum", "ack")),
}


def step_of(payload: bytes) -> str:
    """The step a serialized SumMessage claims to be (for routing and records)."""
    message = pb.SumMessage()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"peer's message is not a SumMessage: {exc}") from None
    if message.step not in STEPS:
        raise RemoteProtocolError(f"unknown intersection-sum step {message.step!r}")
    return message.step
