"""Noise for released figures: exact discrete samplers, releases, clipping.

Every figure a peer learns from us (a responder-computed count, an
intersection-sum count or sum, a federation total) is released with integer
noise drawn by an **exact** sampler: discrete Laplace (pure epsilon-DP) for
figures one party releases, discrete Gaussian for shares of distributed noise
(:mod:`.distributed`). Never floating-point noise: textbook float Laplace
leaks through the gaps between floats (Mironov, CCS 2012).

The samplers come from OpenDP (https://opendp.org, the Harvard/OpenDP
project library): its discrete Laplace and discrete Gaussian are the exact
algorithms of Canonne, Kamath and Steinke (NeurIPS 2020), in Rust, on
integers and rationals only, with a written proof per component, drawing
bits from OpenSSL's CSPRNG (``RAND_bytes``; the PyPI wheel is built with
``use-openssl``). We considered: Google's differential-privacy library (its
Python binding, PyDP, is float-based and unmaintained), IBM's diffprivlib
(float mechanisms), Tumult Core (exact too, but pulls in PySpark). OpenDP
gates these two measurements behind its ``contrib`` feature flag (proven
but not yet through its formal vetting), which this module turns on.

The seam: a release takes a :class:`NoiseSampler`; :class:`OpenDPSampler`
is the one a node uses, tests inject their own to check the arithmetic.
Noise is drawn for 0 and added here with Python integers, so releases of
any size (sums reach 2^87) never meet OpenDP's 64-bit saturation; scales
are capped at :data:`MAX_SCALE` so that the noise itself stays far inside
64 bits (a saturated draw is refused, never released).

Who learns what: a :class:`Release` holds the released (noisy) value, the
mechanism, its scale and what it cost; never the true value. Whoever adds
the noise must be the party whose data the figure is about: a party that
knows the noise can take it out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from ..errors import LocalProtocolError

#: Largest noise scale accepted: P(|noise| >= 2^62) is then below e^-1000.
MAX_SCALE = 2**52
_I64_EDGES = (-(2**63), 2**63 - 1)

DISCRETE_LAPLACE = "discrete-laplace"
DISCRETE_GAUSSIAN = "discrete-gaussian"


class NoiseSampler(Protocol):
    """Exact integer noise around 0."""

    def discrete_laplace(self, scale: float) -> int:
        """P(x) proportional to exp(-|x| / scale)."""
        ...

    def discrete_gaussian(self, sigma: float) -> int:
        """P(x) proportional to exp(-x^2 / (2 sigma^2))."""
        ...


class OpenDPSampler:
    """OpenDP's exact samplers (imported on first use: the library is large)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._measurements: dict[tuple[str, float], object] = {}

    def _measurement(self, kind: str, scale: float):  # type: ignore[no-untyped-def]
        with self._lock:
            m = self._measurements.get((kind, scale))
            if m is None:
                from opendp.domains import atom_domain
                from opendp.measurements import make_gaussian, make_laplace
                from opendp.metrics import absolute_distance
                from opendp.mod import enable_features

                enable_features("contrib")
                make = make_laplace if kind == DISCRETE_LAPLACE else make_gaussian
                m = make(atom_domain(T="i64"), absolute_distance(T="i64"), scale=scale)
                if len(self._measurements) > 64:  # scales come from config: a handful
                    self._measurements.clear()
                self._measurements[(kind, scale)] = m
            return m

    def _draw(self, kind: str, scale: float) -> int:
        noise = int(self._measurement(kind, _checked_scale(scale))(0))
        if noise in _I64_EDGES:  # saturated: not a draw from the distribution
            raise LocalProtocolError(f"{kind} noise at scale {scale} saturated 64 bits; refusing to release")
        return noise

    def discrete_laplace(self, scale: float) -> int:
        return self._draw(DISCRETE_LAPLACE, scale)

    def discrete_gaussian(self, sigma: float) -> int:
        return self._draw(DISCRETE_GAUSSIAN, sigma)


