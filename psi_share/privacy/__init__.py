"""Differential privacy for every figure a peer learns from us (issue 11).

Where a protocol cannot stop a member running modified software from
learning one actor's membership or amount (a count of 1, two sessions that
differ by one item, a matcher that lies about its count), the released
figure carries noise and the peer's daily epsilon budget bounds what it can
learn. Sans-IO like the protocols: randomness comes through a sampler, time
through ``now``, the store is passed in.

* :mod:`.mechanisms`: exact discrete Laplace releases from OpenDP behind a
  sampler seam, the :class:`Release` record, clipping for sums;
* :mod:`.distributed`: discrete Gaussian shares for federation totals, so
  no single party (initiator included) can take the noise out;
* :mod:`.ledger`: epsilon charged per peer, UTC day and protocol, in the
  store, refused past the day's budget.

Layering: ``mechanisms`` and ``distributed`` sit at the ground (errors only);
``ledger`` sits beside the store it writes to.

Defaults (justified in the README, "Differential privacy"): epsilon 0.5 per
released figure, a budget of 4 per peer per UTC day, delta 1e-10 where a
mechanism has one.
"""

from __future__ import annotations

from fractions import Fraction

from .distributed import DISTRIBUTED_DISCRETE_GAUSSIAN, DistributedNoise, achieved_epsilon, plan
from .ledger import BudgetExhausted, Charge, Spending, charge, spending, spent_on, utc_day
from .mechanisms import (
    DISCRETE_GAUSSIAN,
    DISCRETE_LAPLACE,
    MAX_SCALE,
    NoiseSampler,
    OpenDPSampler,
    Release,
    clip,
    default_sampler,
    laplace_scale,
    release,
    release_count,
    release_sum,
)

DEFAULT_EPSILON_PER_RELEASE = Fraction(1, 2)
DEFAULT_DAILY_BUDGET = Fraction(4)
DEFAULT_DELTA = Fraction(1, 10**10)

__all__ = [
    "DEFAULT_DAILY_BUDGET",
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON_PER_RELEASE",
    "DISCRETE_GAUSSIAN",
    "DISCRETE_LAPLACE",
    "DISTRIBUTED_DISCRETE_GAUSSIAN",
    "MAX_SCALE",
    "BudgetExhausted",
    "Charge",
    "DistributedNoise",
    "NoiseSampler",
    "OpenDPSampler",
    "Release",
    "Spending",
    "achieved_epsilon",
    "charge",
    "clip",
    "default_sampler",
    "laplace_scale",
    "plan",
    "release",
    "release_count",
    "release_sum",
    "spending",
    "spent_on",
    "utc_day",
]
