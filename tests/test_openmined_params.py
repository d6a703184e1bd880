"""OpenMined 2.0.6's setup arithmetic, redone in Python, against the library itself.

Known answers come from ``openmined-psi`` 2.0.6 (the pinned wheel) called
here: its hash range, Bloom shape, divisor and the bytes of every filter it
builds. Our Python must agree exactly, including where OpenMined's own
arithmetic breaks down (the int64 hash range overflow, the infinite divisor).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from private_set_intersection import python as openmined

from helpers import deterministic_random_bytes
from psi_share.crypto import golomb
from psi_share.crypto.filter_check import bloom_meets_rate
from psi_share.crypto.filters import bloom_setup, bloom_setup_bytes, gcs_setup, raw_setup
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
from psi_share.crypto.openmined_params import (
    INT64_MIN,
    MAX_GCS_DIV,
    bloom_false_matches,
    bloom_shape,
    cast_int64,
    cpp_round,
    gcs_buildable,
    gcs_element_hash,
    gcs_hash_range,
    golomb_div,
)

KEY = new_private_key(deterministic_random_bytes(11))
SERVER = openmined.server.CreateFromKey(KEY, True)
DS = openmined.DataStructure


def items(n: int, tag: str = "y") -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def points(values: list[str]) -> list[bytes]:
    """OpenMined's own blinded points for ``values`` under KEY."""
    return OpenMinedEngine().blinded_points(KEY, values)


# -- the C++ casts and rounding --------------------------------------------------


def test_cpp_round_rounds_halves_away_from_zero() -> None:
    assert [cpp_round(x) for x in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4999, -2.5001)] == [1, 2, 3, -1, -3, 2, -3]
    assert cpp_round(0.49999999999999994) == 0.0  # floor(x + 0.5) would give 1
    assert cpp_round(math.inf) == math.inf


def test_cast_int64_is_x86_truncation_and_int64_min_out_of_range() -> None:
    assert cast_int64(-1.9) == -1 and cast_int64(1.9) == 1
    assert cast_int64(2.0**63 - 1024) == 2**63 - 1024
    assert cast_int64(2.0**63) == cast_int64(1e21) == cast_int64(math.inf) == cast_int64(math.nan) == INT64_MIN


# -- hash range and Bloom shape, against the library -------------------------------

FPRS = (1e-9, 1e-6, 1e-3, 0.25, 0.9)
# 96,038 and 96,039 straddle the overflow at 1e-9: 96,038^2 / 1e-9 < 2^63 <= 96,039^2 / 1e-9.
QUERIES = (1, 2, 3, 1000, 1024, 65536, 96_038, 96_039, 131_072, 1_000_000)


@pytest.mark.parametrize("fpr", FPRS)
def test_hash_range_is_exactly_openmineds_including_the_int64_overflow(fpr: float) -> None:
    seen_overflow = False
    for queries in QUERIES:
        for size in sorted({0, 1, 5, queries - 1, queries, queries + 1} if queries < 100 else {0, 1, 5}):
            # Where the worst case breaks the divisor, OpenMined's build may fail:
            # then only the hash range matters and the small sets below show it.
            setup = _gcs_or_none(fpr, queries, items(size))
            predicted = gcs_hash_range(fpr, queries, size)
            if setup is not None:
                assert setup.gcs.hash_range == predicted, (fpr, queries, size)
            seen_overflow |= predicted == INT64_MIN
    # At 1e-9 the big query counts overflow the int64, as in issue 12.
    assert seen_overflow == (fpr == 1e-9)
    if fpr == 1e-9:
        assert gcs_hash_range(fpr, 96_038, 0) == 9_223_297_444_000_000_000  # 96038^2 * 1e9 fits ...
        assert gcs_hash_range(fpr, 96_039, 0) == INT64_MIN  # ... 96039^2 * 1e9 does not


def _gcs_or_none(fpr: float, queries: int, values: list[str]):  # type: ignore[no-untyped-def]
    try:
        return SERVER.CreateSetupMessage(fpr, queries, values, DS.GCS)
    except ValueError:
        return None


