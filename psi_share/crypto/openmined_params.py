"""OpenMined PSI 2.0.6's own arithmetic for its server setups, done in Python.

Every function here repeats, operation for operation, what the C++ of
openmined-psi 2.0.6 computes (tag v2.0.6 of github.com/OpenMined/PSI), in the
same IEEE-754 doubles and the same libm, so that the node knows *before*
building or reading a filter what OpenMined will do with it. Nothing here is
an estimate; where the C++ has undefined behaviour, the comment says what the
x86-64 build does (and the tests check it against the real library).

``psi_server.cpp``, ``PsiServer::CreateSetupMessage``::

    double corrected_fpr = fpr / num_client_inputs;

``datastructure/gcs.cpp``, ``GCS::Create``::

    auto hash_range = static_cast<int64_t>(
        std::max(num_client_inputs, num_server_inputs) / fpr);    // fpr: corrected

so the hash range is ``max(C, S) * C / fpr`` (C the client's set size the
setup is built for, S the server's), held in an int64. A double >= 2^63 cast
to int64 is undefined; x86-64 (``cvttsd2si``) gives INT64_MIN (-2^63), which
is what OpenMined then serializes.

``datastructure/golomb.cpp``, ``golomb_compress`` (on the sorted hashes)::

    auto avg = static_cast<double>(sorted_arr[size - 1] + 1) / sorted_arr.size();
    auto prob = 1 / avg;
    int64_t div = static_cast<int64_t>(std::max(
        0.0, std::round(-std::log2(-std::log2(1.0 - prob)))));

When ``1.0 - prob`` rounds to 1.0 (the set is tiny for its hash range: avg
above about 2^53) the expression is +inf and ``div`` becomes INT64_MIN: the
build then fails (``basic_string::_M_replace_aux``) or writes garbage.

``datastructure/bloom_filter.cpp``, ``BloomFilter::CreateEmpty`` (called with
``max(num_client_inputs, num_server_inputs)`` elements)::

    int num_hash_functions = static_cast<int>(std::ceil(-std::log2(fpr)));
    int64_t num_bytes = static_cast<int64_t>(
        std::ceil(-max_elements * std::log2(fpr) / std::log(2) / 8));

Element hashes (``GCS::Hash``, ``BloomFilter::Hash``): SHA-256 of the
33-byte compressed point read as a big-endian integer, reduced modulo the
hash range (GCS) or the number of bits (Bloom: ``SHA256("1" || x)`` and
``SHA256("2" || x)``, the i-th index ``(h1 + i * h2) % num_bits``).

That Bloom index scheme does not deliver the rate the filter is sized for:
when ``h2`` shares a factor with ``num_bits`` the indices repeat, and with
``h2 = 0`` (one query in ``num_bits``) all of them are one bit, so a query
matches falsely about once in ``2 * num_bits`` whatever ``fpr`` was asked
for (``bloom_false_matches``; measured: 2.7e-5 per query where 1e-12 was
nominal). A Bloom filter is only correct where that stays within the rate.
"""

from __future__ import annotations

import hashlib
import math

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# Largest Golomb divisor any filter of ours can carry. A GCS that OpenMined
# can build at all has 1 - prob < 1 in doubles, i.e. prob >= 2^-53, which
# gives div <= 53; the decoder's shifts stay defined up to 62.
MAX_GCS_DIV = 62


def cast_int64(value: float) -> int:
    """``static_cast<int64_t>(double)`` as x86-64 computes it (``cvttsd2si``):
    truncation toward zero, and INT64_MIN for NaN or anything out of range."""
    if math.isnan(value) or not INT64_MIN <= value < 2.0**63:
        return INT64_MIN
    return int(value)


def cast_int32(value: float) -> int:
    """``static_cast<int>(double)`` on x86-64: INT32_MIN when out of range."""
    if math.isnan(value) or not -(2.0**31) <= value < 2.0**31:
        return -(2**31)
    return int(value)


def cpp_round(value: float) -> float:
    """``std::round``: halfway cases away from zero (Python's round() rounds
    them to even). Exact for every double: ``value - floor(value)`` is."""
    if math.isinf(value) or math.isnan(value):
        return value
    low = math.floor(value)
    frac = value - low
    if value >= 0:
        return float(low + 1) if frac >= 0.5 else float(low)
    return float(low + 1) if frac > 0.5 else float(low)


def corrected_fpr(fpr: float, client_inputs: int) -> float:
    """psi_server.cpp: the per-query rate, ``fpr / num_client_inputs``."""
    return fpr / client_inputs


def gcs_hash_range(fpr: float, client_inputs: int, server_inputs: int) -> int:
    """The ``hash_range`` OpenMined puts in a GCS built for ``client_inputs``
    queries over ``server_inputs`` elements at ``fpr`` (INT64_MIN when the
    double overflows the int64)."""
    return cast_int64(max(client_inputs, server_inputs) / corrected_fpr(fpr, client_inputs))


