"""The Paillier modulus proof: honest keys pass; crafted moduli, foreign, replayed
and garbled proofs fail; the encoding is pinned by a known answer; the matcher
of intersection-sum refuses a key without a valid proof.

The cheating value holder here knows the factors of its crafted modulus and
answers every challenge it mathematically can (its prover is written below,
from the factorization, not from our prover), so each failure is the
mathematics refusing it, not a lazy attacker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import secrets
from pathlib import Path

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psi_share.crypto import ec
from psi_share.crypto.modulus_proof import (
    ALPHA,
    BLUM_ROUNDS,
    ROOT_ROUNDS,
    ModulusProof,
    proof_length,
    prove,
    verify,
)
from psi_share.crypto.paillier import PrivateKey, PublicKey
from psi_share.errors import RemoteProtocolError
from psi_share.protocols.intersection_sum import Matcher, ValueHolderParty, blind_own_items, proof_context
from psi_share.v1 import node_pb2 as pb

VECTORS = Path(__file__).parent / "vectors" / "modulus_proof_v1.json"
CTX = proof_context("0123456789abcdef0123456789abcdef", "lab-b", "lab-a")
KEY = PrivateKey.generate(2048, secrets.token_bytes)


def _verify(n: int, proof: bytes, context: bytes = CTX, version: int = 1) -> None:
    verify(PublicKey(n), proof, context=context, protocol_version=version)


# -- honest keys ---------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072])
def test_honest_keys_of_every_allowed_size_pass(bits):
    for seed in range(3 if bits == 2048 else 1):
        key = PrivateKey.generate(bits, random.Random(seed).randbytes)
        proof = prove(key, context=CTX, protocol_version=1)
        assert len(proof) == proof_length(bits)
        PublicKey.decode(key.public.encode())
        _verify(key.public.n, proof)


def test_a_proof_is_deterministic_and_bound_to_key_session_and_version():
    proof = prove(KEY, context=CTX, protocol_version=1)
    assert prove(KEY, context=CTX, protocol_version=1) == proof  # one statement, one proof
    with pytest.raises(RemoteProtocolError, match="N-th root 0 is wrong"):  # replayed in another session
        _verify(KEY.public.n, proof, proof_context("fedcba9876543210fedcba9876543210", "lab-b", "lab-a"))
    with pytest.raises(RemoteProtocolError, match="N-th root 0 is wrong"):  # same session id, other parties
        _verify(KEY.public.n, proof, proof_context("0123456789abcdef0123456789abcdef", "lab-c", "lab-a"))
    with pytest.raises(RemoteProtocolError, match="N-th root 0 is wrong"):
        _verify(KEY.public.n, proof, version=2)
    other = PrivateKey.generate(2048, secrets.token_bytes)
    with pytest.raises(RemoteProtocolError, match=r"root \d+ is (wrong|not in)"):  # a proof for another key
        _verify(other.public.n, proof)  # (its roots may even exceed the other modulus)


def test_known_answer():
    """Pins the encoding and the Fiat-Shamir derivation (vector made by this
    implementation; see the file), and re-derives the challenges here from the
    spec in the module docstring with hashlib alone."""
    v = json.loads(VECTORS.read_text())
    n, p, q = (int(v[k], 16) for k in ("n", "p", "q"))
    context = bytes.fromhex(v["context"])
    key = PrivateKey(PublicKey(n), p, q, h=1)
    proof = prove(key, context=context, protocol_version=v["protocol_version"])
    assert hashlib.sha256(proof).hexdigest() == v["proof_sha256"]
    _verify(n, proof, context, v["protocol_version"])

    encoded = key.public.encode()
    statement = (b"psi-share/paillier-modulus-proof\x00\x01" + (1).to_bytes(4, "big") + len(encoded).to_bytes(4, "big")
                 + encoded + len(context).to_bytes(4, "big") + context)

    def element(label: bytes, i: int) -> int:
        for j in range(100):
            d = hashlib.shake_256(statement + label + i.to_bytes(4, "big") + j.to_bytes(4, "big")).digest(256)
            x = int.from_bytes(d, "big") % (1 << n.bit_length())
            if 0 < x < n and gmpy2.gcd(x, n) == 1:
                return x
        raise AssertionError("no element")

    parsed = ModulusProof.decode(key.public, proof)
    for i in range(ROOT_ROUNDS):
        assert pow(parsed.roots[i], n, n) == element(b"root", i)
    w = next(x for x in (element(b"w", i) for i in range(100)) if gmpy2.jacobi(x, n) == -1)
    for i in range(BLUM_ROUNDS):
        flag = parsed.flags[i]
        assert pow(parsed.fourth_roots[i], 4, n) == element(b"blum", i) * (w if flag & 2 else 1) * (-1 if flag & 1 else 1) % n


# -- a cheating value holder: crafted moduli, its best proofs ------------------------


def _prime(bits: int, rng: random.Random, mod4: int | None = None) -> int:
    while True:
        p = int(gmpy2.next_prime(rng.getrandbits(bits) | (3 << (bits - 2))))
        if p.bit_length() == bits and (mod4 is None or p % 4 == mod4):
            return p


def _crt(residues: list[tuple[int, int]]) -> int:
    x, m = 0, 1
    for r, mod in residues:
        x += m * ((r - x) * int(gmpy2.invert(m, mod)) % mod)
        m *= mod
    return x % m


@functools.lru_cache(maxsize=None)
def _non_residue(p: int) -> int:
    return next(z for z in range(2, p) if gmpy2.legendre(z, p) == -1)


def _sqrt_mod_prime(a: int, p: int) -> int | None:
    """Tonelli-Shanks (any odd prime), or None for a non-residue."""
    a %= p
    if a == 0:
        return 0
    if gmpy2.legendre(a, p) != 1:
        return None
    if p % 4 == 3:
        return int(gmpy2.powmod(a, (p + 1) // 4, p))
    q, s = p - 1, 0
    while q % 2 == 0:
        q, s = q // 2, s + 1
    m, c, t, r = s, gmpy2.powmod(_non_residue(p), q, p), gmpy2.powmod(a, q, p), gmpy2.powmod(a, (q + 1) // 2, p)
    while t != 1:
        i, t2 = 0, t
        while t2 != 1:
            t2, i = t2 * t2 % p, i + 1
        b = gmpy2.powmod(c, 1 << (m - i - 1), p)
        m, c, t, r = i, b * b % p, t * b * b % p, r * b % p
    return int(r)


def _fourth_root_mod_prime(a: int, p: int) -> int | None:
    s = _sqrt_mod_prime(a, p)
    if s is None:
        return None
    for root in (s, p - s):
        r = _sqrt_mod_prime(root, p)
        if r is not None:
            return r
    return None


def forged_proof(n: int, factors: dict[int, int], context: bytes = CTX) -> bytes:
    """The cheater's best proof for its modulus ``n`` = prod(p^e): every root
    that exists is computed from the factors; where none exists it sends 1."""
    from psi_share.crypto.modulus_proof import _Statement

    key = PublicKey(n)
    st = _Statement(key, context, 1)
    square_free = all(e == 1 for e in factors.values())
    roots = []
    for i in range(ROOT_ROUNDS):
        rho = st.element(b"root", i)
        if square_free and all(gmpy2.gcd(n, p - 1) == 1 for p in factors):
            roots.append(_crt([(pow(rho, int(gmpy2.invert(n, p - 1)), p), p) for p in factors]))
        else:
            roots.append(1)
    w = st.w()
    fourth, flags = [], bytearray()
    for i in range(BLUM_ROUNDS):
        y = st.element(b"blum", i)
        x, flag = 1, 0
        for f in range(4):
            t = y * (w if f & 2 else 1) * (-1 if f & 1 else 1) % n
            parts = [_fourth_root_mod_prime(t, p) for p in factors] if square_free else [None]
            if all(r is not None for r in parts):
                x, flag = _crt([(r, p) for r, p in zip(parts, factors)]), f
                break
        fourth.append(x)
        flags.append(flag)
    return ModulusProof(tuple(roots), tuple(fourth), bytes(flags)).encode(key)


def _modulus(rng: random.Random, make) -> tuple[int, dict[int, int]]:  # type: ignore[no-untyped-def]
    while True:
        factors = make(rng)
        n = 1
        for p, e in factors.items():
            n *= p**e
        if n.bit_length() == 2048:
            return n, factors


def _p_divides_q_minus_1(rng: random.Random) -> dict[int, int]:
    p = _prime(1000, rng, 3)
    while True:
        q = 2 * rng.getrandbits(47) * p + 1
        if gmpy2.is_prime(q) and q.bit_length() == 1048:
            return {p: 1, q: 1}


CRAFTED = {
    # issue 11's modulus: a 10-bit factor (passes the old < 1000 sieve)
    "1009 * q": (lambda r: {1009: 1, int(gmpy2.next_prime(r.getrandbits(2038) | (1 << 2037) | (1 << 2036))): 1},
                 f"prime factor below {ALPHA}"),
    "p * q * r": (lambda r: {_prime(683, r, 3): 1, _prime(683, r, 3): 1, _prime(683, r, 3): 1}, "fourth root"),
    "p^2 * q": (lambda r: {_prime(683, r, 3): 2, _prime(683, r, 3): 1}, "N-th root"),
    "p | q - 1": (_p_divides_q_minus_1, "N-th root"),  # square-free, but gcd(N, phi(N)) = p
    "p = 1 mod 4": (lambda r: {_prime(1024, r, 1): 1, _prime(1024, r, 3): 1}, "fourth root"),
    "a prime": (lambda r: {_prime(2048, r): 1}, "is a prime"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_moduli_fail_with_the_cheaters_best_proof(name):
    make, why = CRAFTED[name]
    for seed in range(2):
        n, factors = _modulus(random.Random(f"{name}/{seed}"), make)
        PublicKey.decode(PublicKey(n).encode())  # the old key check lets every one of them through
        with pytest.raises(RemoteProtocolError, match=why):
            _verify(n, forged_proof(n, factors))


def test_even_small_and_square_moduli_are_refused_before_the_proof_is_read():
    p = KEY.p
    for n in (p * p, KEY.public.n + 1, 2**63 + 1):
        with pytest.raises(RemoteProtocolError, match="even, too small or a square"):
            _verify(n, b"\x01")


def test_the_cheaters_prover_does_pass_for_an_honest_modulus():
    """Control: the forger is a real prover, so its failures above are the moduli's."""
    _verify(KEY.public.n, forged_proof(KEY.public.n, {KEY.p: 1, KEY.q: 1}))