@pytest.mark.parametrize("fpr", FPRS)
def test_bloom_shape_is_exactly_openmineds(fpr: float) -> None:
    for queries in (1, 2, 3, 1000, 1024, 65536):
        for size in (0, 1, 7) + ((queries + 3,) if queries < 2000 else ()):
            setup = SERVER.CreateSetupMessage(fpr, queries, items(size), DS.BLOOM_FILTER)
            assert (setup.bloom_filter.num_hash_functions, len(setup.bloom_filter.bits)) == bloom_shape(fpr, queries, size)
            # Sized without building it, where the node would consider it at all.
            assert bloom_setup_bytes(fpr, queries, size) in (None, setup.ByteSize())
            assert (bloom_setup_bytes(fpr, queries, size) is None) == (not bloom_meets_rate(fpr, queries, size))


def test_the_issue_12_window_is_openmineds_overflow() -> None:
    """Default rate, filters built for max_set_size = 1,000,000 queries (what the
    node used to prepare at serve start and reuse): OpenMined returns a GCS whose
    hash range is -2^63 for these responder sizes; we predict exactly that, and
    never build a GCS there."""
    for size in (519, 520, 1000, 4600, 4611):
        setup = SERVER.CreateSetupMessage(1e-9, 1_000_000, items(size), DS.GCS)
        assert setup.gcs.hash_range == gcs_hash_range(1e-9, 1_000_000, size) == INT64_MIN
        assert not gcs_buildable(1e-9, 1_000_000, size)


def test_gcs_buildable_is_where_openmined_builds_a_valid_gcs() -> None:
    """Around the smallest buildable size for 65,536 queries at 1e-9 (a valid
    hash range, but a set so small that OpenMined's divisor becomes infinite)."""
    first = next(s for s in range(1, 10_000) if gcs_buildable(1e-9, 65_536, s))
    assert golomb_div(gcs_hash_range(1e-9, 65_536, first - 1) - 1, first - 1) == INT64_MIN
    for size in range(first, first + 4):
        setup = SERVER.CreateSetupMessage(1e-9, 65_536, items(size), DS.GCS)
        assert setup.gcs.hash_range == gcs_hash_range(1e-9, 65_536, size)
        assert 0 <= setup.gcs.div <= MAX_GCS_DIV
    for size in (1, first // 4, first // 2):
        with pytest.raises(ValueError):  # OpenMined's own build breaks down there
            SERVER.CreateSetupMessage(1e-9, 65_536, items(size), DS.GCS)


# -- our filters are byte for byte OpenMined's -------------------------------------------


@pytest.mark.parametrize("fpr", (1e-9, 1e-3, 0.5))
@pytest.mark.parametrize("queries", (1, 3, 1024, 131_072))
def test_filters_built_from_blinded_points_are_byte_identical_to_openmineds(fpr: float, queries: int) -> None:
    for size in (0, 1, 2, 7, 300):
        values = items(size, f"{fpr}-{queries}-")
        blinded = points(values)
        ours = {"raw": raw_setup(blinded), "gcs": gcs_setup(blinded, fpr, queries), "bloom": bloom_setup(blinded, fpr, queries)}
        for name, ds in (("raw", DS.RAW), ("gcs", DS.GCS), ("bloom", DS.BLOOM_FILTER)):
            if ours[name] is None:
                assert name == "gcs" and not gcs_buildable(fpr, queries, size)
                continue
            if name == "raw" and size == 0:
                assert ours[name].SerializeToString() == b"\x0a\x00"  # OpenMined leaves the oneof unset
                continue
            theirs = SERVER.CreateSetupMessage(fpr, queries, values, ds)
            assert ours[name].SerializeToString() == theirs.SerializeToString(), (name, size)


def test_golomb_divisor_matches_openmineds_for_its_largest_hash() -> None:
    for size in (1, 2, 50, 3000):
        values = items(size, "div")
        hash_range = gcs_hash_range(1e-6, 1024, size)
        hashes = sorted(gcs_element_hash(p, hash_range) for p in points(values))
        theirs = SERVER.CreateSetupMessage(1e-6, 1024, values, DS.GCS)
        assert theirs.gcs.div == golomb_div(hashes[-1], size)
        assert golomb.decode(theirs.gcs.bits, theirs.gcs.div, hash_range, size) == sorted(set(hashes))


# -- Golomb coding on its own ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**40), max_size=60), st.integers(min_value=1, max_value=8))
def test_golomb_round_trip(hashes: list[int], spread: int) -> None:
    hashes = sorted(h * spread for h in hashes)
    hash_range = (hashes[-1] + 1) if hashes else 1
    try:
        div, bits = golomb.compress(hashes)
    except golomb.GolombError:
        assert golomb_div(hashes[-1], len(hashes)) < 0  # only where OpenMined's divisor breaks down
        return
    assert golomb.decode(bits, div, hash_range, len(hashes)) == sorted(set(hashes))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=70), st.integers(min_value=1, max_value=2**63 - 1))
