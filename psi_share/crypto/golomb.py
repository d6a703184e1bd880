"""Golomb-Rice coding exactly as OpenMined PSI 2.0.6 writes and reads it.

``datastructure/golomb.cpp`` stores a sorted set of distinct hashes as the
deltas between neighbours (the first from 0). Each delta is split into a
quotient ``delta >> div``, written in unary as that many 0 bits then a 1, and
a remainder of ``div`` bits, least significant first. Bits fill each byte from
its least significant bit; the string is exactly ``ceil(total_bits / 8)``
bytes, the unused high bits of the last byte zero. Duplicate hashes are
written once.

:func:`compress` is that encoder (vectorized; byte-identical to OpenMined's,
which the tests check). :func:`decode` reads a peer's string the way
``golomb_intersect`` does, but refuses anything OpenMined's encoder could
not have written: OpenMined's reader trusts its input and reads past the end
of a string whose last code is cut short (a forged filter crashes the
process), so nothing reaches it that :func:`decode` did not accept.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence

import numpy as np

from .openmined_params import MAX_GCS_DIV, golomb_div

# A filter of ours never needs more bits than this (2^33 bits = 1 GiB).
MAX_TOTAL_BITS = 1 << 33


class GolombError(ValueError):
    """A Golomb string OpenMined's encoder could not have produced."""


def compress(sorted_hashes: Sequence[int] | np.ndarray) -> tuple[int, bytes]:
    """``(div, bits)`` for ascending hashes (duplicates allowed), as
    ``golomb_compress`` computes them. Raises GolombError where OpenMined's
    own arithmetic breaks down (see ``openmined_params.golomb_div``)."""
    hashes = np.asarray(sorted_hashes, dtype=np.int64)
    if hashes.size == 0:
        return 0, b""
    if hashes[0] < 0 or np.any(hashes[1:] < hashes[:-1]):
        raise GolombError("hashes must be non-negative and sorted")
    div = golomb_div(int(hashes[-1]), int(hashes.size))
    if not 0 <= div <= MAX_GCS_DIV:
        raise GolombError(f"OpenMined's divisor for these hashes is {div}")
    distinct = hashes[np.concatenate(([True], hashes[1:] > hashes[:-1]))]
    deltas = np.diff(distinct, prepend=np.int64(0))
    quotients = deltas >> div
    lengths = quotients + 1 + div
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    if total > MAX_TOTAL_BITS:
        raise GolombError(f"the encoding would take {total} bits")
    terminators = ends - lengths + quotients  # the 1 ending each unary quotient
    bits = np.zeros((total + 7) // 8 * 8, dtype=np.uint8)
    bits[terminators] = 1
    remainders = deltas & ((1 << div) - 1)
    for j in range(div):
        bits[terminators + 1 + j] = (remainders >> j) & 1
    return div, np.packbits(bits, bitorder="little").tobytes()


def decode(
    bits: bytes, div: int, hash_range: int, max_elements: int, out: MutableSequence[int] | None = None
) -> MutableSequence[int]:
    """The ascending hashes a peer's Golomb string holds, appended to
    ``out`` (empty; a new list by default: an ``array('Q')`` keeps 8 bytes
    per hash where a list of ints keeps about 40).

    Accepts only what OpenMined's encoder writes: every code complete
    within the string, strictly increasing values below ``hash_range``, at
    most ``max_elements`` of them, and nothing after the last code but the
    zero bits that pad its byte. Raises GolombError naming what is wrong.
    """
    if not 0 <= div <= MAX_GCS_DIV:
        raise GolombError(f"divisor {div} is outside 0..{MAX_GCS_DIV}")
    nbytes = len(bits)
    total = nbytes * 8
    mask = (1 << div) - 1
    if out is None:
        out = []
    elif len(out):
        raise ValueError("decode appends to an empty sequence")
    append = out.append
    pos = prefix = 0
    while True:
        index = pos >> 3
        if index >= nbytes:
            break
        byte = bits[index] >> (pos & 7)
        base = pos
        if byte == 0:  # the rest of this byte is zero: the unary run goes on
            index += 1
            while index < nbytes and bits[index] == 0:
                index += 1
            if index >= nbytes:
                break  # only zero bits left: the end, as OpenMined reads it
            byte, base = bits[index], index << 3
        one = base + (byte & -byte).bit_length() - 1
        start = one + 1
        end = start + div
        if end > total:
            raise GolombError(f"the code of element {len(out) + 1} is cut short by the end of the bits")
        remainder = (int.from_bytes(bits[start >> 3 : (end + 7) >> 3], "little") >> (start & 7)) & mask if div else 0
        delta = ((one - pos) << div) | remainder
        if out and delta == 0:
            raise GolombError(f"element {len(out) + 1} repeats the one before it")
        prefix += delta
        if prefix >= hash_range:
            raise GolombError(f"element {len(out) + 1} lies beyond the hash range")
        if len(out) >= max_elements:
            raise GolombError(f"holds more than {max_elements} elements")
        append(prefix)
        pos = end
    if nbytes != (pos + 7) >> 3:
        raise GolombError(f"{nbytes - ((pos + 7) >> 3)} bytes follow the last element")
    return out
