"""Canary PSI sessions: a real run over synthetic items whose answer both sides know.

``psi-share peers check`` proves that a peer's PSI works end to end before a
job relies on it. A canary is an ordinary PSI session (the same RPCs, policy
check, budget, filter sizing and OpenMined code on both sides) in which
neither side uses a single real identifier:

* The requester names a **canary dataset** (``names.CANARY_DATASET_PATTERN``):
  ``_canary.<dataset>`` asks for a synthetic set as large as the responder's
  filter over ``<dataset>`` (for the kinds the session names) would be;
  ``_canary.<dataset>.<n>`` asks for ``n`` synthetic items (at most
  :data:`MAX_CANARY_ITEMS`). ``<dataset>`` is the real dataset whose policy
  grant, canonicalization versions and filter sizing the canary goes
  through; no real dataset can be called ``_canary...`` (a name starts with
  a letter).
* The responder holds ``held/0 .. held/N-1`` (N the size asked, or for
  ``_canary.<dataset>`` the real filter's item count but at least
  :data:`ANCHORS`), under a fresh key of its own, in a filter built exactly as
  the real one would be.
* The requester sends ``held/0 .. held/m-1`` (m at most :data:`ANCHORS`, never
  beyond what it knows the responder holds) and ``absent/0 ..``, which the
  responder never holds. It must learn exactly the ``held`` items (reveal)
  or exactly m (count); anything else means the responder's filter or the
  requester's reading of it is broken, and a real match at that size would
  be wrong too.

Every canary item starts with :data:`CANARY_ITEM_PREFIX`, and every real item
with ``identifiers.ITEM_PREFIX``: no identifier can ever be a canary item, so
a canary matches nothing real, whoever builds it.

Who learns what: the requester learns which of its synthetic items the
responder's synthetic set holds (public: both sides derive the sets from
these rules) and, for ``_canary.<dataset>``, the size of the responder's
filter over that dataset, which a real session's filter shows as well. The
responder learns the requester's set size, as in any PSI session.
"""

from __future__ import annotations

from dataclasses import dataclass

from private_set_intersection.python import ServerSetup

from ..errors import RemoteProtocolError
from ..identifiers import ITEM_PREFIX
from ..names import CANARY_DATASET_PATTERN
from .psi import PsiOutcome

#: Every canary item starts with this; no real item can (they start with ITEM_PREFIX).
CANARY_ITEM_PREFIX = "psi-share/canary/v1/"
assert not CANARY_ITEM_PREFIX.startswith(ITEM_PREFIX) and not ITEM_PREFIX.startswith(CANARY_ITEM_PREFIX)

#: The responder always holds at least this many ``held`` items, so a requester
#: that does not know the real filter's size still knows what it must find.
ANCHORS = 32

#: The largest synthetic set a requester may ask for by number (a filter over
#: it costs the responder one exponentiation per item, about 4 s here).
MAX_CANARY_ITEMS = 65536


@dataclass(frozen=True)
class CanaryAsk:
    """What a canary session asks of the responder.

    ``dataset`` is the real dataset whose grant and filter the canary mirrors;
    ``items`` the synthetic set's size, or None for "as large as that
    dataset's filter" (the responder decides, at least :data:`ANCHORS`).
    """

    dataset: str
    items: int | None = None

    def __post_init__(self) -> None:
        if self.items is not None and not 1 <= self.items <= MAX_CANARY_ITEMS:
            raise RemoteProtocolError(
                f"a canary asks for 1 to {MAX_CANARY_ITEMS} synthetic items"
            )
        if not CANARY_DATASET_PATTERN.fullmatch(self.name):
            raise RemoteProtocolError("a canary names a dataset: _canary.<dataset>[.<items>]")

    @property
    def name(self) -> str:
        """The dataset field of the canary's PsiOpen."""
        return f"_canary.{self.dataset}" + ("" if self.items is None else f".{self.items}")

    def responder_count(self, real_items: int) -> int:
        """How many ``held`` items the responder's synthetic set holds."""
        return self.items if self.items is not None else max(real_items, ANCHORS)


def parse_canary_dataset(name: str) -> CanaryAsk | None:
    """The canary a PsiOpen.dataset asks for; None for every other name.

    A name that starts like a canary's but breaks its rule is the peer's
    error (RemoteProtocolError, without echoing the name).
    """
    if not name.startswith("_canary"):
        return None
    found = CANARY_DATASET_PATTERN.fullmatch(name)
    if found is None:
        raise RemoteProtocolError(
            "PsiOpen.dataset starts like a canary's but is not _canary.<dataset> or _canary.<dataset>.<items>"
        )
    return CanaryAsk(found.group(1), int(found.group(2)) if found.group(2) else None)


def held_items(count: int) -> list[str]:
    """The responder's synthetic set of ``count`` items."""
    return [f"{CANARY_ITEM_PREFIX}held/{i}" for i in range(count)]


@dataclass(frozen=True)
class CanaryPlan:
    """The requester's synthetic set and the answer it must get.

    ``items`` are sorted and distinct; ``expected`` holds the positions in
    ``items`` of the items the responder holds.
    """

    items: tuple[str, ...]
    expected: frozenset[int]


def requester_plan(set_size: int, ask: CanaryAsk) -> CanaryPlan:
    """``set_size`` synthetic items, about half of them (at most ANCHORS) held."""
    if set_size < 1:
        raise ValueError("a canary sends at least one item")
    known = ask.items if ask.items is not None else ANCHORS
    held = min(ANCHORS, known, (set_size + 1) // 2)
    chosen = held_items(held) + [f"{CANARY_ITEM_PREFIX}absent/{j}" for j in range(set_size - held)]
    items = tuple(sorted(chosen))
    held_set = set(chosen[:held])
    return CanaryPlan(items, frozenset(i for i, item in enumerate(items) if item in held_set))


def check_outcome(plan: CanaryPlan, outcome: PsiOutcome) -> list[str]:
    """What is wrong with a canary's outcome ([] when it is exactly right)."""
    problems = []
    if outcome.count != len(plan.expected):
        problems.append(f"{outcome.count} matching canary items where {len(plan.expected)} were expected")
    if outcome.matched is not None:
        found = set(outcome.matched)
        missing, extra = len(plan.expected - found), len(found - plan.expected)
        if missing:
            problems.append(f"{missing} items the peer holds were not found")
        if extra:
            problems.append(f"{extra} items the peer does not hold were reported as matches")
    return problems


def filter_kind(setup: bytes) -> str:
    """Which OpenMined filter a serialized ServerSetup holds ("gcs", "raw",
    "bloom_filter"), for the report; "unreadable" when it does not parse."""
    message = ServerSetup()
    try:
        message.ParseFromString(setup)
    except Exception:  # noqa: BLE001 - only a label for the report
        return "unreadable"
    return message.WhichOneof("data_structure") or "empty"
