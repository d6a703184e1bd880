"""Checking an OpenMined server setup before OpenMined reads it.

OpenMined's client trusts the setup it is given: a forged Golomb string makes
it read past the end of its buffer (SIGSEGV), and an all-ones Bloom filter
makes every item "match". So the requester checks every filter here, in
Python, against what the responder announced (its set size, the
false-positive rate and the number of queries the filter is built for) and
what OpenMined 2.0.6 computes from those (``openmined_params``), before any
native call:

* **GCS**: OpenMined must be able to build one at all for these sizes; the
  hash range must be exactly ``max(C, S) * C / fpr`` as OpenMined computes it;
  the Golomb string must decode the way OpenMined's encoder writes it (every
  code whole, strictly increasing values below the hash range, no trailing
  bytes), hold at most S elements (fewer only by plausible hash collisions),
  and carry the divisor OpenMined derives from its largest value and S.
* **Bloom filter**: one that can meet the announced rate at all (OpenMined's
  index scheme misses it for small rates: ``bloom_meets_rate``), the number
  of hash functions and of bytes exactly as OpenMined sizes them for these
  sizes, and no more bits set than S items can set (an all-ones filter
  claims every item).
* **raw**: exactly S elements, each a valid compressed P-256 point, sorted
  and distinct.

The responder runs the same check on the setup it built before serving it.
Failures raise :class:`RemoteProtocolError` naming the filter and what is
wrong; nothing in a message is derived from an identifier.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gmpy2
from private_set_intersection.python import ServerSetup

from ..errors import RemoteProtocolError
from . import golomb
from .ec import P256_B, P256_P
from .openmined_params import (
    bloom_buildable,
    bloom_false_matches,
    bloom_shape,
    gcs_buildable,
    gcs_hash_range,
    golomb_div,
)

POINT_BYTES = 33
_P = gmpy2.mpz(P256_P)
_B = gmpy2.mpz(P256_B)
# Honest filters stay within this many standard deviations of their expected
# collisions (GCS) or set bits (Bloom); beyond it they are refused.
_SIGMAS = 10


@dataclass(frozen=True)
class SetupTerms:
    """What the responder announced for its filter (PsiOpened)."""

    false_positive_rate: float
    queries: int  # the requester set size the filter is built for (max_set_size)
    items: int  # the responder's set size

    def describe(self) -> str:
        return f"{self.items} items and {self.queries} queries at false-positive rate {self.false_positive_rate:g}"


@dataclass(frozen=True)
class CheckedSetup:
    """A setup that passed :func:`check_server_setup`."""

    kind: str  # "raw", "gcs" or "bloom_filter"
    elements: int  # elements it holds (GCS: distinct hashes; Bloom: bits set)
    # GCS: the decoded hashes, ascending, 8 bytes each (so that a lookup in
    # Python need not decode twice, and a 1M-item bucket costs 8 MB, not 40).
    hashes: Sequence[int] = field(default=(), repr=False, compare=False)


def check_server_setup(setup: ServerSetup, terms: SetupTerms, *, own_points: bool = False) -> CheckedSetup:
    """Refuse any setup an honest OpenMined responder could not have sent.

    ``own_points`` is for the responder checking the setup it built from
    points OpenMined itself produced: raw points are then not each lifted
    onto the curve again (the rest of the check is the same).
    """
    if terms.items < 0 or terms.queries < 1 or not 0 < terms.false_positive_rate < 1:
        raise RemoteProtocolError(f"peer announced impossible filter terms ({terms.describe()})")
    kind = setup.WhichOneof("data_structure")
    if kind == "gcs":
        return _check_gcs(setup.gcs, terms)
    if kind == "bloom_filter":
        return _check_bloom(setup.bloom_filter, terms)
    if kind == "raw":
        return _check_raw(list(setup.raw.encrypted_elements), terms, own_points)
    raise RemoteProtocolError("peer's ServerSetup holds no filter")


def _refuser(name: str, terms: SetupTerms) -> Callable[[str], RemoteProtocolError]:
    """Errors naming the peer's filter, what is wrong, and what was announced."""
    return lambda what: RemoteProtocolError(f"peer's {name} {what} (announced {terms.describe()})")


def _check_gcs(gcs, terms: SetupTerms) -> CheckedSetup:  # type: ignore[no-untyped-def]
    refuse = _refuser("GCS filter", terms)
    fpr, queries, items = terms.false_positive_rate, terms.queries, terms.items
    if not gcs_buildable(fpr, queries, items):
        raise refuse("is one OpenMined cannot build for these sizes (its hash range or divisor breaks down)")
    expected_range = gcs_hash_range(fpr, queries, items)
    if gcs.hash_range != expected_range:
        raise refuse(f"has hash range {gcs.hash_range}, OpenMined's is {expected_range}")
    try:
        hashes = golomb.decode(gcs.bits, gcs.div, gcs.hash_range, items, array("Q"))
    except golomb.GolombError as exc:
        raise refuse(f"is malformed: {exc}") from None
    if items and not hashes:
        raise refuse("holds no element")
    missing = items - len(hashes)
    if missing > _collision_slack(items, gcs.hash_range):
        raise refuse(f"holds {len(hashes)} elements, far fewer than announced")
    expected_div = golomb_div(hashes[-1], items) if hashes else 0
    if gcs.div != expected_div:
        raise refuse(f"has divisor {gcs.div}, OpenMined's for its elements is {expected_div}")
    return CheckedSetup("gcs", len(hashes), hashes)