# -- garbled proofs ---------------------------------------------------------------


def test_truncated_garbled_and_out_of_range_proofs_are_refused_before_arithmetic():
    proof = prove(KEY, context=CTX, protocol_version=1)
    n, k = KEY.public.n, KEY.public.byte_length
    cases = [
        (b"", "without a proof"),
        (proof[:-1], "has 34944 bytes"),
        (proof + b"\x00", "has 34946 bytes"),
        (b"\x02" + proof[1:], "unknown version 2"),
        (proof[:1] + b"\x00" * k + proof[1 + k :], "root 0 is not in"),
        (proof[:1] + n.to_bytes(k, "big") + proof[1 + k :], "root 0 is not in"),
        (proof[: 1 + 9 * k] + (n + 1).to_bytes(k + 1, "big")[-k:] + proof[1 + 10 * k :], "root 9 is not in"),
        (proof[:-1] + b"\x04", "sign flag"),
        (proof[:5] + bytes([proof[5] ^ 1]) + proof[6:], "N-th root 0 is wrong"),
        # the lowest bit of root 20 (the top bit could lift it above N, a different refusal)
        (proof[: 21 * k] + bytes([proof[21 * k] ^ 1]) + proof[1 + 21 * k :], "fourth root 12 is wrong"),
        (proof[:-1] + bytes([proof[-1] ^ 1]), f"fourth root {BLUM_ROUNDS - 1} is wrong"),
    ]
    for data, why in cases:
        with pytest.raises(RemoteProtocolError, match=why):
            _verify(n, data)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=64), fill=st.integers(0, 255), length=st.sampled_from([0, 1, 100, 34945]))
