"""engine.sigverify against libsodium as PyNaCl calls it, one item at a time."""

from __future__ import annotations

import os
import random

import nacl.bindings
import nacl.exceptions
import nacl.signing
import numpy as np
import pytest

from engine import _core
from engine.sigverify import keypairs_from_seeds, sign_batch, verify_batch


def reference_verify(msg: bytes, sig: bytes, pk: bytes) -> bool:
    if len(sig) != 64 or len(pk) != 32:
        return False
    try:
        nacl.signing.VerifyKey(pk).verify(msg, sig)
    except (nacl.exceptions.BadSignatureError, ValueError, nacl.exceptions.ValueError):
        return False
    return True


def corrupt(rng: random.Random, msg: bytes, sig: bytes, pk: bytes, others: list):
    """One of the ways an item goes wrong; returns the altered triple."""
    kind = rng.randrange(8)
    if kind == 0 and msg:  # flip a message bit
        i = rng.randrange(len(msg))
        msg = msg[:i] + bytes([msg[i] ^ (1 << rng.randrange(8))]) + msg[i + 1 :]
    elif kind == 1:  # flip a bit of R
        i = rng.randrange(32)
        sig = sig[:i] + bytes([sig[i] ^ (1 << rng.randrange(8))]) + sig[i + 1 :]
    elif kind == 2:  # flip a bit of S
        i = 32 + rng.randrange(32)
        sig = sig[:i] + bytes([sig[i] ^ (1 << rng.randrange(8))]) + sig[i + 1 :]
    elif kind == 3:  # flip a bit of the key
        i = rng.randrange(32)
        pk = pk[:i] + bytes([pk[i] ^ (1 << rng.randrange(8))]) + pk[i + 1 :]
    elif kind == 4:  # another signer's key
        pk = rng.choice(others)[2]
    elif kind == 5:  # a signature of another item
        sig = rng.choice(others)[1]
    elif kind == 6:  # truncated or extended signature
        sig = sig[: rng.randrange(64)] if rng.random() < 0.5 else sig + b"\x00"
    else:  # truncated key
        pk = pk[: rng.randrange(32)]
    return msg, sig, pk


@pytest.fixture(scope="module")
def signed_items():
    rng = random.Random(1)
    seeds = np.frombuffer(rng.randbytes(32 * 600), dtype=np.uint8).reshape(600, 32)
    pks, sks = keypairs_from_seeds(seeds)
    msgs = [rng.randbytes(rng.randrange(0, 300)) for _ in range(3000)]
    which = [rng.randrange(600) for _ in msgs]
    sigs = sign_batch(msgs, [sks[w].tobytes() for w in which])
    return [(m, sigs[i].tobytes(), pks[w].tobytes()) for i, (m, w) in enumerate(zip(msgs, which))]


def test_keypairs_and_signatures_match_pynacl():
    seeds = np.frombuffer(os.urandom(32 * 50), dtype=np.uint8).reshape(50, 32)
    pks, sks = keypairs_from_seeds(seeds)
    for seed, pk, sk in zip(seeds, pks, sks):
        key = nacl.signing.SigningKey(seed.tobytes())
        assert pk.tobytes() == bytes(key.verify_key)
        assert sk.tobytes() == seed.tobytes() + bytes(key.verify_key)
        msg = os.urandom(40)
        assert sign_batch([msg], [sk.tobytes()])[0].tobytes() == key.sign(msg).signature


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_differential_random_valid_and_corrupted(signed_items, threads):
    rng = random.Random(threads)
    items = []
    for m, s, k in signed_items:
        items.append(corrupt(rng, m, s, k, signed_items) if rng.random() < 0.5 else (m, s, k))
    ok = verify_batch(*zip(*items), threads=threads)
    expected = [reference_verify(*it) for it in items]
    assert ok.dtype == np.bool_
    assert ok.tolist() == expected
    # Both outcomes are well represented, so the comparison means something.
    assert 0.3 < sum(expected) / len(expected) < 0.8


def test_wycheproof(wycheproof_ed25519):
    msgs, sigs, pks, expected, ids = zip(*wycheproof_ed25519)
    ok = verify_batch(msgs, sigs, pks)
    wrong = [i for i, got, want in zip(ids, ok, expected) if bool(got) != want]
    assert wrong == []
    assert sum(expected) == 88


def test_numpy_columns_without_copies():
    seeds = np.frombuffer(os.urandom(32 * 40), dtype=np.uint8).reshape(40, 32)
    pks, sks = keypairs_from_seeds(seeds)
    msgs = np.frombuffer(os.urandom(40 * 48), dtype=np.uint8).reshape(40, 48)
    sigs = sign_batch(msgs, sks)
    sigs[0, 40] ^= 1
    ok = verify_batch(msgs, sigs, pks)
    assert ok.tolist() == [False] + [True] * 39
    # Same answer when messages come as bytes and the rest as arrays.
    assert verify_batch([m.tobytes() for m in msgs], sigs, pks).tolist() == ok.tolist()


def test_wrong_lengths_are_false_for_that_item_only(signed_items):
    m, s, k = zip(*signed_items[:10])
    s = list(s)
    k = list(k)
    s[2] = b""
    s[3] = s[3] + b"\x00"
    k[5] = k[5][:31]
    k[6] = b""
    ok = verify_batch(m, s, k)
    assert ok.tolist() == [i not in (2, 3, 5, 6) for i in range(10)]


def test_bad_arguments_raise_clear_errors(signed_items):
    m, s, k = zip(*signed_items[:3])
    with pytest.raises(ValueError, match="differ in length"):
        verify_batch(m, s[:2], k)
    with pytest.raises(TypeError, match="signatures"):
        verify_batch(m, [s[0], "text", s[2]], k)
    with pytest.raises(TypeError):
        verify_batch(b"abc", s, k)
    with pytest.raises(ValueError, match="method"):
        verify_batch(m, s, k, method="nope")
    with pytest.raises(ValueError, match="threads"):
        verify_batch(m, s, k, threads=0)
    with pytest.raises(TypeError, match="2-D"):
        verify_batch(m, np.zeros((3, 8, 8), np.uint8), k)


def test_empty_batch():
    assert verify_batch([], [], []).shape == (0,)


def test_core_uses_libsodium_from_pynacl_or_system():
    # PyNaCl is a dependency, so its bundled copy is the one found first.
    assert "nacl" in _core.SODIUM_PATH
    assert nacl.bindings.crypto_sign_BYTES == 64


def test_throughput_report(signed_items, capsys):
    """Benchmark-style report, not a timed test: prints verifies/s for 1 and all threads."""
    import time

    m, s, k = zip(*signed_items)
    rates = {}
    for threads in (1, _core.cpu_count()):
        start = time.perf_counter()
        ok = verify_batch(m, s, k, threads=threads)
        rates[threads] = len(m) / (time.perf_counter() - start)
        assert ok.all()
    with capsys.disabled():
        print("\nverify_batch: " + ", ".join(f"{t} thread(s) {r:,.0f}/s" for t, r in rates.items()))


def test_a_bytearray_cannot_be_resized_while_a_call_reads_it():
    # The core reads columns without the GIL: a bytearray resized meanwhile would be
    # freed under it.  A column holds every bytearray exported until it goes.
    from engine import _core

    item = bytearray(b"x" * 64)
    column = _core._Column([b"y" * 32, item], "messages")
    with pytest.raises(BufferError):
        item.extend(b"more")
    del column
    item.extend(b"more")  # released with the column
    assert len(item) == 68
