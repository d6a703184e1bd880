"""Distributed noise for federation totals: every contributor adds a share.

A federation total is decrypted by its initiator and released to every
contributor, so no single party may add all the noise (it could take it out
again). Each of the k contributors, the initiator included, draws a share
of discrete Gaussian noise, ``N_Z(0, sigma^2)`` with the same sigma, and adds
it to its own figure inside the ciphertext; the total carries the sum of
the k shares and nobody sees any share but its own.

The exact guarantee
-------------------
A party that knows ``known_shares`` of the shares (its own: 1 by default;
more if parties collude) faces the sum of the other ``n = k -
known_shares`` shares. By Kairouz, Liu and Steinke, "The Distributed
Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation" (ICML 2021), Theorem 14 with dimension d = 1, a sum of n
independent ``N_Z(0, sigma^2)`` (sigma >= 1/2) added to a figure whose
L1 = L2 sensitivity is Delta satisfies ``(eps_hat^2 / 2)``-concentrated DP
with

    eps_hat = min( sqrt(Delta^2 / (n sigma^2) + tau / 2),  Delta / (sqrt(n) sigma) + tau ),
    tau     = 10 * sum_{j=1}^{n-1} exp(-2 pi^2 sigma^2 j / (j + 1)),

and rho-concentrated DP gives (eps, delta)-DP with ``eps = rho + 2
sqrt(rho ln(1/delta))`` (Bun and Steinke, TCC 2016, Proposition 1.3).
:func:`plan` picks the smallest sigma (>= 1) for which that eps is at most
the target; tau is the whole price of the sum not being exactly a discrete
Gaussian, and it is below 1e-30 once sigma >= 3 (the plan records the eps it
actually achieves). The guarantee is about one contributor's figure
changing by at most Delta (its clipped contribution); sensitivity and
clipping are the caller's, as for single releases.

Shares are signed: inside Paillier a negative share is ``n_key - |share|``
(mod the key's n), and a decrypted total above ``n_key / 2`` is negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import LocalProtocolError
from .mechanisms import MAX_SCALE, NoiseSampler, Release, _sensitivity, default_sampler, exact

DISTRIBUTED_DISCRETE_GAUSSIAN = "distributed-discrete-gaussian"
_MIN_SIGMA = 1.0


def _tau(sigma: float, n: int) -> float:
    return 10.0 * sum(math.exp(-2 * math.pi**2 * sigma**2 * j / (j + 1)) for j in range(1, n))


def achieved_epsilon(sigma: float, *, honest_shares: int, sensitivity: int, delta: Fraction) -> float:
    """The eps of (eps, delta)-DP that ``honest_shares`` shares of N_Z(0, sigma^2) give."""
    n, d = honest_shares, sensitivity
    tau = _tau(sigma, n)
    eps_hat = min(math.sqrt(d * d / (n * sigma * sigma) + tau / 2), d / (math.sqrt(n) * sigma) + tau)
    rho = eps_hat * eps_hat / 2
    return rho + 2 * math.sqrt(rho * math.log(1 / float(delta)))


@dataclass(frozen=True)
class DistributedNoise:
    """How every contributor of one total draws its share (all use the same)."""

    sigma: float  # of each share
    contributors: int
    known_shares: int
    sensitivity: int
    epsilon: Fraction  # the target, charged to the ledger
    delta: Fraction
    achieved_epsilon: float  # what the theorem gives for this sigma (<= epsilon)

    def draw(self, sampler: NoiseSampler | None = None) -> int:
        """This contributor's share (add it to the figure; never send it alone)."""
        return (sampler or default_sampler()).discrete_gaussian(self.sigma)

    def release(self, noisy_total: int) -> Release:
        """The record of a released total that carries every contributor's share."""
        return Release(noisy_total, DISTRIBUTED_DISCRETE_GAUSSIAN, self.sigma, self.sensitivity, self.epsilon, self.delta)


def plan(
    *,
    epsilon: int | float | str | Fraction,
    delta: int | float | str | Fraction,
    sensitivity: int,
    contributors: int,
    known_shares: int = 1,
) -> DistributedNoise:
    """The share sigma for a total over ``contributors`` labs that is
    (epsilon, delta)-DP against any party knowing ``known_shares`` shares."""
    eps, dlt, sens = exact(epsilon, "epsilon"), exact(delta, "delta"), _sensitivity(sensitivity)
    if dlt >= 1:
        raise LocalProtocolError("delta must be below 1")
    if not isinstance(contributors, int) or not isinstance(known_shares, int) or not 1 <= known_shares < contributors:
        raise LocalProtocolError("need 1 <= known_shares < contributors: someone's share must stay unknown")
    n = contributors - known_shares
    target = float(eps) * (1 - 1e-9)  # float accounting, with margin

    def ok(sigma: float) -> bool:
        return achieved_epsilon(sigma, honest_shares=n, sensitivity=sens, delta=dlt) <= target

    lo, hi = _MIN_SIGMA, _MIN_SIGMA
    if not ok(hi):
        while not ok(hi):
            lo, hi = hi, hi * 2
            if hi > MAX_SCALE:
                raise LocalProtocolError(f"epsilon {epsilon} is too small for sensitivity {sensitivity}")
        for _ in range(200):
            mid = (lo + hi) / 2
            if mid in (lo, hi):
                break
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return DistributedNoise(
        hi, contributors, known_shares, sens, eps, dlt,
        achieved_epsilon(hi, honest_shares=n, sensitivity=sens, delta=dlt),
    )
