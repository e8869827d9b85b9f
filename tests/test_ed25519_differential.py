"""Batch verification against libsodium over hundreds of thousands of signatures.

Valid signatures from libsodium, a varying share of them corrupted (bit flips in R,
S, A and the message, another signer's key, signatures and messages swapped between
items), cut into batches of many sizes with the bad items at random positions and in
densities from none to all.  Every batch verdict must equal libsodium's: the core's
method="single" C loop for all of them (libsodium per item; random corruptions never
produce the constructed mixed-order signatures for which its cofactored fallback
matters), and PyNaCl's own Python call on a sample.

ESSC_LONG_TESTS=1 runs ten times as many.
"""

from __future__ import annotations

import os
import random

import nacl.exceptions
import nacl.signing
import numpy as np
import pytest

from engine import _core
from engine.sigverify import keypairs_from_seeds, sign_batch, verify_batch

N = 2_000_000 if os.environ.get("ESSC_LONG_TESTS") else 200_000
KEYS = 3000
SIZES = [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 63, 64, 65, 100, 128, 200, 256, 500, 1024, 2000, 4096]
# Mostly clean batches, as in service, but every density from none to all.
DENSITIES = ["none", "none", "one", "one", "two", "1%", "10%", "50%", "all"]


def flip(b: bytes, i: int, bit: int) -> bytes:
    return b[:i] + bytes([b[i] ^ (1 << bit)]) + b[i + 1 :]


def corrupt(rng: random.Random, items: list, i: int) -> None:
    """Makes items[i] invalid in one of the ways the brief lists (in place)."""
    msg, sig, pk = items[i]
    kind = rng.randrange(7)
    j = rng.randrange(len(items))
    if kind == 0 and msg:
        msg = flip(msg, rng.randrange(len(msg)), rng.randrange(8))
    elif kind == 1:
        sig = flip(sig, rng.randrange(32), rng.randrange(8))
    elif kind == 2:
        sig = flip(sig, 32 + rng.randrange(32), rng.randrange(8))
    elif kind == 3:
        pk = flip(pk, rng.randrange(32), rng.randrange(8))
    elif kind == 4:
        pk = items[j][2]  # another signer's key (maybe the same one: then still valid)
    elif kind == 5:
        sig = items[j][1]  # another item's signature
    else:
        msg = items[j][0]  # another item's message
    items[i] = (msg, sig, pk)


@pytest.fixture(scope="module")
def corpus():
    """N signed items, cut into batches with their share of corrupted items."""
    rng = random.Random(20240501)
    seeds = np.frombuffer(rng.randbytes(32 * KEYS), dtype=np.uint8).reshape(KEYS, 32)
    pks, sks = keypairs_from_seeds(seeds)
    # Like the engine's traffic: a few keys (issuers) sign much of it.
    which = [rng.randrange(31) if rng.random() < 0.4 else rng.randrange(KEYS) for _ in range(N)]
    lengths = [rng.choice((0, 1, 32, 64, 100, 160, 300)) for _ in range(N)]
    blob = rng.randbytes(sum(lengths))
    msgs, pos = [], 0
    for n in lengths:
        msgs.append(blob[pos : pos + n])
        pos += n
    sigs = sign_batch(msgs, sks[which])
    items = [(m, sigs[i].tobytes(), pks[w].tobytes()) for i, (m, w) in enumerate(zip(msgs, which))]
    batches, start = [], 0
    while start < N:
        size = min(rng.choice(SIZES), N - start)
        density = rng.choice(DENSITIES)
        chunk = items[start : start + size]
        count = {
            "none": 0,
            "one": 1,
            "two": 2,
            "1%": size // 100,
            "10%": size // 10,
            "50%": size // 2,
            "all": size,
        }[density]
        for i in rng.sample(range(size), min(count, size)):
            corrupt(rng, chunk, i)
        items[start : start + size] = chunk
        batches.append((start, size))
        start += size
    m, s, k = (list(x) for x in zip(*items))
    reference = verify_batch(m, s, k, method="single")
    return m, s, k, batches, reference


def test_corpus_is_large_and_mixed(corpus):
    m, _, _, batches, reference = corpus
    assert len(m) == N >= 200_000
    assert 0.08 < 1 - reference.mean() < 0.5  # tens of thousands of each verdict
    assert len({size for _, size in batches}) >= len(SIZES) - 1
    assert len(batches) > 300


def test_reference_is_libsodium(corpus):
    """The core's single path equals PyNaCl's verify on a sample of the corpus."""
    m, s, k, _, reference = corpus
    rng = random.Random(3)
    for i in rng.sample(range(len(m)), 3000):
        try:
            nacl.signing.VerifyKey(k[i]).verify(m[i], s[i])
            want = True
        except (nacl.exceptions.BadSignatureError, ValueError, nacl.exceptions.ValueError):
            want = False
        assert bool(reference[i]) == want, i


def test_each_batch_matches_libsodium(corpus):
    """One batch call per chunk, alternating the MSM algorithm between forced and
    chosen by size."""
    m, s, k, batches, reference = corpus
    mismatches = []
    for n, (start, size) in enumerate(batches):
        end = start + size
        msm = ("auto", "straus", "pippenger")[n % 3]
        if msm == "straus" and size > 1024:
            msm = "auto"  # forcing Straus on thousands of points is only slow
        ok, _, _ = _core._ed25519_test_verify_batch(
            m[start:end], s[start:end], k[start:end], msm, 4096
        )
        if ok.tolist() != reference[start:end].tolist():
            mismatches.append((start, size, msm))
    assert mismatches == []


def test_batches_with_scalar_point_decoding(corpus):
    """A quarter of the batches again with the AVX-512 IFMA decoding switched off (on
    CPUs without it, this is the path everything takes)."""
    m, s, k, batches, reference = corpus
    was = _core.ed25519_simd(False)
    try:
        for start, size in batches[: len(batches) // 4]:
            end = start + size
            ok, _, _ = _core._ed25519_test_verify_batch(m[start:end], s[start:end], k[start:end])
            assert ok.tolist() == reference[start:end].tolist(), (start, size)
    finally:
        _core.ed25519_simd(was)


@pytest.mark.parametrize("method,threads,share", [("batch", 2, 1), ("auto", 2, 4), ("batch", 1, 4)])
def test_whole_corpus_through_the_api(corpus, method, threads, share):
    """All N (or a share) at once: per-thread ranges, sub-batches of the default size."""
    m, s, k, _, reference = corpus
    n = N // share
    m, s, k, reference = m[:n], s[:n], k[:n], reference[:n]
    ok = verify_batch(m, s, k, method=method, threads=threads)
    assert np.array_equal(ok, reference)


def test_numpy_columns(corpus):
    """Fixed-width rows as numpy arrays, as the engine passes them."""
    m, s, k, _, reference = corpus
    idx = [i for i in range(50_000) if len(m[i]) == 100 and len(s[i]) == 64 and len(k[i]) == 32]
    msgs = np.frombuffer(b"".join(m[i] for i in idx), dtype=np.uint8).reshape(-1, 100)
    sigs = np.frombuffer(b"".join(s[i] for i in idx), dtype=np.uint8).reshape(-1, 64)
    pks = np.frombuffer(b"".join(k[i] for i in idx), dtype=np.uint8).reshape(-1, 32)
    assert len(idx) > 3000
    ok = verify_batch(msgs, sigs, pks, method="batch")
    assert ok.tolist() == reference[idx].tolist()