def golomb_div(max_hash: int, count: int) -> int:
    """The Golomb divisor (log2) golomb.cpp picks for ``count`` sorted hashes
    (duplicates included) whose largest is ``max_hash``; 0 for no hashes.
    INT64_MIN where OpenMined's double arithmetic produces infinity."""
    if count == 0:
        return 0
    avg = float(max_hash + 1) / count
    prob = 1 / avg
    complement = 1.0 - prob
    # C's log2 gives -inf at 0 and NaN below; Python's raises, so spell it out.
    if complement < 0:
        value = math.nan
    elif complement == 0:
        value = -math.inf  # -log2(-log2(0)) = -log2(+inf)
    elif complement == 1.0:
        value = math.inf  # -log2(-0.0) = -(-inf)
    else:
        value = -math.log2(-math.log2(complement))
    # std::max(0.0, x) returns its first argument when x is NaN (0.0 < NaN is false).
    rounded = cpp_round(value)
    chosen = rounded if rounded > 0.0 else 0.0
    return cast_int64(chosen)


def bloom_shape(fpr: float, client_inputs: int, server_inputs: int) -> tuple[int, int]:
    """``(num_hash_functions, num_bytes)`` of the Bloom filter OpenMined builds
    for ``client_inputs`` queries over ``server_inputs`` elements at ``fpr``."""
    rate = corrected_fpr(fpr, client_inputs)
    max_elements = max(client_inputs, server_inputs)
    hashes = cast_int32(math.ceil(-math.log2(rate)))
    num_bytes = cast_int64(math.ceil(-max_elements * math.log2(rate) / math.log(2) / 8))
    return hashes, num_bytes


def bloom_false_matches(queries: int, hashes: int, num_bits: int, bits_set: int) -> float:
    """Expected false matches over ``queries`` queries (items the filter does
    not hold) against an OpenMined Bloom filter with ``hashes`` hash functions
    and ``bits_set`` of its ``num_bits`` bits set.

    A query's indices ``(h1 + i * h2) % num_bits`` cycle with period ``j =
    num_bits / gcd(h2, num_bits)``: it tests ``min(hashes, j)`` distinct bits.
    Exactly phi(j) of the ``num_bits`` values of ``h2`` give period j (j
    dividing ``num_bits``), so with a fraction f of bits set a query matches
    with probability ``sum_j phi(j) / num_bits * f^min(hashes, j)`` (tested
    bits taken as independent; SHA-256 makes h1 and h2 uniform).
    """
    fill = min(1.0, bits_set / num_bits)
    short = [(j, _phi(j)) for j in range(1, min(hashes, num_bits + 1)) if num_bits % j == 0]
    rest = num_bits - sum(count for _, count in short)
    per_query = (sum(count * fill**j for j, count in short) + rest * fill**hashes) / num_bits
    return queries * per_query


def _phi(n: int) -> int:
    """Euler's totient (n is small here: below the number of hash functions)."""
    result, rest, p = n, n, 2
    while p * p <= rest:
        if rest % p == 0:
            while rest % p == 0:
                rest //= p
            result -= result // p
        p += 1
    return result - result // rest if rest > 1 else result


def gcs_element_hash(point: bytes, hash_range: int) -> int:
    """GCS::Hash: SHA-256 of the compressed point, mod the hash range."""
    return int.from_bytes(hashlib.sha256(point).digest(), "big") % hash_range


def bloom_element_hashes(point: bytes, num_bits: int) -> tuple[int, int]:
    """BloomFilter::Hash's two base hashes ``(h1, h2)``, each mod ``num_bits``."""
    h1 = int.from_bytes(hashlib.sha256(b"1" + point).digest(), "big") % num_bits
    h2 = int.from_bytes(hashlib.sha256(b"2" + point).digest(), "big") % num_bits
    return h1, h2


def gcs_buildable(fpr: float, client_inputs: int, server_inputs: int) -> bool:
    """Whether OpenMined's GCS is well defined for these sizes *whatever the
    elements*: the hash range fits its int64, and the divisor stays finite
    and at most MAX_GCS_DIV even when the largest hash is ``hash_range - 1``
    (the divisor only grows with the largest hash; every operation on the way
    is monotone)."""
    if client_inputs < 1 or not 0 < fpr < 1:
        return False
    hash_range = gcs_hash_range(fpr, client_inputs, server_inputs)
    if hash_range < 1:
        return False
    return 0 <= golomb_div(hash_range - 1, server_inputs) <= MAX_GCS_DIV


def bloom_buildable(fpr: float, client_inputs: int, server_inputs: int) -> bool:
    """Whether OpenMined's Bloom filter is well defined for these sizes: a
    positive number of hash functions and of bytes, and hash indices
    ``h1 + i * h2`` that cannot overflow an int64."""
    if client_inputs < 1 or not 0 < fpr < 1:
        return False
    hashes, num_bytes = bloom_shape(fpr, client_inputs, server_inputs)
    if not 1 <= hashes or not 1 <= num_bytes <= INT64_MAX // 8:
        return False
    return hashes * 8 * num_bytes <= INT64_MAX
