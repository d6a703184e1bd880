"""A non-interactive proof that a Paillier modulus is well formed.

Why
---
Paillier's security for the *receiver* of a key (the matcher in
intersection-sum) rests on the modulus: only when ``gcd(N, phi(N)) = 1`` is
``Z*_{N^2}`` the product of the message group and the N-th residues, so that
multiplying by a fresh ``r^N`` hides everything about a ciphertext but its
plaintext. With a crafted modulus (a small factor, ``p | q - 1``, a square,
extra factors) re-randomization leaves a trace the key owner can read, and a
cheating value holder learned which of its items matched (issue 11:
``N = 1009 * q`` passed the old key check). The key owner therefore proves
its modulus well formed before the matcher uses anything encrypted under it.

What is proven (soundness 2^-128, zero knowledge: the proof is a list of
roots of hash-derived elements, which the verifier could not compute but
which reveal nothing about p and q beyond what N does):

1. **N has no prime factor below ALPHA = 65537**: the verifier checks
   ``gcd(N, product of primes < ALPHA) = 1`` itself.
2. **gcd(N, phi(N)) = 1** (so N is square-free): for ROOT_ROUNDS = 8
   elements ``rho_i`` derived from the statement, the prover sends
   ``sigma_i`` with ``sigma_i^N = rho_i mod N``. This is the "Paillier-N" /
   square-free proof of Goldberg, Reyzin, Sagga and Baldimtsi, "Efficient
   noninteractive certification of RSA moduli and beyond" (ASIACRYPT 2019,
   section 3.2). If a prime r divides gcd(N, phi(N)), then r divides N, so
   r >= ALPHA by (1), and at most a 1/r share of ``Z*_N`` are N-th powers:
   a cheat survives all rounds with probability at most
   ``ALPHA^-8 < 2^-128``. ZenGo's zk-paillier ``NiCorrectKeyProof`` and
   axelar's tofn run the same proof (with ALPHA = 6370 and 11 rounds; the
   paper's table gives 65537 and 8 for 128 bits, fewer roots to check).
3. **N is a product of exactly two primes, both 3 mod 4** (a Paillier-Blum
   modulus): N is not prime (checked), and for BLUM_ROUNDS = 128 derived
   units ``y_i`` the prover sends ``x_i`` and bits ``a_i, b_i`` with
   ``x_i^4 = (-1)^a_i * w^b_i * y_i mod N``, where ``w`` is the first
   derived element with Jacobi symbol -1. This is the modulus proof of
   Canetti, Gennaro, Goldfeder, Makriyannis and Peled (CCS 2020, "Pi^mod"),
   which GRSB's two-prime proof would otherwise need 2840 square roots for.
   Soundness, given (2): with k >= 3 prime factors, or two with one = 1
   mod 4, the fourth powers have index >= 8 in ``Z*_N`` and the four
   classes of ``+-1, +-w`` cover at most half of it, so each round is
   passed with probability <= 1/2, all with <= 2^-128. (Without this
   part, ``N = p*q*r`` would pass (1) and (2).)

Fiat-Shamir: every derived element is SHAKE256 over the *statement*:
domain tag, proof version, the protocol version, the encoded public key and
a session context the caller passes (session id, both parties' names), so a
proof is bound to one key and one session and replays elsewhere fail.
Elements are drawn by rejection sampling (exactly uniform in ``Z*_N``):

    statement  = b"psi-share/paillier-modulus-proof" 0x00 u8(PROOF_VERSION)
                 u32(protocol_version) u32(len key) key u32(len context) context
    element(label, i) = first v with 0 < v < N and gcd(v, N) = 1, over
                 j = 0, 1, ...: v = SHAKE256(statement label u32(i) u32(j))
                 read as |N|/8 big-endian bytes, masked to bit_length(N) bits
    rho_i = element(b"root", i)   y_i = element(b"blum", i)
    w     = element(b"w", i) for the first i with Jacobi(w, N) = -1

(u32 is 4 bytes big-endian; "key" is ``PublicKey.encode()``.) The prover's
roots are deterministic (the unique N-th root; the fourth root that is a
quadratic residue), so a proof for one statement is always the same bytes:
two different roots of one element would reveal the factors.

Encoding (version 1), for a key of k bytes: ``0x01``, the 8 N-th roots and
then the 128 fourth roots, each exactly k bytes big-endian, then 128 bytes
``a_i + 2*b_i``. 34,945 bytes for 2048-bit keys, 52,353 for 3072.
A received proof is checked for exact length, version, every root in
``(0, N)`` and every flag byte in 0..3 before any arithmetic; every failure
is a RemoteProtocolError saying which check failed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import gmpy2

from ..errors import LocalProtocolError, RemoteProtocolError
from .paillier import PrivateKey, PublicKey

PROOF_VERSION = 1
SOUNDNESS_BITS = 128
ALPHA = 65537
ROOT_ROUNDS = 8
BLUM_ROUNDS = 128
assert ROOT_ROUNDS * math.log2(ALPHA) >= SOUNDNESS_BITS and BLUM_ROUNDS >= SOUNDNESS_BITS

_DOMAIN = b"psi-share/paillier-modulus-proof"
_PRIMORIAL = gmpy2.primorial(ALPHA - 1)  # the product of all primes below ALPHA
_MAX_CONTEXT = 4096
# Each draw is accepted with probability > 1/2 (N has its top bit set, units
# are almost all of Z_N), and half the units have Jacobi symbol -1 unless N
# is a square: running out of tries means a hostile N, never bad luck.
_MAX_TRIES = 256


def proof_length(key_bits: int) -> int:
    """Bytes of a version-1 proof for a key of ``key_bits`` bits (what a
    message carrying one must be allowed beyond its points and ciphertexts)."""
    return 1 + (ROOT_ROUNDS + BLUM_ROUNDS) * ((key_bits + 7) // 8) + BLUM_ROUNDS


@dataclass(frozen=True)
class ModulusProof:
    """A parsed proof; every root lies in (0, N) and every flag in 0..3."""

    roots: tuple[int, ...]  # sigma_i, sigma_i^N = rho_i
    fourth_roots: tuple[int, ...]  # x_i
    flags: bytes  # a_i + 2*b_i

    def encode(self, key: PublicKey) -> bytes:
        k = key.byte_length
        body = b"".join(int(v).to_bytes(k, "big") for v in (*self.roots, *self.fourth_roots))
        return bytes([PROOF_VERSION]) + body + self.flags

    @classmethod
    def decode(cls, key: PublicKey, data: bytes) -> ModulusProof:
        """Strict parse of a peer's proof for ``key`` (no arithmetic beyond ranges)."""
        if not data:
            raise RemoteProtocolError("the Paillier key comes without a proof that its modulus is well formed")
        if data[0] != PROOF_VERSION:
            raise RemoteProtocolError(f"Paillier modulus proof has unknown version {data[0]}")
        expected = proof_length(key.bits)
        if len(data) != expected:
            raise RemoteProtocolError(
                f"Paillier modulus proof has {len(data)} bytes; a proof for a {key.bits}-bit key has {expected}"
            )
        k, n = key.byte_length, key.n
        values = []
        for i in range(ROOT_ROUNDS + BLUM_ROUNDS):
            v = int.from_bytes(data[1 + i * k : 1 + (i + 1) * k], "big")
            if not 0 < v < n:
                raise RemoteProtocolError(f"Paillier modulus proof: root {i} is not in (0, N)")
            values.append(v)
        flags = data[1 + (ROOT_ROUNDS + BLUM_ROUNDS) * k :]
        if any(f > 3 for f in flags):
            raise RemoteProtocolError("Paillier modulus proof: a sign flag is not in 0..3")
        return cls(tuple(values[:ROOT_ROUNDS]), tuple(values[ROOT_ROUNDS:]), bytes(flags))


