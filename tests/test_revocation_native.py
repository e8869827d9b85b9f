"""The revocation store's native pieces: XXH64, CRC32C, the Bloom filter, the exact tier
and the input parser, against published values and Python models."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine import _core
from engine.revocation.format import bloom_blocks_for, sbbf_fpr

M64 = (1 << 64) - 1
PRIME32 = 2654435761
PRIME64 = 11400714785074694797

# (length, seed, XXH64) over the xxHash sanity buffer: the values published with the
# reference implementation (cli/xsum_sanity_check.c).
XXH64_SANITY = [
    (0, 0, 0xEF46DB3751D8E999),
    (0, PRIME32, 0xAC75FDA2929B17EF),
    (1, 0, 0xE934A84ADB052768),
    (1, PRIME32, 0x5014607643A9B4C3),
    (4, 0, 0x9136A0DCA57457EE),
    (4, PRIME32, 0xCAAB286BD8E9FDB5),
    (14, 0, 0x8282DCC4994E35C8),
    (14, PRIME32, 0xC3BD6BF63DEB6DF0),
    (222, 0, 0xB641AE8CB691C174),
    (222, PRIME32, 0x20CB8AB7AE10C14A),
]


def sanity_buffer(n: int) -> bytes:
    out = bytearray(n)
    gen = PRIME32
    for i in range(n):
        out[i] = gen >> 56
        gen = (gen * PRIME64) & M64
    return bytes(out)


def xxh64_model(data: bytes, seed: int) -> int:
    """XXH64 straight from the specification, in Python."""
    p1, p2, p3, p4, p5 = (
        0x9E3779B185EBCA87,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0x85EBCA77C2B2AE63,
        0x27D4EB2F165667C5,
    )

    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & M64

    def rnd(acc, lane):
        return rotl((acc + lane * p2) & M64, 31) * p1 & M64

    def u64(i):
        return int.from_bytes(data[i : i + 8], "little")

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + p1 + p2) & M64, (seed + p2) & M64, seed, (seed - p1) & M64]
        while i + 32 <= n:
            v = [rnd(v[j], u64(i + 8 * j)) for j in range(4)]
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for x in v:
            h = ((h ^ rnd(0, x)) * p1 + p4) & M64
    else:
        h = (seed + p5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = (rotl(h ^ rnd(0, u64(i)), 27) * p1 + p4) & M64
        i += 8
    if i + 4 <= n:
        h = (rotl(h ^ (int.from_bytes(data[i : i + 4], "little") * p1 & M64), 23) * p2 + p3) & M64
        i += 4
    while i < n:
        h = rotl(h ^ (data[i] * p5 & M64), 11) * p1 & M64
        i += 1
    h ^= h >> 33
    h = h * p2 & M64
    h ^= h >> 29
    h = h * p3 & M64
    return h ^ (h >> 32)


@pytest.mark.parametrize(("length", "seed", "expected"), XXH64_SANITY)
def test_xxh64_published_sanity_values(length, seed, expected):
    assert _core.xxh64(sanity_buffer(length), seed) == expected


def test_xxh64_published_strings():
    assert _core.xxh64(b"") == 0xEF46DB3751D8E999
    assert _core.xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1
    assert _core.xxh64(b"ABC") == 0xE66AE7354FCFEE98
    assert _core.xxh64(b"xxhash") == 0x32DD38952C4BC720


def test_xxh64_matches_the_specification_at_every_length():
    rng = random.Random(3)
    for length in range(0, 80):
        data = rng.randbytes(length)
        seed = rng.getrandbits(64)
        assert _core.xxh64(data, seed) == xxh64_model(data, seed), length
        # Unaligned input gives the same answer.
        assert _core.xxh64(memoryview(b"x" + data)[1:], seed) == xxh64_model(data, seed)


def test_fingerprint_is_xxh64_of_kind_byte_and_id():
    # The definition of hash id 1 (docs/FORMATS.md): h1 = XXH64(kind || id, seed),
    # h2 = XXH64(kind || id, seed ^ 0x6A09E667F3BCC908).  The look-up code computes it
    # without assembling the key; it must agree with the plain function exactly.
    rng = random.Random(9)
    for kind, length in ((_core.KIND_CARD, 9), (_core.KIND_CREDENTIAL, 16)):
        ids = [rng.randbytes(length) for _ in range(500)]
        seeds = [rng.getrandbits(64) for _ in range(500)]
        rows = np.zeros((500, 16), dtype=np.uint8)
        for i, ident in enumerate(ids):
            rows[i, :length] = list(ident)
        for i, (ident, seed) in enumerate(zip(ids, seeds)):
            fp = _core.fingerprint_rows(seed, np.array([kind], np.uint8), rows[i : i + 1])[0]
            key = bytes([kind]) + ident
            assert int(fp[0]) == _core.xxh64(key, seed)
            assert int(fp[1]) == _core.xxh64(key, seed ^ 0x6A09E667F3BCC908)


def test_crc32c_published_values():
    assert _core.crc32c(b"123456789") == 0xE3069283
    # RFC 3720, appendix B.4.
    assert _core.crc32c(bytes(32)) == 0x8A9136AA
    assert _core.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert _core.crc32c(bytes(range(32))) == 0x46DD794E
    assert _core.crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert _core.crc32c(b"") == 0


def test_crc32c_hardware_and_table_paths_agree_and_chain():
    rng = random.Random(5)
    for length in [*range(0, 40), 1000, 4096, 70_001, 300_000]:
        data = rng.randbytes(length + 3)
        for start in range(3):  # every alignment
            piece = memoryview(data)[start : start + length]
            whole = _core.crc32c(piece)
            assert _core.crc32c_sw(piece) == whole
            cut = length // 3
            assert _core.crc32c(piece[cut:], _core.crc32c(piece[:cut])) == whole
            assert _core.crc32c_sw(piece[cut:], _core.crc32c_sw(piece[:cut])) == whole


SALTS = [
    0x47B6137B,
    0x44974D91,
    0x8824AD5B,
    0xA2B7289D,
    0x705495C7,
    0x2DF1424B,
    0x9EFC4947,
    0x5C6BFB31,
]


def test_bloom_layout_is_parquet_split_block():
    rng = random.Random(7)
    nblocks = 1000
    for _ in range(50):
        h = rng.getrandbits(64)
        words = np.zeros(nblocks * 8, dtype=np.uint32)
        _core.bloom_insert(words, np.array([h], dtype=np.uint64))
        block = ((h >> 32) * nblocks) >> 32
        expected = np.zeros(nblocks * 8, dtype=np.uint32)
        for i, salt in enumerate(SALTS):
            expected[block * 8 + i] = 1 << ((((h & 0xFFFFFFFF) * salt) & 0xFFFFFFFF) >> 27)
        assert np.array_equal(words, expected)


def test_bloom_over_2_to_the_32_bits():
    # 1.5 * 2^24 blocks = 1.5 * 2^32 bits (768 MiB).  np.zeros maps untouched pages
    # lazily, so this costs only the pages the inserted keys land on.
    nblocks = 3 << 23
    words = np.zeros(nblocks * 8, dtype=np.uint32)
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, M64, size=20_000, dtype=np.uint64, endpoint=True)
    _core.bloom_insert(words, hashes)
    assert _core.bloom_probe_hashes(words, hashes).all()
    blocks = ((hashes >> np.uint64(32)) * np.uint64(nblocks)) >> np.uint64(32)
    assert (blocks >= (1 << 24)).any()  # keys land past the 2^32-bit mark
    assert (blocks < nblocks).all()
    others = rng.integers(0, M64, size=20_000, dtype=np.uint64, endpoint=True)
    assert _core.bloom_probe_hashes(words, others).sum() == 0  # a nearly empty filter


def test_sbbf_sizing_meets_the_target():
    for fpr in (0.1, 0.01, 0.001, 1e-5):
        for n in (1, 1000, 10**6, 5 * 10**7):
            blocks = bloom_blocks_for(n, fpr)
            assert sbbf_fpr(n / blocks) <= fpr
            assert sbbf_fpr(n / (blocks - 1)) > fpr if blocks > 1 else True
    # About 10.5 bits per key at 1%: the split-block price over a classic filter's 9.6.
    assert 10.0 < 256 * bloom_blocks_for(10**6, 0.01) / 10**6 < 11.0


def fps_model_unique(fps: np.ndarray) -> np.ndarray:
    order = np.lexsort((fps[:, 1], fps[:, 0]))
    s = fps[order]
    keep = np.ones(len(s), dtype=bool)
    keep[1:] = (s[1:] != s[:-1]).any(axis=1)
    return s[keep]


@pytest.mark.parametrize("n", [0, 1, 2, 31, 33, 1000, 200_000])
def test_fingerprint_sort_unique_and_index(n):
    rng = np.random.default_rng(n)
    fps = rng.integers(0, M64, size=(n, 2), dtype=np.uint64, endpoint=True)
    if n > 10:  # duplicates, and equal h1 with different h2
        fps[n // 2 :: 7] = fps[: len(fps[n // 2 :: 7])]
        fps[3, 0] = fps[4, 0]
    expected = fps_model_unique(fps)
    work = fps.copy()
    kept = _core.fp_sort_unique(work)
    assert np.array_equal(work[:kept], expected)
    sorted_fps = np.ascontiguousarray(work[:kept])
    bits = _core.fpset_bits_for(kept)
    index = _core.fpset_index(sorted_fps, bits)
    assert len(index) == (1 << bits) + 1
    buckets = (sorted_fps[:, 0] >> np.uint64(64 - bits)) if bits else np.zeros(kept, np.uint64)
    assert np.array_equal(index, np.searchsorted(buckets, np.arange((1 << bits) + 1)))
    assert _core.fpset_check_index(index, bits, kept) == 0
    assert _core.fpset_validate(sorted_fps, bits, index) == 0
    if kept > 2:
        broken = index.copy()
        broken[len(broken) // 2] = kept + 5  # a look-up would run past the end
        assert _core.fpset_check_index(broken, bits, kept) != 0
        swapped = sorted_fps.copy()
        swapped[[0, 1]] = swapped[[1, 0]]
        assert _core.fpset_validate(swapped, bits, index) != 0


def test_fingerprint_merge():
    rng = np.random.default_rng(2)
    a = fps_model_unique(rng.integers(0, 1000, size=(500, 2), dtype=np.uint64))
    b = fps_model_unique(np.concatenate([a[::3], rng.integers(0, 1000, (300, 2), np.uint64)]))
    merged = _core.fp_merge(np.ascontiguousarray(a), np.ascontiguousarray(b))
    assert np.array_equal(merged, fps_model_unique(np.concatenate([a, b])))


def test_parse_ids_lines_comments_and_reasons():
    text = (
        b"# header comment\n"
        b"\n"
        b"card G12345678\n"
        b"  credential 00112233445566778899AABBCCDDEEFF   # trailing comment\r\n"
        b"card g12345678\n"  # 5: lower-case letter
        b"card G1234567\n"  # 6: too short
        b"credential 0011\n"  # 7: short serial
        b"credential 00112233445566778899aabbccddeefg\n"  # 8: not hex
        b"token X\n"  # 9: unknown kind
        b"card\n"  # 10: no id
        b"card Z00000000 extra\n"  # 11: extra text
        b"\tcard\tA00000001"  # 12: no final newline
    )
    kinds, rows, nlines, nbad, first = _core.parse_ids(text)
    assert nlines == 12
    assert list(kinds) == [_core.KIND_CARD, _core.KIND_CREDENTIAL, _core.KIND_CARD]
    assert rows[0].tobytes() == b"G12345678" + bytes(7)
    assert rows[1].tobytes() == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert rows[2].tobytes() == b"A00000001" + bytes(7)
    assert nbad == 7
    assert first == [(4, 3), (5, 3), (6, 4), (7, 4), (8, 1), (9, 2), (10, 5)]
    _, _, _, nbad, first = _core.parse_ids(text, 2)
    assert nbad == 7 and len(first) == 2
