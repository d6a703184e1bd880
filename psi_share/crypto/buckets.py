"""Bucketed server setups: one OpenMined filter per bucket of blinded points.

A single OpenMined GCS over S items for C queries at rate f has the hash
range ``max(C, S) * C / f``, an int64: 3,000 queries over 100M items at
1e-9 overflow it, and the fallbacks (Bloom filter, raw points) cost 9 to 35
bytes per item. Split by a public function of the blinded point, every
bucket is a small set with a GCS that fits:

* point ``P = H(y)^b`` goes to bucket ``bucket_of(P, B)``: the first 8
  bytes of ``SHA-256("psi-share/bucket/v1" || P)``, big-endian, mod B. The
  requester computes the same bucket from its own ``H(x)^b`` once it has
  unblinded the response, so each of its items is checked against exactly
  one bucket;
* bucket j is exactly the setup OpenMined 2.0.6 builds over its points for
  ``Cb = ceil(C / B)`` queries at rate ``f * Cb / C`` (``bucket_terms``):
  the per-query false-positive rate ``f / C`` is the single setup's, so the
  expected number of false matches over C queries stays at most f however
  the requester's items fall into buckets.

Who learns what: the requester learns the responder's set size (as with one
setup) and how many of the responder's points fall into each bucket, a
public hash of points blinded under a key it does not hold (random-looking
counts; nothing about any item). It must take every bucket: asking for only
the buckets of its own items would tell the responder where its items lie.
The responder learns nothing new.

The requester never hands a bucket to native code: every bucket is checked
(:func:`check_bucket`, the single setup's :func:`check_server_setup`) and
then queried here in Python, with OpenMined's own hash definitions
(``openmined_params``), on the points it unblinded itself. It reads the
setup a bucket at a time (``protocols.psi_buckets``) and keeps nothing of a
bucket once its own points in it are looked up (:class:`BucketLookup`), so
its memory does not grow with the responder's set; a setup taken before the
points exist is kept as compact tests (:func:`membership`: 8 bytes per item
of a GCS bucket).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from private_set_intersection.python import ServerSetup

from ..errors import LocalProtocolError, RemoteProtocolError
from .filter_check import POINT_BYTES, CheckedSetup, SetupTerms, check_server_setup
from .filters import build_setup
from .openmined_params import bloom_element_hashes, gcs_buildable, gcs_element_hash

SETUP_BUCKETS_VERSION = 1
_DOMAIN = b"psi-share/bucket/v1"
# Buckets a requester accepts: bounds the work a responder can make it do
# (1B items at ~1M per bucket is 1,000; C = 2^20 queries needs ~10k-item buckets).
MAX_BUCKETS = 1 << 17
# A bucket's expected size is at most this fraction of the largest size whose
# GCS fits the int64: a binomial bucket size is then far (>100 sigma at any
# size worth bucketing) from the limit. One that still passes it gets
# OpenMined's Bloom filter or raw setup instead (build_setup).
_GCS_HEADROOM = 0.75


def bucket_of(point: bytes, buckets: int) -> int:
    """The bucket of a blinded point (public; both sides compute it)."""
    digest = hashlib.sha256(_DOMAIN + point).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def bucket_terms(fpr: float, queries: int, buckets: int) -> tuple[float, int]:
    """``(rate, queries)`` every bucket's setup is built for: ``Cb =
    ceil(C / B)`` queries at ``f * Cb / C``, so that OpenMined's per-query
    rate (rate / Cb) is the single setup's f / C."""
    per_bucket = -(-queries // buckets)
    return fpr * per_bucket / queries, per_bucket


def bucket_count(fpr: float, queries: int, items: int, target_items: int) -> int:
    """How many buckets a responder splits ``items`` into for ``queries``.

    1 (today's single setup) up to ``target_items``; above, the fewest
    buckets of at most ``target_items`` expected items each whose GCS fits
    OpenMined's int64 with headroom (``_GCS_HEADROOM``). Deterministic in
    its arguments, so the count can be announced before the points exist.
    """
    if items <= target_items:
        return 1
    first = buckets = min(MAX_BUCKETS, max(2, -(-items // target_items)))
    while buckets <= min(items, MAX_BUCKETS):
        rate, per_bucket = bucket_terms(fpr, queries, buckets)
        expected = items / buckets
        if gcs_buildable(rate, per_bucket, math.ceil(expected / _GCS_HEADROOM)):
            return buckets
        buckets = math.ceil(buckets * 1.25)
    # No GCS fits at this per-query rate (f / C below ~2^-53): buckets of the
    # target size, each OpenMined's Bloom filter or raw setup.
    return first


def partition(points: Sequence[bytes], buckets: int) -> list[list[bytes]]:
    """The points of each bucket, in the order given (sorted in, sorted out)."""
    parts: list[list[bytes]] = [[] for _ in range(buckets)]
    for point in points:
        parts[bucket_of(point, buckets)].append(point)
    return parts


def build_bucket(points: Sequence[bytes], fpr: float, queries: int, buckets: int) -> bytes:
    """One bucket's serialized setup (``points`` all of that bucket): the
    smallest setup passing its own check, as for a single setup. A plain
    function of bytes, so that an engine can run it anywhere."""
    rate, per_bucket = bucket_terms(fpr, queries, buckets)
    return build_setup(points, rate, per_bucket).SerializeToString()


# Which of a batch of unblinded points a checked filter holds: their
# positions in the batch, ascending.
Membership = Callable[[Sequence[bytes]], list[int]]


def check_shape(sizes: int, setups: int, size_sum: int, *, items: int, buckets: int) -> None:
    """The checks on a bucketed setup as a whole (``sizes`` and ``setups``:
    how many of each it holds; ``size_sum``: its sizes added up), in the
    order the requester applies them: the announced number of buckets, one
    size and one setup per bucket, sizes adding up to the announced set size."""
    if not 2 <= buckets <= MAX_BUCKETS:
        raise RemoteProtocolError(f"peer announced {buckets} buckets (at least 2, at most {MAX_BUCKETS})")
    if sizes != buckets or setups != buckets:
        raise RemoteProtocolError(f"peer's bucketed setup has {sizes} sizes and {setups} setups, {buckets} buckets announced")
    if size_sum != items:
        raise RemoteProtocolError(f"peer's bucket sizes add up to {size_sum}, it announced {items} items")


def check_bucket(index: int, size: int, data: bytes, terms: SetupTerms, buckets: int) -> tuple[str, Membership]:
    """Bucket ``index`` of ``buckets`` (``size`` points announced; ``terms``:
    the whole setup's rate and queries): exactly what OpenMined builds for its
    terms and size (:func:`check_server_setup`, the single setup's check), or
    RemoteProtocolError naming the bucket. Returns its kind and its
    membership test; nothing else of it is kept."""
    rate, per_bucket = bucket_terms(terms.false_positive_rate, terms.queries, buckets)
    setup = ServerSetup()
    try:
        setup.ParseFromString(data)
    except Exception:  # noqa: BLE001  (protobuf's DecodeError and friends)
        raise RemoteProtocolError(f"peer's bucket {index} is not a psi_proto.ServerSetup") from None
    try:
        checked = check_server_setup(setup, SetupTerms(false_positive_rate=rate, queries=per_bucket, items=size))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"bucket {index} of {buckets}: {exc}") from None
    return checked.kind, membership(setup, checked)


@dataclass(frozen=True)
class CheckedBuckets:
    """A peer's bucketed setup that passed its checks, kept as each bucket's
    compact membership test (:func:`membership`: 8 bytes per item of a GCS
    bucket, the bits of a Bloom filter, 33 bytes per raw point)."""

    tests: tuple[Membership, ...]  # per bucket: which of these unblinded points does it hold?
    kinds: tuple[str, ...]  # per bucket: "gcs", "bloom_filter" or "raw"

    def matching(self, points: Sequence[bytes]) -> list[int]:
        """The positions in ``points`` of those the setup holds, ascending."""
        waiting = _by_bucket(points, len(self.tests))
        return sorted(at for bucket, (positions, pts) in waiting.items()
                      for at in (positions[i] for i in self.tests[bucket](pts)))

    def matches(self, point: bytes) -> bool:
        return bool(self.tests[bucket_of(point, len(self.tests))]([point]))


def check_buckets(
    sizes: Sequence[int], setups: Sequence[bytes], *, fpr: float, queries: int, items: int, buckets: int
) -> CheckedBuckets:
    """Refuse any bucketed setup an honest responder could not have sent
    (:func:`check_shape`, then :func:`check_bucket` for each bucket); the
    setup's fields already parsed. A requester reading it off the wire uses
    ``protocols.psi_buckets``, which applies the same checks bucket by bucket."""
    check_shape(len(sizes), len(setups), sum(sizes), items=items, buckets=buckets)
    terms = SetupTerms(false_positive_rate=fpr, queries=queries, items=items)
    checked = [check_bucket(index, size, data, terms, buckets) for index, (size, data) in enumerate(zip(sizes, setups))]
    return CheckedBuckets(tuple(test for _, test in checked), tuple(kind for kind, _ in checked))


def membership(setup: ServerSetup, checked: CheckedSetup) -> Membership:
    """OpenMined's lookup on a checked setup, in Python, keeping only what
    the lookup needs: GCS, the hashes the check decoded (8 bytes each, looked
    up by bisection); Bloom filter, its bits (every one of k set); raw, the
    sorted points packed end to end (33 bytes each, searched with numpy)."""
    kind = setup.WhichOneof("data_structure")
    if kind == "gcs":
        return _in_gcs(checked.hashes, setup.gcs.hash_range)
    if kind == "bloom_filter":
        return _in_bloom(setup.bloom_filter.bits, setup.bloom_filter.num_hash_functions)
    return _in_raw(b"".join(setup.raw.encrypted_elements))


def _in_gcs(hashes: Sequence[int], hash_range: int) -> Membership:
    def test(points: Sequence[bytes]) -> list[int]:
        out = []
        for at, point in enumerate(points):
            value = gcs_element_hash(point, hash_range)
            index = bisect.bisect_left(hashes, value)
            if index < len(hashes) and hashes[index] == value:
                out.append(at)
        return out

    return test


def _in_bloom(bits: bytes, count: int) -> Membership:
    num_bits = len(bits) * 8

    def held(point: bytes) -> bool:
        h1, h2 = bloom_element_hashes(point, num_bits)
        for i in range(count):
            index = (h1 + i * h2) % num_bits
            if not bits[index >> 3] >> (index & 7) & 1:
                return False
        return True

    return lambda points: [at for at, point in enumerate(points) if held(point)]


def _in_raw(packed: bytes) -> Membership:
    # The check made these sorted, distinct, 33 bytes each. numpy's "S33"
    # compares all 33 bytes (it only strips trailing zeros when an element
    # is read back, so equality is taken from the packed bytes instead).
    sorted_points = np.frombuffer(packed, dtype=f"S{POINT_BYTES}")

    def test(points: Sequence[bytes]) -> list[int]:
        wanted = [(at, p) for at, p in enumerate(points) if len(p) == POINT_BYTES]
        if not wanted or not len(sorted_points):
            return []
        found = np.searchsorted(sorted_points, np.array([p for _, p in wanted], dtype=f"S{POINT_BYTES}")).tolist()
        return [at for (at, point), i in zip(wanted, found)
                if packed[i * POINT_BYTES : (i + 1) * POINT_BYTES] == point]

    return test


def _by_bucket(points: Sequence[bytes], buckets: int) -> dict[int, tuple[list[int], list[bytes]]]:
    """``points`` grouped by bucket: positions and points of each."""
    waiting: dict[int, tuple[list[int], list[bytes]]] = {}
    for at, point in enumerate(points):
        positions, pts = waiting.setdefault(bucket_of(point, buckets), ([], []))
        positions.append(at)
        pts.append(point)
    return waiting


class PointLookup(Protocol):
    """Where the requester's unblinded points go to be looked up."""

    def add(self, first: int, points: Sequence[bytes]) -> None:
        """``points``: the unblinded points of our items ``first``, ``first + 1``, ..."""

    def found(self) -> tuple[int, ...]:
        """The indices of our items the responder's setup holds, ascending."""


class FilterLookup:
    """Our unblinded points, looked up as they come (:meth:`add`) in a
    filter checked before them (a single setup, or every bucket kept as
    :class:`CheckedBuckets`)."""

    def __init__(self, test: Membership) -> None:
        self._test = test
        self._found: list[int] = []

    def add(self, first: int, points: Sequence[bytes]) -> None:
        self._found.extend(first + at for at in self._test(points))

    def found(self) -> tuple[int, ...]:
        return tuple(sorted(self._found))


class BucketLookup:
    """Our unblinded points waiting, by bucket, for a bucketed setup that is
    read after them: :meth:`bucket_checked` looks up the points of a bucket
    once the bucket has passed its check, and forgets them. The requester
    holds its own points (about 100 bytes per item) and, while a bucket is
    checked, that one bucket; nothing of a bucket is kept after it."""

    def __init__(self, buckets: int) -> None:
        self._buckets = buckets
        self._waiting: dict[int, tuple[list[int], list[bytes]]] = {}
        self._found: list[int] = []

    def add(self, first: int, points: Sequence[bytes]) -> None:
        for bucket, (positions, pts) in _by_bucket(points, self._buckets).items():
            indices, waiting = self._waiting.setdefault(bucket, ([], []))
            indices.extend(first + at for at in positions)
            waiting.extend(pts)

    def bucket_checked(self, index: int, test: Membership) -> None:
        indices, points = self._waiting.pop(index, ([], []))
        if points:
            self._found.extend(indices[at] for at in test(points))

    def found(self) -> tuple[int, ...]:
        if self._waiting:  # the setup's reader checks every bucket before this is asked
            raise LocalProtocolError(f"{len(self._waiting)} buckets of our points were never checked")
        return tuple(sorted(self._found))
