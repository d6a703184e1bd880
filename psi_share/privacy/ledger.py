"""The epsilon budget: what each peer's releases cost, per UTC day, in the store.

Every release to a peer charges its epsilon here *before* the figure leaves
the node; a charge that would take the peer past its budget for the day is
refused (:class:`BudgetExhausted`, a RESOURCE_EXHAUSTED refusal) and nothing
is written. Charges are summed over protocols: the budget is per peer per
UTC day, the split by protocol is for the record (``policy show``, the audit's
disclosure ledger).

Amounts are kept in millionths of epsilon, as integers, so that sums are
exact: a charge is rounded up and a budget down to a millionth, never in
the peer's favour. Each charge is one ``BEGIN IMMEDIATE`` transaction, so
two threads or two processes (``serve`` and a CLI command) sharing the store
can never both spend the last of a budget. Composition is basic: the
epsilons of a day's releases add up (and their deltas, where a mechanism
has one, add up too; those are recorded on the releases themselves).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import Refused
from ..names import check_name
from ..store.db import Store
from .mechanisms import exact

MICRO = 10**6


class BudgetExhausted(Refused):
    """A release would take a peer past its epsilon budget for the UTC day."""

    def __init__(self, peer: str, day: str, spent: Fraction, budget: Fraction, needed: Fraction) -> None:
        super().__init__(
            "RESOURCE_EXHAUSTED",
            f"peer {peer} has used {_text(spent)} of its differential-privacy budget of {_text(budget)} "
            f"for {day} (UTC); this release needs {_text(needed)}. The budget renews at 00:00 UTC.",
        )
        self.peer, self.day, self.spent, self.budget, self.needed = peer, day, spent, budget, needed


def _text(eps: Fraction) -> str:
    return f"epsilon {float(eps):.6g}"


def utc_day(now: float) -> str:
    """The UTC day (``YYYY-MM-DD``) a time falls on: budgets renew at 00:00 UTC."""
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")


def _micro_up(eps: Fraction) -> int:
    return math.ceil(eps * MICRO)


@dataclass(frozen=True)
class Spending:
    """What one peer's releases cost on one day under one protocol."""

    peer: str
    day: str
    protocol: str
    epsilon: Fraction
    releases: int


@dataclass(frozen=True)
class Charge:
    """A charge that went through: the peer's total for the day now, and its budget."""

    peer: str
    day: str
    protocol: str
    charged: Fraction
    spent_today: Fraction
    budget: Fraction

    @property
    def remaining(self) -> Fraction:
        return self.budget - self.spent_today


def charge(
    store: Store,
    *,
    peer: str,
    protocol: str,
    epsilon: int | float | str | Fraction,
    daily_budget: int | float | str | Fraction,
    now: float,
) -> Charge:
    """Charge ``epsilon`` to ``peer`` for the UTC day of ``now``, or raise
    :class:`BudgetExhausted` (and change nothing) if the day's total would
    exceed ``daily_budget``."""
    check_name("peer", peer)
    if not protocol:
        raise ValueError("a charge names its protocol")
    micro = _micro_up(exact(epsilon, "epsilon"))
    budget = math.floor(exact(daily_budget, "daily epsilon budget") * MICRO)
    day = utc_day(now)
    with store.transaction() as db:
        spent = db.execute("SELECT COALESCE(SUM(micro_epsilon), 0) FROM dp_spent WHERE peer = ? AND day = ?",
                           (peer, day)).fetchone()[0]
        if spent + micro > budget:
            raise BudgetExhausted(peer, day, Fraction(spent, MICRO), Fraction(budget, MICRO), Fraction(micro, MICRO))
        db.execute(
            "INSERT INTO dp_spent(peer, day, protocol, micro_epsilon, releases) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT(peer, day, protocol) DO UPDATE SET micro_epsilon = micro_epsilon + excluded.micro_epsilon, "
            "releases = releases + 1",
            (peer, day, protocol, micro),
        )
    return Charge(peer, day, protocol, Fraction(micro, MICRO), Fraction(spent + micro, MICRO), Fraction(budget, MICRO))


def spending(store: Store, *, day: str | None = None, peer: str | None = None) -> list[Spending]:
    """Recorded spending, per peer, day and protocol (filtered by ``day`` and/or ``peer``), oldest day first."""
    sql = "SELECT peer, day, protocol, micro_epsilon, releases FROM dp_spent WHERE 1 = 1"
    args: list[str] = []
    if day is not None:
        sql, args = sql + " AND day = ?", [*args, day]
    if peer is not None:
        sql, args = sql + " AND peer = ?", [*args, peer]
    with store.transaction() as db:
        rows = db.execute(sql + " ORDER BY day, peer, protocol", args).fetchall()
    return [Spending(r[0], r[1], r[2], Fraction(r[3], MICRO), r[4]) for r in rows]


def spent_on(store: Store, peer: str, day: str) -> Fraction:
    """A peer's total over protocols for one UTC day."""
    return sum((s.epsilon for s in spending(store, day=day, peer=peer)), Fraction(0))
