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
(:func:`check_server_setup`) and then queried here in Python, with
OpenMined's own hash definitions (``openmined_params``), on the points it
unblinded itself.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from private_set_intersection.python import ServerSetup

from ..errors import RemoteProtocolError
from .filter_check import CheckedSetup, SetupTerms, check_server_setup
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


Membership = Callable[[bytes], bool]


@dataclass(frozen=True)
class CheckedBuckets:
    """A peer's bucketed setup that passed :func:`check_buckets`."""

    tests: tuple[Membership, ...]  # per bucket: is this unblinded point in it?
    kinds: tuple[str, ...]  # per bucket: "gcs", "bloom_filter" or "raw"

    def matches(self, point: bytes) -> bool:
        return self.tests[bucket_of(point, len(self.tests))](point)


def check_buckets(
    sizes: Sequence[int], setups: Sequence[bytes], *, fpr: float, queries: int, items: int, buckets: int
) -> CheckedBuckets:
    """Refuse any bucketed setup an honest responder could not have sent:
    the announced number of buckets, sizes that add up to the announced set
    size, and every bucket exactly what OpenMined builds for its terms and
    its size (:func:`check_server_setup`, the single setup's check)."""
    if not 2 <= buckets <= MAX_BUCKETS:
        raise RemoteProtocolError(f"peer announced {buckets} buckets (at least 2, at most {MAX_BUCKETS})")
    if len(sizes) != buckets or len(setups) != buckets:
        raise RemoteProtocolError(
            f"peer's bucketed setup has {len(sizes)} sizes and {len(setups)} setups, {buckets} buckets announced"
        )
    if sum(sizes) != items:
        raise RemoteProtocolError(f"peer's bucket sizes add up to {sum(sizes)}, it announced {items} items")
    rate, per_bucket = bucket_terms(fpr, queries, buckets)
    tests, kinds = [], []
    for index, (size, data) in enumerate(zip(sizes, setups)):
        setup = ServerSetup()
        try:
            setup.ParseFromString(data)
        except Exception:  # noqa: BLE001  (protobuf's DecodeError and friends)
            raise RemoteProtocolError(f"peer's bucket {index} is not a psi_proto.ServerSetup") from None
        terms = SetupTerms(false_positive_rate=rate, queries=per_bucket, items=size)
        try:
            checked = check_server_setup(setup, terms)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"bucket {index} of {buckets}: {exc}") from None
        tests.append(membership(setup, checked))
        kinds.append(checked.kind)
    return CheckedBuckets(tuple(tests), tuple(kinds))


def membership(setup: ServerSetup, checked: CheckedSetup) -> Membership:
    """OpenMined's lookup on a checked setup, in Python: GCS (hash mod range
    among the hashes the check decoded), Bloom filter (every one of k bits
    set), raw (the point itself)."""
    kind = setup.WhichOneof("data_structure")
    if kind == "gcs":
        hashes = frozenset(checked.hashes)
        hash_range = setup.gcs.hash_range
        return lambda point: gcs_element_hash(point, hash_range) in hashes
    if kind == "bloom_filter":
        bits = setup.bloom_filter.bits
        num_bits, count = len(bits) * 8, setup.bloom_filter.num_hash_functions

        def in_bloom(point: bytes) -> bool:
            h1, h2 = bloom_element_hashes(point, num_bits)
            for i in range(count):
                index = (h1 + i * h2) % num_bits
                if not bits[index >> 3] >> (index & 7) & 1:
                    return False
            return True

        return in_bloom
    elements = frozenset(setup.raw.encrypted_elements)
    return elements.__contains__