def test_random_bytes_only_ever_raise_remote_protocol_error(data, fill, length):
    blob = (b"\x01" + data + bytes([fill]) * length)[: max(length, len(data))]
    with pytest.raises(RemoteProtocolError):
        _verify(KEY.public.n, blob)


# -- the intersection-sum matcher -------------------------------------------------------

ENGINE = ec.EcEngine(workers=1)


def _matcher(rb, context: bytes = CTX) -> Matcher:  # type: ignore[no-untyped-def]
    own = blind_own_items(ENGINE, ec.new_scalar(rb), ["a", "b"])
    return Matcher(own, engine=ENGINE, random_bytes=rb, max_peer_set_size=10, key_bits=2048, context=context)


def _offer_key(rb, key_bytes: bytes, proof: bytes) -> None:  # type: ignore[no-untyped-def]
    """A value holder's double-blinded message with the key and proof chosen by
    the test, to a fresh matcher; the ciphertext is garbage, so a matcher that
    used it before checking the proof would complain about the ciphertext."""
    matcher = _matcher(rb)
    m1 = pb.SumMessage.FromString(matcher.blinded_set())
    scalar = ec.new_scalar(rb)
    message = pb.SumMessage(
        protocol_version=1, step="double-blinded", public_key=key_bytes, key_proof=proof,
        points=ec.blind_x_blob(scalar, m1.points), paired_points=blind_own_items(ENGINE, scalar, ["a"]).points[0],
        ciphertexts=b"\x00" * (2 * (len(key_bytes) - 1)),
    )
    matcher.on_double_blinded(message.SerializeToString())


