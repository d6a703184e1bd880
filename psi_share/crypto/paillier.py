"""Paillier for intersection-sum and federation totals: keys, a fast
encryptor for the key owner, validation and the wire encoding.

The scheme is Paillier with ``g = n + 1`` (as in ``phe``): ``Enc(m) =
(1 + m*n) * r^n mod n^2``. Decryption and the reference encryption come
from ``phe`` (python-paillier 1.5.0 with gmpy2); keys are generated here, from
Blum primes, so that their owner can prove them well formed
(:mod:`.modulus_proof`); what is here also makes the key owner fast and
every received value safe to use.

Speed (only the key owner may use these; they need p and q)
-----------------------------------------------------------
* **Short-exponent randomness (Damgard-Jurik-Nielsen).** Instead of a fresh
  ``r^n`` per ciphertext, fix ``h = x^n mod n^2`` for a random unit ``x`` once
  per key and use ``h^a`` for a fresh random ``a`` of ``SHORT_EXPONENT_BITS``
  = 256 bits. ``h^a`` is an n-th residue like ``r^n``; it is
  indistinguishable from a uniformly random one under the DJN assumption
  (DJN 2010, section 4.2) as long as discrete logs with a 256-bit exponent
  in the n-th-residue subgroup are infeasible: the best generic attacks
  (Pollard lambda / van Oorschot-Wiener) take about 2^(256/2) = 2^128 steps,
  at or above the 112-bit (2048) and 128-bit (3072) strength of the keys.
* **CRT.** ``h^a`` is computed mod ``p^2`` and mod ``q^2`` (half-size moduli)
  and recombined.
* **Fixed-base windowed tables.** ``h`` never changes for a key, so
  ``h^(d * 2^(8i))`` mod ``p^2`` and ``q^2`` are tabulated for every byte
  position ``i`` of the exponent and byte value ``d``: ``h^a`` is then 31
  multiplications per prime instead of ~300 squarings and multiplications.
* **A pool of randomness**, filled while the node is idle
  (:class:`RandomnessPool`): encrypting with a pooled ``h^a`` is one
  multiplication mod n^2. Each pooled value is used once, then dropped.

Validation
----------
Every ciphertext received from a peer must satisfy ``0 < c < n^2`` and
``gcd(c, n) = 1`` (:func:`decode_ciphertexts`); a public key received from
a peer must have an allowed size and pass basic checks
(:meth:`PublicKey.decode`). A failed check is a RemoteProtocolError.

Wire encoding (version 1)
-------------------------
* public key: ``0x01 || n`` (big-endian, exactly key_bits/8 bytes);
* ciphertext: big-endian, left-padded to exactly ``2 * key_bits/8`` bytes;
  a list of ciphertexts is their concatenation (the length fixes the count).
Nothing is ever pickled.

Value bounds
------------
A value is an integer in ``[0, MAX_VALUE]`` (2^63 - 1, SQLite's INTEGER).
A sum over at most ``MAX_SUM_TERMS`` (2^24) values is below 2^87, far below
``n >= 2^2047``: it can never wrap mod n. A decrypted sum above
``count * MAX_VALUE`` is garbage from a peer and refused.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gmpy2
from phe import paillier

from ..errors import LocalProtocolError, RemoteProtocolError

KEY_BITS = (2048, 3072)
DEFAULT_KEY_BITS = 2048
SHORT_EXPONENT_BITS = 256
WINDOW_BITS = 8
MAX_VALUE = 2**63 - 1
MAX_SUM_TERMS = 2**24
ENCODING_VERSION = 1
# Primes up to 1000: a received modulus with a small factor is refused.
_SMALL_PRIMES = [p for p in range(3, 1000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]


def check_value(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_VALUE:
        raise LocalProtocolError(f"a value must be an integer in [0, {MAX_VALUE}]")
    return value


@dataclass(frozen=True)
class PublicKey:
    n: int

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def n2(self) -> int:
        return self.n * self.n

    @property
    def byte_length(self) -> int:
        return (self.bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        return 2 * self.byte_length

    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over the encoded key (for records and logs)."""
        return hashlib.sha256(self.encode()).hexdigest()[:16]

    def encode(self) -> bytes:
        return bytes([ENCODING_VERSION]) + self.n.to_bytes(self.byte_length, "big")

    @classmethod
    def decode(cls, data: bytes, allowed_bits: Sequence[int] = KEY_BITS) -> PublicKey:
        """Parse and check a peer's public key."""
        if not data or data[0] != ENCODING_VERSION:
            raise RemoteProtocolError("Paillier public key has an unknown encoding version")
        n = int.from_bytes(data[1:], "big")
        bits = n.bit_length()
        if bits not in allowed_bits or len(data) - 1 != bits // 8:
            raise RemoteProtocolError(
                f"Paillier modulus has {bits} bits; allowed: {', '.join(map(str, allowed_bits))}"
            )
        if n % 2 == 0 or any(n % p == 0 for p in _SMALL_PRIMES) or gmpy2.is_square(n):
            raise RemoteProtocolError("Paillier modulus is not a product of two large primes")
        return cls(n)

    # -- operations anyone holding the public key may do ------------------

    def random_unit_power(self, random_bytes: Callable[[int], bytes]) -> int:
        """A fresh ``r^n mod n^2`` for a uniformly random unit r (full exponent)."""
        while True:
            r = int.from_bytes(random_bytes(self.byte_length + 8), "big") % self.n
            if r > 1 and math.gcd(r, self.n) == 1:
                return int(gmpy2.powmod(r, self.n, self.n2))

    def rerandomize(self, c: int, random_bytes: Callable[[int], bytes]) -> int:
        """The same plaintext under fresh randomness (unlinkable to ``c``)."""
        return int(gmpy2.mul(c, self.random_unit_power(random_bytes)) % self.n2)

    def encrypt(self, m: int, random_bytes: Callable[[int], bytes]) -> int:
        """Plain encryption with a full-length r (for non-owners: federation hops)."""
        check_value(m)
        return int((1 + m * self.n) * self.random_unit_power(random_bytes) % self.n2)

    def add_plain(self, c: int, m: int) -> int:
        check_value(m)
        return int((1 + m * self.n) * c % self.n2)

    def sum(self, ciphertexts: Sequence[int]) -> int:
        """Enc(sum of plaintexts); Enc(0) with r = 1 for an empty list (the
        caller re-randomizes before sending)."""
        n2 = gmpy2.mpz(self.n2)
        acc = gmpy2.mpz(1)
        for c in ciphertexts:
            acc = acc * c % n2
        return int(acc)