def test_golomb_decode_takes_only_what_the_encoder_writes(bits: bytes, div: int, hash_range: int) -> None:
    """Random bytes either decode to values that re-encode to exactly those
    bytes (with the divisor they carry), or are refused with GolombError."""
    try:
        values = golomb.decode(bits, div, hash_range, 10_000)
    except golomb.GolombError:
        return
    assert all(0 <= v < hash_range for v in values) and values == sorted(set(values))
    if values and golomb_div(values[-1], len(values)) == div:
        assert golomb.compress(values) == (div, bits)


@pytest.mark.parametrize(
    "bits, div, hash_range, limit, why",
    [
        (b"\x80", 16, 2**63 - 1, 10, "cut short"),  # the crash of issue 11, div 16
        (b"\x01\x00", 0, 100, 10, "follow the last element"),  # a zero byte after the last code
        (b"\x03", 0, 100, 10, "repeats"),  # deltas 0, 0: the same value twice
        (b"\x00\x01", 0, 5, 10, "beyond the hash range"),  # unary 8: value 8 >= 5
        (b"\xaa", 0, 100, 3, "more than 3 elements"),  # values 1, 2, 3, 4
        (b"", 63, 100, 10, "outside"),
    ],
)
def test_golomb_decode_refuses(bits: bytes, div: int, hash_range: int, limit: int, why: str) -> None:
    with pytest.raises(golomb.GolombError, match=why):
        golomb.decode(bits, div, hash_range, limit)


# -- OpenMined's Bloom filter and its rate --------------------------------------------------


def test_openmineds_bloom_filter_makes_far_more_false_matches_than_it_is_sized_for() -> None:
    """Built and read by the library itself: 10 items, sized for 10 queries at
    1e-9, queried with 5,000 items it does not hold. The index scheme's
    repeating indices (h2 sharing a factor with the bit count, h2 = 0 above
    all) give false matches at about 1 in 2 * num_bits, which
    ``bloom_false_matches`` predicts and ``bloom_meets_rate`` refuses."""
    server_key, client_key = new_private_key(deterministic_random_bytes(5)), new_private_key(deterministic_random_bytes(6))
    server, client = openmined.server.CreateFromKey(server_key, True), openmined.client.CreateFromKey(client_key, True)
    setup = server.CreateSetupMessage(1e-9, 10, items(10, "held-"), DS.BLOOM_FILTER)
    queries = items(5000, "not-held-")
    false = len(client.GetIntersection(setup, server.ProcessRequest(client.CreateRequest(queries))))
    bloom = setup.bloom_filter
    num_bits = len(bloom.bits) * 8
    predicted = bloom_false_matches(len(queries), bloom.num_hash_functions, num_bits,
                                    int.from_bytes(bloom.bits, "little").bit_count())
    nominal = len(queries) * 1e-9 / 10
    assert false >= 3 and predicted / 3 <= false <= predicted * 3, (false, predicted)
    assert false > 1e6 * nominal
    assert not bloom_meets_rate(1e-9, 10, 10)
    assert all(not bloom_meets_rate(1e-9, c, s) for c in (1, 1024, 1 << 20) for s in (1, 1000, 1 << 20))


def test_bloom_false_matches_counts_every_period_of_the_index_sequence() -> None:
    # 12 bits, 3 hash functions, all bits set: every query matches.
    assert bloom_false_matches(7, 3, 12, 12) == pytest.approx(7.0)
    # Half the bits set, 4 hash functions, 6 bits: periods 1, 2, 3 (phi 1, 1, 2) test 1, 2, 3
    # distinct bits; the other 2 values of h2 (period 6) test 4.
    expected = (1 * 0.5 + 1 * 0.25 + 2 * 0.125 + 2 * 0.0625) / 6
    assert bloom_false_matches(1, 4, 6, 3) == pytest.approx(expected)
