"""The crypto under intersection-sum and federation totals: known answers and hostile input."""

from __future__ import annotations

import random
import secrets

import pytest
from phe import paillier as phe

from psi_share.crypto import ec
from psi_share.crypto.paillier import (
    MAX_VALUE,
    PrivateKey,
    PublicKey,
    RandomnessPool,
    decode_ciphertexts,
    encode_ciphertexts,
    worker_encrypt,
)
from psi_share.errors import LocalProtocolError, RemoteProtocolError

KEY = PrivateKey.generate(2048, secrets.token_bytes)


def test_fast_encryption_decrypts_with_phe_and_adds_homomorphically():
    rb = random.Random(1).randbytes
    values = [0, 1, 42, MAX_VALUE]
    cs = KEY.encrypt_with(values, KEY.randomness(rb(32 * len(values))))
    reference = phe.PaillierPrivateKey(phe.PaillierPublicKey(KEY.public.n), KEY.p, KEY.q)
    assert [reference.raw_decrypt(int(c)) for c in cs] == values
    total = KEY.public.rerandomize(KEY.public.sum(cs), rb)
    assert KEY.decrypt(total) == sum(values)
    # re-randomized: a different ciphertext of the same sum
    assert total != KEY.public.sum(cs)


def test_randomness_is_an_nth_residue_like_r_to_the_n():
    # h^a with the CRT tables equals plain pow(h, a, n^2)
    a = random.Random(2).randbytes(32)
    (fast,) = KEY.randomness(a)
    assert fast == pow(KEY.h, int.from_bytes(a, "little"), KEY.public.n2)


def test_worker_encrypt_matches_in_process_encryption():
    exps = random.Random(3).randbytes(64)
    blob = worker_encrypt(KEY.public.n, KEY.p, KEY.q, KEY.h, [5, 6], exps)
    assert [KEY.decrypt(c) for c in decode_ciphertexts(KEY.public, blob)] == [5, 6]


def test_values_out_of_bounds_are_refused():
    for bad in (-1, MAX_VALUE + 1, 1.5, True):
        with pytest.raises(LocalProtocolError):
            KEY.encrypt_with([bad], KEY.randomness(b"\x01" * 32))


def test_ciphertext_encoding_round_trips_and_validates():
    cs = KEY.encrypt_with([3, 4], KEY.randomness(b"\x02" * 64))
    blob = encode_ciphertexts(KEY.public, cs)
    assert len(blob) == 2 * 512
    assert decode_ciphertexts(KEY.public, blob, 2) == cs
    width = KEY.public.ciphertext_bytes
    with pytest.raises(RemoteProtocolError, match="out of range"):
        decode_ciphertexts(KEY.public, b"\x00" * width)
    with pytest.raises(RemoteProtocolError, match="out of range"):
        decode_ciphertexts(KEY.public, b"\xff" * width)
    with pytest.raises(RemoteProtocolError, match="invertible"):
        decode_ciphertexts(KEY.public, encode_ciphertexts(KEY.public, [cs[0], KEY.p * 7]))
    with pytest.raises(RemoteProtocolError, match="multiple"):
        decode_ciphertexts(KEY.public, blob[:-1])
    with pytest.raises(RemoteProtocolError, match="expected 3"):
        decode_ciphertexts(KEY.public, blob, 3)


def test_public_key_encoding_is_versioned_and_checked():
    assert PublicKey.decode(KEY.public.encode()) == KEY.public
    assert KEY.public.encode()[0] == 1 and len(KEY.public.encode()) == 257
    with pytest.raises(RemoteProtocolError):
        PublicKey.decode(b"")
    with pytest.raises(RemoteProtocolError):
        PublicKey.decode(b"\x01" + (KEY.p * KEY.p).to_bytes(256, "big"))  # a square
    with pytest.raises(LocalProtocolError):
        PrivateKey.generate(1024, secrets.token_bytes)


def test_pool_hands_out_each_value_once():
    pool = RandomnessPool(KEY, 4)
    pool.add(KEY.randomness(random.Random(4).randbytes(32 * 6)))
    assert len(pool) == 4
    a, b = pool.take(3), pool.take(3)
    assert len(a) == 3 and len(b) == 1 and not set(a) & set(b)
    assert pool.take(1) == [] and len(pool) == 0


def test_x_only_blinding_commutes_and_matches_across_parties():
    rb = random.Random(5).randbytes
    k1, k2 = ec.new_scalar(rb), ec.new_scalar(rb)
    items = [b"psi-share/1/email/v1/a@example.com", b"x", b""]
    one = ec.hash_and_blind(k1, items)
    two = ec.hash_and_blind(k2, items)
    assert ec.blind_x_blob(k2, one) == ec.blind_x_blob(k1, two)
    assert len(ec.split_points(one, 3)) == 3


def test_hash_to_curve_known_answer():
    # try-and-increment is deterministic: a fixed item always maps to the same x
    x = ec.hash_to_x(b"psi-share/1/email/v1/a@example.com")
    assert x == ec.hash_to_x(b"psi-share/1/email/v1/a@example.com")
    assert ec._is_x_on_curve(x) and x < ec.P256_P
    assert ec.hash_to_x(b"a") != ec.hash_to_x(b"b")


def test_engine_parallel_equals_inline():
    engine = ec.EcEngine(workers=2)
    try:
        k = ec.new_scalar(random.Random(6).randbytes)
        items = [f"i{i}".encode() for i in range(ec.MIN_PARALLEL * 2 + 3)]
        assert b"".join(engine.hash_and_blind(k, items)) == ec.hash_and_blind(k, items)
    finally:
        engine.close()


@pytest.mark.slow
def test_3072_bit_keys_work_end_to_end():
    key = PrivateKey.generate(3072, secrets.token_bytes)
    assert key.public.bits == 3072 and key.public.ciphertext_bytes == 768
    assert PublicKey.decode(key.public.encode()) == key.public
    cs = key.encrypt_with([1, 2, MAX_VALUE], key.randomness(random.Random(7).randbytes(96)))
    blob = encode_ciphertexts(key.public, cs)
    total = key.public.rerandomize(key.public.sum(decode_ciphertexts(key.public, blob, 3)), secrets.token_bytes)
    assert key.decrypt(total) == 3 + MAX_VALUE


def test_keyring_rotates_after_its_lifetime_and_never_reuses_pooled_randomness(tmp_path):
    from psi_share.node.sums.keyring import PaillierKeyring
    from psi_share.node.config import NodeConfig, PaillierConfig

    now = [1000.0]
    ring = PaillierKeyring(
        NodeConfig(name="lab-a", paillier=PaillierConfig(pool_size=8, key_lifetime_seconds=60)),
        clock=lambda: now[0], random_bytes=random.Random(8).randbytes, executor=lambda: None,
    )
    try:
        assert ring.fill_now() == 8
        first = ring.key(2048)
        cs = ring.encrypt(first, [1, 2, 3])
        assert [first.decrypt(c) for c in cs] == [1, 2, 3] and ring.pool_size() == 5  # 3 used, gone
        now[0] += 59
        assert ring.key(2048) is first
        now[0] += 2
        second = ring.key(2048)
        assert second is not first and second.public.n != first.public.n
        assert ring.pool_size() == 0  # a new key starts with an empty pool
        assert [second.decrypt(c) for c in ring.encrypt(second, [4, 5])] == [4, 5]
    finally:
        ring.close()