def _collision_slack(items: int, hash_range: int) -> int:
    """How many of ``items`` hashes may honestly collide in ``hash_range``
    (the GCS keeps one of each): the smallest k with P(more than k) < 2^-30
    (an honest filter is refused less than once in a billion sessions),
    bounded by the expected number of colliding pairs ``lam`` (a Poisson tail
    bound ``lam^j / j!``; for ``lam >= 1``, ``lam + 10 sqrt(lam) + 30``). With
    OpenMined's hash ranges ``lam`` is ~1e-9 or less: no element may be missing."""
    lam = items * (items - 1) / (2 * hash_range)
    if lam >= 1:
        return math.ceil(lam + 10 * math.sqrt(lam) + 30)
    if lam == 0:
        return 0
    k = 0
    while (k + 1) * math.log(lam) - math.lgamma(k + 2) >= -30 * math.log(2):
        k += 1
    return k


def _check_bloom(bloom, terms: SetupTerms) -> CheckedSetup:  # type: ignore[no-untyped-def]
    refuse = _refuser("Bloom filter", terms)
    fpr, queries, items = terms.false_positive_rate, terms.queries, terms.items
    if not bloom_buildable(fpr, queries, items):
        raise refuse("is one OpenMined cannot build for these sizes")
    if not bloom_meets_rate(fpr, queries, items):
        raise refuse("cannot meet the announced rate (OpenMined's Bloom index scheme makes more false matches)")
    hashes, num_bytes = bloom_shape(fpr, queries, items)
    if bloom.num_hash_functions != hashes:
        raise refuse(f"has {bloom.num_hash_functions} hash functions, OpenMined uses {hashes}")
    if len(bloom.bits) != num_bytes:
        raise refuse(f"has {len(bloom.bits)} bytes, OpenMined's has {num_bytes}")
    ones = int.from_bytes(bloom.bits, "little").bit_count()
    limit = bloom_max_bits_set(items, hashes, num_bytes * 8)
    if ones > limit:
        raise refuse(f"has {ones} of {num_bytes * 8} bits set, more than {items} items can set ({limit})")
    return CheckedSetup("bloom_filter", ones)


def bloom_meets_rate(fpr: float, queries: int, items: int) -> bool:
    """Whether OpenMined's Bloom filter for these sizes keeps the expected
    number of false matches over ``queries`` queries within ``fpr``, even
    filled up to what the check accepts (``bloom_false_matches``, with a
    factor of 2 to spare: it takes a query's bits as independent, and rates
    measured against real filters ran up to 1.3 times it)."""
    if not bloom_buildable(fpr, queries, items):
        return False
    hashes, num_bytes = bloom_shape(fpr, queries, items)
    bits_set = bloom_max_bits_set(items, hashes, num_bytes * 8)
    return 2 * bloom_false_matches(queries, hashes, num_bytes * 8, bits_set) <= fpr


def bloom_max_bits_set(items: int, hashes: int, num_bits: int) -> int:
    """The most bits ``items`` honest insertions of ``hashes`` indices each
    set in ``num_bits``: never above ``items * hashes``, and at most the
    expected fill plus _SIGMAS deviations (bounding the false-positive rate
    a forged filter can reach close to the honest one)."""
    draws = items * hashes
    expected = num_bits * -math.expm1(draws * math.log1p(-1 / num_bits)) if num_bits > 1 else min(1, draws)
    return min(draws, num_bits, math.ceil(expected + _SIGMAS * math.sqrt(expected) + 8))


def _check_raw(elements: list[bytes], terms: SetupTerms, own_points: bool) -> CheckedSetup:
    refuse = _refuser("raw setup", terms)
    if len(elements) != terms.items:
        raise refuse(f"holds {len(elements)} elements")
    for index, point in enumerate(elements):
        if len(point) != POINT_BYTES or not (own_points or is_compressed_point(point)):
            raise refuse(f"element {index + 1} is not a compressed P-256 point")
    if any(a >= b for a, b in zip(elements, elements[1:])):
        raise refuse("is not sorted or repeats an element")
    return CheckedSetup("raw", len(elements))


def is_compressed_point(point: bytes) -> bool:
    """Whether ``point`` is a compressed P-256 point (0x02/0x03 ‖ x, x on the curve)."""
    if len(point) != POINT_BYTES or point[0] not in (2, 3):
        return False
    x = gmpy2.mpz(int.from_bytes(point[1:], "big"))
    if x >= _P:
        return False
    rhs = (x * x * x - 3 * x + _B) % _P
    return rhs == 0 or gmpy2.legendre(rhs, _P) == 1