def test_the_matcher_refuses_a_key_without_a_valid_proof_before_touching_a_ciphertext():
    rb = random.Random(9).randbytes
    good = prove(KEY, context=CTX, protocol_version=1)
    n, factors = _modulus(random.Random("issue-11"), CRAFTED["1009 * q"][0])
    attacks = [
        (KEY.public.encode(), b"", "without a proof"),
        (KEY.public.encode(), prove(KEY, context=proof_context("f" * 32, "lab-b", "lab-a"), protocol_version=1),
         "N-th root 0 is wrong"),  # replayed from another session
        (PublicKey(n).encode(), forged_proof(n, factors), f"below {ALPHA}"),
        (PublicKey(n).encode(), good, rf"below {ALPHA}|root \d+ is"),  # someone else's proof
    ]
    for key_bytes, proof, why in attacks:
        with pytest.raises(RemoteProtocolError, match=why):
            _offer_key(rb, key_bytes, proof)
    # with the right proof the matcher goes on to the ciphertexts (and refuses the garbage one)
    with pytest.raises(RemoteProtocolError, match="out of range"):
        _offer_key(rb, KEY.public.encode(), good)


@pytest.mark.parametrize("holder_context, ok", [(CTX, True), (proof_context("1" * 32, "lab-b", "lab-a"), False)])
def test_a_whole_session_needs_both_sides_on_the_same_context(holder_context, ok):
    rb = random.Random(10).randbytes
    matcher = _matcher(rb)
    holder = ValueHolderParty(
        blind_own_items(ENGINE, ec.new_scalar(rb), ["a", "c"]), [5, 7], key=KEY,
        encrypt=lambda v: KEY.encrypt_with(v, KEY.randomness(rb(32 * len(v)))), engine=ENGINE, random_bytes=rb,
        max_peer_set_size=10, context=holder_context,
    )
    reply = holder.on_blinded_set(matcher.blinded_set())
    if not ok:
        with pytest.raises(RemoteProtocolError, match="another key or session"):
            matcher.on_double_blinded(reply)
        return
    m4, holder_result = holder.on_encrypted_sum(matcher.on_double_blinded(reply))
    assert (matcher.on_sum(m4).sum, holder_result.intersection_size) == (5, 1)
