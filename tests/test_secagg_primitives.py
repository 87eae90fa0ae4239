"""Secure aggregation building blocks: Shamir, X25519/HKDF, AES-GCM, the mask PRG, fixed point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedforge.secagg import keys, prg, shamir
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.prg import SeededRandomness


def test_shamir_hand_example():
    # f(x) = 7 + 3x: points (1, 10) and (2, 13) give f(0) = 7
    assert shamir.reconstruct([(1, 10), (2, 13)], 2) == 7
    assert shamir.reconstruct([(2, 13), (5, 22)], 2) == 7


def test_shamir_any_t_reconstruct_and_t_minus_1_do_not():
    rng = SeededRandomness("shamir-test")
    secret = int.from_bytes(rng.token(32), "big")
    xs = [1, 2, 3, 4, 5, 6]
    t = 4
    shares = shamir.split(secret, t, xs, rng)
    pts = list(zip(xs, shares, strict=True))
    for subset in itertools.combinations(pts, t):
        assert shamir.reconstruct(list(subset), t) == secret
        # order does not matter
        assert shamir.reconstruct(list(reversed(subset)), t) == secret
    for subset in itertools.combinations(pts, t - 1):
        # t - 1 shares interpolate a lower-degree polynomial: a wrong secret
        assert shamir.reconstruct(list(subset), t - 1) != secret
    with pytest.raises(ValueError, match="fewer than the threshold"):
        shamir.reconstruct(pts[: t - 1], t)


def test_shamir_refuses_bad_input():
    rng = SeededRandomness("x")
    with pytest.raises(ValueError, match="never reach"):
        shamir.split(5, 3, [1, 2], rng)
    with pytest.raises(ValueError, match="distinct and nonzero"):
        shamir.split(5, 2, [0, 1], rng)
    with pytest.raises(ValueError, match="field element"):
        shamir.split(shamir.PRIME, 2, [1, 2], rng)
    v = 123456789
    assert shamir.from_bytes(shamir.to_bytes(v)) == v


def test_x25519_agreement_is_symmetric_and_keys_are_separated():
    rng = SeededRandomness("x25519")
    a = keys.KeyPair.from_secret(rng.token(32))
    b = keys.KeyPair.from_secret(rng.token(32))
    c = keys.KeyPair.from_secret(rng.token(32))
    assert a.agree(b.public) == b.agree(a.public)
    assert a.agree(b.public) != a.agree(c.public)
    shared = a.agree(b.public)
    assert keys.derive(shared, "mask", 1) != keys.derive(shared, "share", 1)
    assert keys.derive(shared, "mask", 1) != keys.derive(shared, "mask", 2)
    assert keys.KeyPair.from_secret(a.secret).public == a.public


def test_aead_binds_round_sender_and_recipient():
    key = bytes(range(32))
    nonce = bytes(12)
    ct = keys.seal(key, nonce, b"share", 3, "a", "b")
    assert keys.open_sealed(key, ct, 3, "a", "b") == b"share"
    flipped = ct[:-1] + bytes([ct[-1] ^ 1])
    for bad in [
        lambda: keys.open_sealed(key, flipped, 3, "a", "b"),
        lambda: keys.open_sealed(key, ct, 4, "a", "b"),
        lambda: keys.open_sealed(key, ct, 3, "a", "c"),
        lambda: keys.open_sealed(key, ct[:10], 3, "a", "b"),
    ]:
        with pytest.raises(keys.DecryptionError):
            bad()


def test_mask_prg_is_deterministic_and_seed_dependent():
    s1, s2 = bytes(32), bytes([1] * 32)
    m = prg.mask(s1, 1000, np.dtype(np.uint64))
    assert m.dtype == np.uint64 and m.shape == (1000,)
    assert np.array_equal(m, prg.mask(s1, 1000, np.dtype(np.uint64)))
    assert not np.array_equal(m, prg.mask(s2, 1000, np.dtype(np.uint64)))
    # a prefix property: a longer mask starts with the shorter one (a keystream)
    assert np.array_equal(prg.mask(s1, 10, np.dtype(np.uint64)), m[:10])


def test_fixed_point_round_trip_and_wrap():
    for bits in (32, 64):
        fp = FixedPoint(bits=bits, clip=4.0, max_weight=2.0)
        scale = fp.scale_for(5)
        x = np.array([-3.5, -1e-3, 0.0, 0.25, 3.999])
        q = fp.encode(x, 2.0, scale)
        assert q.dtype == fp.dtype
        back = fp.decode(q) / scale
        assert np.abs(back - 2 * x).max() <= 0.5 / scale
        # 5 participants at the extreme never overflow
        extreme = fp.encode(np.full(3, -4.0), 2.0, scale)
        total = np.zeros(3, dtype=fp.dtype)
        for _ in range(5):
            total += extreme
        assert np.allclose(fp.decode(total) / scale, -40.0)
        assert 5 * (fp.bound * scale + 0.5) < 2 ** (bits - 1)


def test_fixed_point_clips_and_refuses():
    fp = FixedPoint(bits=64, clip=1.0, max_weight=10.0)
    scale = fp.scale_for(3)
    assert np.allclose(fp.decode(fp.encode(np.array([5.0, -5.0]), 3.0, scale)) / scale, [3.0, -3.0])
    with pytest.raises(ValueError, match="max_weight"):
        fp.encode(np.zeros(2), 11.0, scale)
    with pytest.raises(ValueError, match="bits per"):
        FixedPoint(bits=32, clip=100.0, max_weight=1e6).scale_for(100)
    with pytest.raises(ValueError, match="bits must be"):
        FixedPoint(bits=16)


def test_mask_is_the_aes_ctr_keystream_across_chunks():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes(range(32))
    n = (1 << 20) // 8 + 3  # crosses the 1 MiB chunk boundary
    ref = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(8 * n))
    assert prg.mask(key, n, np.dtype(np.uint64)).tobytes() == ref
    assert prg.mask(key, 2 * n, np.dtype(np.uint32)).tobytes() == ref