def encode_ciphertexts(key: PublicKey, ciphertexts: Sequence[int]) -> bytes:
    width = key.ciphertext_bytes
    return b"".join(int(c).to_bytes(width, "big") for c in ciphertexts)


def decode_ciphertexts(key: PublicKey, data: bytes, count: int | None = None) -> list[int]:
    """Parse concatenated ciphertexts; each must be in (0, n^2) and a unit mod n.

    Invertibility is checked for the whole list at once: a prime factor of n
    divides some ciphertext exactly when it divides their product mod n.
    """
    width = key.ciphertext_bytes
    if len(data) % width:
        raise RemoteProtocolError(f"ciphertext list of {len(data)} bytes is not a multiple of {width}")
    total = len(data) // width
    if count is not None and total != count:
        raise RemoteProtocolError(f"expected {count} ciphertexts, got {total}")
    n, n2 = gmpy2.mpz(key.n), gmpy2.mpz(key.n2)
    out: list[int] = []
    product = gmpy2.mpz(1)
    for i in range(0, len(data), width):
        c = gmpy2.mpz(int.from_bytes(data[i : i + width], "big"))
        if not 0 < c < n2:
            raise RemoteProtocolError("a received ciphertext is out of range (not in (0, n^2))")
        product = product * c % n
        out.append(c)
    if out and gmpy2.gcd(product, n) != 1:
        raise RemoteProtocolError("a received ciphertext is not invertible mod n")
    return out


def decode_ciphertext(key: PublicKey, data: bytes) -> int:
    return decode_ciphertexts(key, data, 1)[0]


