"""The responder's OpenMined server setup, built from its blinded points.

OpenMined's ``CreateSetupMessage`` blinds the items and builds the filter in
one call, so every filter size would cost a blinding of the whole set. Here
the blinding is done once (OpenMined's raw setup: the sorted compressed
points ``H(y)^k``) and each filter is built from those points exactly as
OpenMined 2.0.6 builds it (``gcs.cpp``, ``golomb.cpp``, ``bloom_filter.cpp``:
same hashes, same parameters, byte-identical output, which the tests check
against the library). Any OpenMined client reads them.

Which filter: every kind OpenMined's arithmetic can build correctly for the
sizes and that meets the false-positive rate (``openmined_params.gcs_buildable``;
``filter_check.bloom_meets_rate``, which rules the Bloom filter out at small
rates: OpenMined's index scheme misses them; raw always can), the smallest
serialized one, raw on a tie (it has no false positives at all). What the requester learns is the same for all three: the responder's
set size, and whether each of its own items is in the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from private_set_intersection.python import ServerSetup

from ..errors import LocalProtocolError, RemoteProtocolError
from . import golomb
from .filter_check import SetupTerms, bloom_meets_rate, check_server_setup
from .openmined_params import (
    bloom_buildable,
    bloom_element_hashes,
    bloom_shape,
    gcs_buildable,
    gcs_element_hash,
    gcs_hash_range,
)

RAW, GCS, BLOOM = "raw", "gcs", "bloom_filter"

# Hash indices computed per batch while filling a Bloom filter (bounds memory).
_BLOOM_BATCH_INDICES = 1 << 22


def raw_setup(points: Sequence[bytes]) -> ServerSetup:
    """OpenMined's raw setup: the points, sorted (Raw::Create sorts them)."""
    setup = ServerSetup()
    setup.raw.SetInParent()  # an empty set is still a raw setup, not "no filter"
    setup.raw.encrypted_elements.extend(sorted(points))
    return setup


def gcs_setup(points: Sequence[bytes], fpr: float, queries: int) -> ServerSetup | None:
    """GCS::Create over the points, or None where OpenMined cannot build one."""
    if not gcs_buildable(fpr, queries, len(points)):
        return None
    hash_range = gcs_hash_range(fpr, queries, len(points))
    hashes = np.fromiter((gcs_element_hash(p, hash_range) for p in points), dtype=np.int64, count=len(points))
    hashes.sort()
    div, bits = golomb.compress(hashes)
    setup = ServerSetup()
    setup.gcs.SetInParent()
    setup.gcs.div = div
    setup.gcs.hash_range = hash_range
    setup.gcs.bits = bits
    return setup


def bloom_setup(points: Sequence[bytes], fpr: float, queries: int) -> ServerSetup | None:
    """BloomFilter::Create over the points, or None where it is not well defined."""
    if not bloom_buildable(fpr, queries, len(points)):
        return None
    hashes, num_bytes = bloom_shape(fpr, queries, len(points))
    num_bits = num_bytes * 8
    pairs = np.array([bloom_element_hashes(p, num_bits) for p in points], dtype=np.int64).reshape(-1, 2)
    bits = np.zeros(num_bits, dtype=np.bool_)
    steps = np.arange(hashes, dtype=np.int64)
    batch = max(1, _BLOOM_BATCH_INDICES // hashes)
    for start in range(0, len(pairs), batch):
        part = pairs[start : start + batch]
        # (h1 + i * h2) % num_bits, as BloomFilter::Hash; below 2^63 (bloom_buildable).
        bits[((part[:, :1] + steps * part[:, 1:]) % num_bits).ravel()] = True
    setup = ServerSetup()
    setup.bloom_filter.num_hash_functions = hashes
    setup.bloom_filter.bits = np.packbits(bits, bitorder="little").tobytes()
    return setup


def bloom_setup_bytes(fpr: float, queries: int, items: int) -> int | None:
    """The serialized size of the Bloom setup for these sizes, without building
    it; None where OpenMined cannot build one or it cannot meet the rate."""
    if not bloom_meets_rate(fpr, queries, items):
        return None
    hashes, num_bytes = bloom_shape(fpr, queries, items)
    setup = ServerSetup()
    setup.bloom_filter.num_hash_functions = hashes
    # Protobuf sizes depend only on lengths: an all-zero string of the right length will do.
    setup.bloom_filter.bits = bytes(num_bytes)
    return setup.ByteSize()


def setup_candidates(points: Sequence[bytes], fpr: float, queries: int) -> Iterator[ServerSetup]:
    """Every setup OpenMined can build correctly for these sizes, smallest
    first (raw before a filter of the same size), each built only when asked
    for: raw's and the Bloom filter's sizes follow from the sizes alone, the
    GCS's from its elements (it is built to be measured)."""
    raw = raw_setup(points)
    gcs = gcs_setup(points, fpr, queries)
    sized: list[tuple[int, int, Callable[[], ServerSetup | None]]] = [(raw.ByteSize(), 0, lambda: raw)]
    if gcs is not None:
        sized.append((gcs.ByteSize(), 1, lambda: gcs))
    # OpenMined's Bloom filter indexes bits by h1 + i*h2 mod m, and m is not
    # prime: when h2 shares factors with m a query tests few distinct bits (with
    # h2 = 0, one), so a query matches falsely about once in 2m at any size: h2 = 0
    # alone gives C/2m = 1/(2.9 k) false matches over C queries, all short periods
    # 0.016 per 1M x 1M session at 1e-9 (bloom_false_matches), not 1e-9.
    # bloom_setup_bytes is None unless that expectation stays within fpr.
    bloom_bytes = bloom_setup_bytes(fpr, queries, len(points))
    if bloom_bytes is not None:
        sized.append((bloom_bytes, 2, lambda: bloom_setup(points, fpr, queries)))
    for _, _, build in sorted(sized, key=lambda entry: (entry[0], entry[1])):
        setup = build()
        if setup is not None:
            yield setup


def build_setup(points: Sequence[bytes], fpr: float, queries: int) -> ServerSetup:
    """The smallest setup for ``points`` that passes the requester's own
    check (:func:`check_server_setup`): a filter that cannot be built
    correctly is never served. Raw always can; reaching the end is our bug."""
    terms = SetupTerms(false_positive_rate=fpr, queries=queries, items=len(points))
    problems = []
    for setup in setup_candidates(points, fpr, queries):
        try:
            check_server_setup(setup, terms, own_points=True)
        except RemoteProtocolError as exc:  # ours, not a peer's: try the next kind
            problems.append(str(exc).replace("peer's", "our"))
            continue
        return setup
    raise LocalProtocolError("no server setup passed its own check: " + "; ".join(problems))
