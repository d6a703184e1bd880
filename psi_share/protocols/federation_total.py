"""Federation total: a Paillier secure sum of one figure per lab.

The initiator draws a fresh Paillier key for the run and encrypts its own
figure; the ciphertext then passes through every other participant in turn
(a chain of calls): each adds its own figure homomorphically, re-randomizes,
and hands the result to the next. The last contributor's ciphertext travels
back up the chain unchanged to the initiator, the only key holder, which
decrypts the total only if at least ``min_contributors`` figures are in it
(default 3, never fewer than 3) and then releases it to every contributor::

    initiator I       C1                 C2          ...      Cm
      Enc(x_I) ---->  + x_1, rerand ---> + x_2, rerand ---> + x_m, rerand
      <------------------------------------------------------ Enc(total)
      decrypts, checks count >= k, releases the total to C1..Cm

Who learns what (honest-but-curious, non-colluding labs)
-------------------------------------------------------
* Every participant learns the total and the number of contributors.
* A contributor sees only ciphertexts under a key it does not hold, each
  re-randomized by the previous hop: nothing about earlier figures.
* The initiator decrypts one value, the total, which has at least two other
  labs' figures in it (k >= 3), so it learns their sum, not either figure.
* A contributor refuses to add its figure unless the run, as announced,
  will hold at least its own ``min_contributors`` figures: a ring of two
  would hand the initiator the other lab's figure by subtraction.

Colluding labs can subtract their own figures from the total; with k
participants, k - 1 colluders learn the last figure. That is outside v1's
threat model and stated in the README.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..crypto.paillier import MAX_VALUE, PrivateKey, PublicKey, check_value, decode_ciphertext
from ..errors import LocalProtocolError, OutOfOrder, RemoteProtocolError
from ..names import NAME_PATTERN
from . import ProtocolSpec, register_protocol

SPEC = register_protocol(
    ProtocolSpec(
        name="federation-total",
        asks="what is the total of one figure across all labs?",
        requester_learns="the total and the number of contributors, only when at least k (>= 3) labs contributed",
        responder_learns="the total and the number of contributors (nothing about any other lab's figure)",
    )
)

MIN_CONTRIBUTORS = 3
MAX_PARTICIPANTS = 64
TOTAL_BYTES = 16  # 64 figures below 2^63 sum below 2^69


@dataclass(frozen=True)
class FederationPass:
    """One hop of the ring: what a contributor receives (and sends on)."""

    run_id: str
    metric: str
    initiator: str
    public_key: PublicKey
    ciphertext: int
    contributors: int  # figures already in the ciphertext
    route: tuple[str, ...]  # contributors still to come after the receiver
    min_contributors: int
    job_id: str = ""


def check_pass(p: FederationPass, *, receiver: str, own_minimum: int) -> None:
    """A contributor's checks before it adds its figure (RemoteProtocolError)."""
    if not p.run_id or not NAME_PATTERN.match(p.metric) or not NAME_PATTERN.match(p.initiator):
        raise RemoteProtocolError("federation pass has an empty run id or an invalid metric or initiator name")
    if p.min_contributors < MIN_CONTRIBUTORS:
        raise RemoteProtocolError(f"federation pass asks for {p.min_contributors} contributors; never fewer than {MIN_CONTRIBUTORS}")
    names = list(p.route) + [p.initiator, receiver]
    if len(set(names)) != len(names) or not all(NAME_PATTERN.match(n) for n in p.route):
        raise RemoteProtocolError("federation route repeats a node or names an invalid one")
    if not 1 <= p.contributors < MAX_PARTICIPANTS or len(names) > MAX_PARTICIPANTS:
        raise RemoteProtocolError("federation pass has an implausible number of contributors")
    final = p.contributors + 1 + len(p.route)
    needed = max(p.min_contributors, own_minimum)
    if final < needed:
        raise RemoteProtocolError(
            f"this run would total {final} figures; {receiver} contributes only to runs of at least {needed}"
        )


def contribute(p: FederationPass, figure: int, random_bytes: Callable[[int], bytes]) -> FederationPass:
    """Add our figure to the running ciphertext and re-randomize it."""
    check_value(figure)
    c = p.public_key.rerandomize(p.public_key.add_plain(p.ciphertext, figure), random_bytes)
    return FederationPass(
        run_id=p.run_id, metric=p.metric, initiator=p.initiator, public_key=p.public_key, ciphertext=c,
        contributors=p.contributors + 1, route=p.route[1:], min_contributors=p.min_contributors, job_id=p.job_id,
    )