_DEFAULT: OpenDPSampler | None = None


def default_sampler() -> OpenDPSampler:
    """The process-wide OpenDP sampler."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = OpenDPSampler()
    return _DEFAULT


def _checked_scale(scale: float) -> float:
    if not (isinstance(scale, float) and math.isfinite(scale) and 0 < scale <= MAX_SCALE):
        raise LocalProtocolError(f"noise scale must be a float in (0, {MAX_SCALE}], not {scale!r}")
    return scale


def exact(value: int | float | str | Fraction, what: str) -> Fraction:
    """A positive, finite privacy parameter as an exact fraction; floats are read
    as the decimal they print as (0.1 is 1/10), as a config file means them."""
    if isinstance(value, bool):
        raise LocalProtocolError(f"{what} must be a number, not {value!r}")
    try:
        f = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise LocalProtocolError(f"{what} must be a positive number, not {value!r}") from None
    if f <= 0:
        raise LocalProtocolError(f"{what} must be positive, not {value!r}")
    return f


def _sensitivity(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LocalProtocolError(f"sensitivity must be a positive integer, not {value!r}")
    return value


def float_at_least(x: Fraction) -> float:
    """The smallest float >= x: scales round up, so a release never costs
    more epsilon than it is charged."""
    f = float(x)
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


@dataclass(frozen=True)
class Release:
    """A released figure: what the peer gets, and what it cost us.

    ``scale`` is the discrete Laplace scale b (P(x) ~ exp(-|x|/b)) or the
    discrete Gaussian sigma. ``epsilon`` (and ``delta``, 0 for Laplace) is
    what the ledger charges. The true value is not here, on purpose.
    """

    value: int
    mechanism: str
    scale: float
    sensitivity: int
    epsilon: Fraction
    delta: Fraction = Fraction(0)


def laplace_scale(epsilon: int | float | str | Fraction, sensitivity: int) -> float:
    """Discrete Laplace scale for epsilon-DP at this L1 sensitivity: b = sensitivity / epsilon,
    rounded up to a float (at most :data:`MAX_SCALE`)."""
    return _checked_scale(float_at_least(Fraction(_sensitivity(sensitivity)) / exact(epsilon, "epsilon")))


def release(
    true_value: int,
    *,
    epsilon: int | float | str | Fraction,
    sensitivity: int,
    sampler: NoiseSampler | None = None,
) -> Release:
    """``true_value`` plus discrete Laplace noise: epsilon-DP when one
    individual changes ``true_value`` by at most ``sensitivity``."""
    if not isinstance(true_value, int) or isinstance(true_value, bool):
        raise LocalProtocolError("a released figure must be an integer")
    scale = laplace_scale(epsilon, sensitivity)
    noise = (sampler or default_sampler()).discrete_laplace(scale)
    return Release(true_value + noise, DISCRETE_LAPLACE, scale, sensitivity, exact(epsilon, "epsilon"))


def release_count(true_count: int, *, epsilon: int | float | str | Fraction, sampler: NoiseSampler | None = None) -> Release:
    """A count (one actor changes it by at most 1)."""
    return release(true_count, epsilon=epsilon, sensitivity=1, sampler=sampler)


def release_sum(
    clipped_total: int, *, bound: int, epsilon: int | float | str | Fraction, sampler: NoiseSampler | None = None
) -> Release:
    """A sum of amounts each clipped to [0, bound] (:func:`clip`): one actor
    changes it by at most ``bound``, so the noise scale is bound / epsilon."""
    return release(clipped_total, epsilon=epsilon, sensitivity=bound, sampler=sampler)


def clip(amounts: Iterable[int], bound: int) -> list[int]:
    """Each amount clipped to [0, bound]: what bounds one actor's influence on a sum.

    Clip per actor before summing (an actor's total over its rows, then
    clipped), or the bound does not hold for the actor.
    """
    _sensitivity(bound)
    return [min(max(int(a), 0), bound) for a in amounts]