class _Statement:
    """What the proof is about; derives its challenge elements (Fiat-Shamir)."""

    def __init__(self, key: PublicKey, context: bytes, protocol_version: int) -> None:
        if len(context) > _MAX_CONTEXT:
            raise LocalProtocolError(f"proof context is longer than {_MAX_CONTEXT} bytes")
        encoded = key.encode()
        self.n = key.n
        self._k = key.byte_length
        self._mask = (1 << key.n.bit_length()) - 1
        self._xof = hashlib.shake_256(
            _DOMAIN + b"\x00" + bytes([PROOF_VERSION]) + protocol_version.to_bytes(4, "big")
            + len(encoded).to_bytes(4, "big") + encoded + len(context).to_bytes(4, "big") + context
        )

    def element(self, label: bytes, i: int) -> int:
        """Uniform in Z*_N, by rejection sampling."""
        for j in range(_MAX_TRIES):
            h = self._xof.copy()
            h.update(label + i.to_bytes(4, "big") + j.to_bytes(4, "big"))
            v = int.from_bytes(h.digest(self._k), "big") & self._mask
            if 0 < v < self.n and gmpy2.gcd(v, self.n) == 1:
                return v
        raise RemoteProtocolError("Paillier modulus proof: no challenge element could be drawn for this modulus")

    def w(self) -> int:
        for i in range(_MAX_TRIES):
            v = self.element(b"w", i)
            if gmpy2.jacobi(v, self.n) == -1:
                return v
        raise RemoteProtocolError("Paillier modulus has no element of Jacobi symbol -1 (it is a square)")