def decode_pass_ciphertext(key: PublicKey, data: bytes) -> int:
    return decode_ciphertext(key, data)


class InitiatorState(enum.Enum):
    NEW = "new"
    SENT = "sent"
    DONE = "done"


_INITIATOR_STEPS = {
    (InitiatorState.NEW, "start"): InitiatorState.SENT,
    (InitiatorState.SENT, "returned"): InitiatorState.DONE,
}


@dataclass(frozen=True)
class FederationResult:
    total: int
    contributors: int


class FederationInitiator:
    """The initiator of one run: owns the run's fresh key, the only decrypter."""

    def __init__(
        self,
        *,
        run_id: str,
        metric: str,
        initiator: str,
        contributors: Sequence[str],
        figure: int,
        key: PrivateKey,
        min_contributors: int,
        random_bytes: Callable[[int], bytes],
        job_id: str = "",
    ) -> None:
        if min_contributors < MIN_CONTRIBUTORS:
            raise LocalProtocolError(f"min_contributors is never below {MIN_CONTRIBUTORS}")
        if len(set(contributors)) != len(contributors) or initiator in contributors:
            raise LocalProtocolError("contributors must be distinct and exclude the initiator")
        if len(contributors) + 1 < min_contributors:
            raise LocalProtocolError(
                f"{len(contributors) + 1} participants cannot reach the minimum of {min_contributors} contributors"
            )
        check_value(figure)
        self.run_id, self.metric, self.initiator = run_id, metric, initiator
        self.contributors = tuple(contributors)
        self._figure = figure
        self._key = key
        self.min_contributors = min_contributors
        self._random = random_bytes
        self.job_id = job_id
        self.state = InitiatorState.NEW

    def _step(self, event: str) -> None:
        nxt = _INITIATOR_STEPS.get((self.state, event))
        if nxt is None:
            raise OutOfOrder(f"initiator cannot handle {event!r} in state {self.state.value}")
        self.state = nxt

    def first_pass(self) -> tuple[str, FederationPass]:
        """(first contributor, the pass it receives)."""
        self._step("start")
        pk = self._key.public
        return self.contributors[0], FederationPass(
            run_id=self.run_id, metric=self.metric, initiator=self.initiator, public_key=pk,
            ciphertext=pk.encrypt(self._figure, self._random), contributors=1,
            route=self.contributors[1:], min_contributors=self.min_contributors, job_id=self.job_id,
        )

    def on_returned(self, ciphertext: bytes, contributors: int) -> FederationResult:
        """Decrypt the total, only if every participant's figure is in it."""
        self._step("returned")
        expected = len(self.contributors) + 1
        if contributors != expected:
            raise RemoteProtocolError(f"the ring returned {contributors} figures; {expected} participants were asked")
        if contributors < self.min_contributors:
            raise RemoteProtocolError(f"only {contributors} contributors; the minimum is {self.min_contributors}")
        total = self._key.decrypt(decode_ciphertext(self._key.public, ciphertext))
        if total > contributors * MAX_VALUE:
            raise RemoteProtocolError("the returned ciphertext is not a sum of figures (out of bounds)")
        return FederationResult(total, contributors)


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

    ``step`` is the Egress step: "pass" (a FederationPassRequest: key,
    running ciphertext, counts, route), "passed" (a FederationPassResponse:
    the final ciphertext) or "release" (a FederationReleaseRequest: the
    total). Returns the number of ciphertexts carried. Raises
    RemoteProtocolError.
    """
    from google.protobuf.message import DecodeError

    from ..v1 import node_pb2 as pb

    types = {"pass": pb.FederationPassRequest, "passed": pb.FederationPassResponse, "release": pb.FederationReleaseRequest}
    if step not in types:
        raise RemoteProtocolError(f"unknown federation-total step {step!r}")
    try:
        message = types[step].FromString(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"not a {types[step].__name__}: {exc}") from None
    if step == "pass":
        key = PublicKey.decode(message.public_key)
        decode_ciphertext(key, message.ciphertext)
        if not 1 <= message.contributors < MAX_PARTICIPANTS or message.min_contributors < MIN_CONTRIBUTORS:
            raise RemoteProtocolError("federation pass has implausible counts")
        return 1
    if step == "passed":
        if len(message.ciphertext) * 4 not in (2048, 3072) or not 1 <= message.contributors <= MAX_PARTICIPANTS:
            raise RemoteProtocolError("returned ciphertext has the size of no allowed key, or implausible counts")
        return 1
    decode_total(message.total, message.contributors)
    return 0
