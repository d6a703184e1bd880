#!/usr/bin/env python3
"""Microbenchmark of the intersection-sum primitives, per operation.

Prints microseconds per operation for: phe encryption (the baseline),
full-exponent r^n, short-exponent h^a with CRT and fixed-base tables, an
encryption with pooled randomness, hash-to-curve, one ECDH blinding,
ciphertext decoding with validation, and the value holder's modulus proof
(key generation, proving, verifying; per key and session, not per item).

Usage: python scripts/bench_crypto.py [--bits 2048] [--n 2000]
"""

from __future__ import annotations

import argparse
import secrets
import time

from phe import paillier as phe

from psi_share.crypto import ec, modulus_proof
from psi_share.crypto.paillier import PrivateKey, decode_ciphertexts, encode_ciphertexts


def per_op(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    n = args.n
    key = PrivateKey.generate(args.bits, secrets.token_bytes)
    key.tables()
    pub = phe.PaillierPublicKey(key.public.n)
    rows = []
    few = max(5, n // 100)
    rows.append(("phe encrypt (baseline)", per_op(lambda: [pub.encrypt(7) for _ in range(few)], few)))
    rows.append(("r^n, full exponent", per_op(lambda: [key.public.random_unit_power(secrets.token_bytes) for _ in range(few)], few)))
    exps = secrets.token_bytes(32 * n)
    rows.append(("h^a, 256-bit a, CRT + tables", per_op(lambda: key.randomness(exps), n)))
    rs = key.randomness(exps)
    rows.append(("encrypt with pooled h^a", per_op(lambda: key.encrypt_with([7] * n, rs), n)))
    cs = key.encrypt_with([7] * n, rs)
    blob = encode_ciphertexts(key.public, cs)
    rows.append(("decode + validate ciphertext", per_op(lambda: decode_ciphertexts(key.public, blob), n)))
    items = [f"item-{i}".encode() for i in range(n)]
    rows.append(("hash to curve", per_op(lambda: [ec.hash_to_x(i) for i in items], n)))
    k = ec.new_scalar(secrets.token_bytes)
    blinded = ec.hash_and_blind(k, items)
    rows.append(("blind one point (ECDH)", per_op(lambda: ec.blind_x_blob(k, blinded), n)))
    print(f"{args.bits}-bit Paillier key, {n} operations each (single thread)")
    for name, us in rows:
        print(f"  {name:32s} {us:10.1f} us/op")
    print(f"  speed-up of h^a over phe encrypt: {rows[0][1] / (rows[2][1] + rows[3][1]):.0f}x; "
          f"pooled: {rows[0][1] / rows[3][1]:.0f}x")
    bench_modulus_proof(args.bits)


def bench_modulus_proof(bits: int, rounds: int = 5) -> None:
    """Milliseconds per key generation, proof and verification (one each per session)."""
    keygen = per_op(lambda: [PrivateKey.generate(bits, secrets.token_bytes) for _ in range(rounds)], rounds) / 1e3
    key = PrivateKey.generate(bits, secrets.token_bytes)
    contexts = [secrets.token_bytes(48) for _ in range(rounds)]
    proofs: list[bytes] = []
    prove_ms = per_op(lambda: proofs.extend(modulus_proof.prove(key, context=c, protocol_version=1) for c in contexts), rounds) / 1e3
    verify_ms = per_op(lambda: [modulus_proof.verify(key.public, p, context=c, protocol_version=1)
                                for p, c in zip(proofs, contexts)], rounds) / 1e3
    print(f"modulus proof for a {bits}-bit key ({modulus_proof.ROOT_ROUNDS} N-th roots, "
          f"{modulus_proof.BLUM_ROUNDS} fourth roots; {modulus_proof.proof_length(bits)} bytes), {rounds} runs each")
    for name, ms in (("key generation (Blum primes)", keygen), ("prove", prove_ms), ("verify", verify_ms)):
        print(f"  {name:32s} {ms:10.1f} ms")


if __name__ == "__main__":
    main()