def _blum_prime(bits: int, random_bytes: Callable[[int], bytes]) -> int:
    """A random prime of exactly ``bits`` bits with its top two bits set (so a
    product of two has exactly 2*bits bits) and ``p = 3 mod 4``.

    Like ``phe`` (and most libraries), the prime following a random start:
    the bias towards primes after long gaps is negligible.
    """
    top = 3 << (bits - 2)
    while True:
        start = int.from_bytes(random_bytes(bits // 8), "big") | top
        p = int(gmpy2.next_prime(start))
        while p % 4 != 3:
            p = int(gmpy2.next_prime(p))
        if p.bit_length() == bits:
            return p


class _FixedBaseTable:
    """``base^e mod m`` for exponents of up to ``SHORT_EXPONENT_BITS`` bits."""

    def __init__(self, base: int, modulus: int) -> None:
        m = gmpy2.mpz(modulus)
        self.modulus = m
        rows = []
        b = gmpy2.mpz(base) % m
        for _ in range(SHORT_EXPONENT_BITS // WINDOW_BITS):
            row = [gmpy2.mpz(1), b]
            for _ in range(2, 1 << WINDOW_BITS):
                row.append(row[-1] * b % m)
            rows.append(row)
            b = row[-1] * b % m  # b^(2^8)
        self.rows = rows

    def power(self, exponent: bytes) -> gmpy2.mpz:
        """``exponent`` as SHORT_EXPONENT_BITS/8 little-endian bytes."""
        m, rows = self.modulus, self.rows
        acc = rows[0][exponent[0]]
        for i in range(1, len(exponent)):
            d = exponent[i]
            if d:
                acc = acc * rows[i][d] % m
        return acc


@dataclass
class PrivateKey:
    """The key owner's secret (p, q) and what it precomputes from them.

    Never serialized, never logged, never sent: it lives in memory for the
    key's lifetime only.
    """

    public: PublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)
    h: int = field(repr=False)  # x^n mod n^2, the fixed DJN base

    def __post_init__(self) -> None:
        p2, q2 = self.p * self.p, self.q * self.q
        self._p2, self._q2 = gmpy2.mpz(p2), gmpy2.mpz(q2)
        self._q2_inv = gmpy2.invert(self._q2, self._p2)
        self._tables: tuple[_FixedBaseTable, _FixedBaseTable] | None = None
        self._tables_lock = threading.Lock()
        self._phe = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(self.public.n), self.p, self.q)

    @classmethod
    def generate(cls, bits: int, random_bytes: Callable[[int], bytes]) -> PrivateKey:
        """A fresh key pair: two distinct Blum primes (3 mod 4) of bits/2 bits
        each, and the DJN base, all drawn from ``random_bytes``.

        Blum primes are what lets the key owner prove its modulus well formed
        (:mod:`psi_share.crypto.modulus_proof`); they cost nothing in
        security (safe primes, the classic RSA choice, are Blum primes too).
        """
        if bits not in KEY_BITS:
            raise LocalProtocolError(f"Paillier key size must be one of {KEY_BITS}, not {bits}")
        p = _blum_prime(bits // 2, random_bytes)
        q = p
        while q == p:
            q = _blum_prime(bits // 2, random_bytes)
        n = p * q
        public = PublicKey(n)
        x = 0
        while x < 2 or math.gcd(x, n) != 1:
            x = int.from_bytes(random_bytes(public.byte_length + 8), "big") % n
        h = int(gmpy2.powmod(x, n, public.n2))
        return cls(public, p, q, h)

    def tables(self) -> tuple[_FixedBaseTable, _FixedBaseTable]:
        with self._tables_lock:
            if self._tables is None:
                self._tables = (_FixedBaseTable(self.h % self._p2, self._p2), _FixedBaseTable(self.h % self._q2, self._q2))
            return self._tables

    def secret_ints(self) -> tuple[int, int, int]:
        """(p, q, h) as plain ints, for the node's own worker processes only."""
        return self.p, self.q, self.h

    def randomness(self, exponents: bytes) -> list[gmpy2.mpz]:
        """``h^a mod n^2`` for each 32-byte little-endian exponent ``a`` (CRT + tables)."""
        width = SHORT_EXPONENT_BITS // 8
        tp, tq = self.tables()
        p2, q2, inv, n2 = self._p2, self._q2, self._q2_inv, gmpy2.mpz(self.public.n2)
        out = []
        for i in range(0, len(exponents), width):
            a = exponents[i : i + width]
            rp, rq = tp.power(a), tq.power(a)
            out.append((rq + q2 * ((rp - rq) * inv % p2)) % n2)
        return out

    def encrypt_with(self, values: Sequence[int], randomness: Sequence[int]) -> list[int]:
        """``(1 + m*n) * rn mod n^2`` for each value and its (used-once) randomness."""
        if len(values) != len(randomness):
            raise LocalProtocolError("one randomness per value")
        n, n2 = gmpy2.mpz(self.public.n), gmpy2.mpz(self.public.n2)
        return [(1 + check_value(m) * n) * r % n2 for m, r in zip(values, randomness)]

    def decrypt(self, c: int) -> int:
        if not 0 < c < self.public.n2:
            raise RemoteProtocolError("ciphertext out of range")
        return int(self._phe.raw_decrypt(int(c)))


def worker_encrypt(n: int, p: int, q: int, h: int, values: Sequence[int], exponents: bytes) -> bytes:
    """Encrypt ``values`` in a worker process; returns encoded ciphertexts.

    Only plain ints and bytes cross the process boundary. The tables are
    rebuilt per process and cached for the key.
    """
    key = _worker_key(n, p, q, h)
    return encode_ciphertexts(key.public, key.encrypt_with(values, key.randomness(exponents)))


def worker_randomness(n: int, p: int, q: int, h: int, exponents: bytes) -> bytes:
    key = _worker_key(n, p, q, h)
    return encode_ciphertexts(key.public, key.randomness(exponents))


_WORKER_KEYS: dict[int, PrivateKey] = {}


def _worker_key(n: int, p: int, q: int, h: int) -> PrivateKey:
    key = _WORKER_KEYS.get(n)
    if key is None:
        _WORKER_KEYS.clear()  # one key at a time: an old key's tables are dropped
        key = _WORKER_KEYS[n] = PrivateKey(PublicKey(n), p, q, h)
    return key


class RandomnessPool:
    """Precomputed ``h^a`` values for one key; each is handed out once.

    The node fills it in idle time (``fill``); ``take`` removes what it
    returns, so a value can never encrypt two plaintexts.
    """

    def __init__(self, key: PrivateKey, capacity: int) -> None:
        self.key = key
        self.capacity = capacity
        self._values: list[int] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def missing(self) -> int:
        return max(0, self.capacity - len(self))

    def add(self, values: Sequence[int]) -> None:
        with self._lock:
            room = self.capacity - len(self._values)
            self._values.extend(values[: max(0, room)])

    def take(self, count: int) -> list[int]:
        with self._lock:
            count = min(count, len(self._values))
            if not count:
                return []
            out = self._values[-count:]
            del self._values[-count:]
            return out

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