def _crt(xp: int, xq: int, p: int, q: int, q_inv_p: int) -> int:
    return int(xq + q * ((xp - xq) * q_inv_p % p))


def prove(key: PrivateKey, *, context: bytes, protocol_version: int) -> bytes:
    """The key owner's proof that ``key.public`` is well formed, bound to
    ``context`` and ``protocol_version``. Deterministic."""
    p, q, n = key.p, key.q, key.public.n
    if p == q or p % 4 != 3 or q % 4 != 3 or p * q != n:
        raise LocalProtocolError("only keys from PrivateKey.generate (two distinct primes, 3 mod 4) can be proven")
    st = _Statement(key.public, context, protocol_version)
    q_inv_p = int(gmpy2.invert(q, p))
    # sigma = rho^(N^-1 mod phi(N)), computed per prime: gcd(N, p-1) = gcd(q, p-1)
    # = 1, since q cannot divide p-1 when both have the same top bits.
    dp, dq = int(gmpy2.invert(n, p - 1)), int(gmpy2.invert(n, q - 1))
    roots = []
    for i in range(ROOT_ROUNDS):
        rho = st.element(b"root", i)
        roots.append(_crt(int(gmpy2.powmod(rho, dp, p)), int(gmpy2.powmod(rho, dq, q)), p, q, q_inv_p))
    # For p = 3 mod 4, y^((p+1)/4) is the square root of a residue y that is
    # itself a residue; applied twice it gives the residue fourth root.
    ep, eq = ((p + 1) // 4) ** 2 % (p - 1), ((q + 1) // 4) ** 2 % (q - 1)
    w = st.w()
    fourth, flags = [], bytearray()
    for i in range(BLUM_ROUNDS):
        y = st.element(b"blum", i)
        for flag in range(4):
            t = y * (w if flag >> 1 else 1) * (-1 if flag & 1 else 1) % n
            if gmpy2.legendre(t % p, p) == 1 and gmpy2.legendre(t % q, q) == 1:
                break
        else:  # impossible for a Blum modulus and Jacobi(w) = -1
            raise LocalProtocolError("no sign makes a residue; the key is not a Blum modulus")
        fourth.append(_crt(int(gmpy2.powmod(t, ep, p)), int(gmpy2.powmod(t, eq, q)), p, q, q_inv_p))
        flags.append(flag)
    return ModulusProof(tuple(roots), tuple(fourth), bytes(flags)).encode(key.public)


def verify(key: PublicKey, proof: bytes, *, context: bytes, protocol_version: int) -> None:
    """Check a peer's proof for ``key`` under ``context``; raises RemoteProtocolError.

    The proof is parsed strictly first; the cheap public checks (small
    factors, primality) come before the roots.
    """
    n = key.n
    if n < 2**64 or n % 2 == 0 or gmpy2.is_square(n):
        raise RemoteProtocolError("Paillier modulus is even, too small or a square")
    parsed = ModulusProof.decode(key, proof)
    if gmpy2.gcd(n, _PRIMORIAL) != 1:
        raise RemoteProtocolError(f"Paillier modulus has a prime factor below {ALPHA}")
    if gmpy2.is_prime(n):
        raise RemoteProtocolError("Paillier modulus is a prime")
    st = _Statement(key, context, protocol_version)
    for i, sigma in enumerate(parsed.roots):
        if gmpy2.powmod(sigma, n, n) != st.element(b"root", i):
            raise RemoteProtocolError(
                f"Paillier modulus proof: N-th root {i} is wrong (gcd(N, phi(N)) != 1, "
                "or the proof is for another key or session)"
            )
    w = st.w()
    for i, (x, flag) in enumerate(zip(parsed.fourth_roots, parsed.flags)):
        t = st.element(b"blum", i) * (w if flag >> 1 else 1) * (-1 if flag & 1 else 1) % n
        if gmpy2.powmod(x, 4, n) != t:
            raise RemoteProtocolError(
                f"Paillier modulus proof: fourth root {i} is wrong (N is not a product of two primes "
                "3 mod 4, or the proof is for another key or session)"
            )
