"""pytest-benchmark suite: the hashing and checksums the native core exposes.

    .venv/bin/python -m pytest bench/test_hashing_bench.py

- XXH64 (``_core.xxh64``): one call per buffer; the 17-byte case is one id as the
  revocation store hashes it (kind byte and 16-byte serial), so it is mostly call cost.
- Fingerprints (``_core.fingerprint_rows``): the batched XXH64 of the revocation
  build and look-ups, 4096 credential serials per call (divide by 4096 per id).
- CRC32C (``_core.crc32c``, hardware where the CPU has it, and ``crc32c_sw``, the
  table-driven fallback): the checksum of every data file the engine opens; zlib's
  CRC-32 in the same group only for scale (a different polynomial).

SHA-512 is not here: the core computes it inside signature verification and does not
expose it on its own (bench/test_sigverify_bench.py times verification as a whole).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from engine import _core

SIZES = {"64KiB": 64 << 10, "1MiB": 1 << 20}
ROWS = 4096


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).bytes(max(SIZES.values()))


def test_xxh64_id(benchmark):
    one_id = bytes([_core.KIND_CREDENTIAL]) + bytes(range(16))
    benchmark.group = "xxh64, one 17-byte id"
    benchmark(_core.xxh64, one_id)


@pytest.mark.parametrize("size", list(SIZES))
def test_xxh64_buffer(benchmark, data, size):
    buf = data[: SIZES[size]]
    benchmark.group = f"xxh64, {size}"
    benchmark.extra_info["bytes"] = len(buf)
    benchmark(_core.xxh64, buf)


def test_fingerprint_rows(benchmark, quick):
    n = 256 if quick else ROWS
    rows = np.frombuffer(np.random.default_rng(2).bytes(16 * n), np.uint8).reshape(n, 16)
    kinds = np.full(n, _core.KIND_CREDENTIAL, dtype=np.uint8)
    benchmark.group = f"fingerprints, {n} credential serials"
    benchmark.extra_info["ids"] = n
    fps = benchmark(_core.fingerprint_rows, 0x5EED, kinds, rows)
    assert fps.shape == (n, 2)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["crc32c", "crc32c_sw", "zlib.crc32"])
def test_checksum(benchmark, data, size, impl):
    buf = data[: SIZES[size]]
    fn = {"crc32c": _core.crc32c, "crc32c_sw": _core.crc32c_sw, "zlib.crc32": zlib.crc32}[impl]
    benchmark.group = f"checksum, {size}"
    benchmark.extra_info["bytes"] = len(buf)
    benchmark.extra_info["hardware_crc32c"] = _core.crc32c_hw_available()
    benchmark(fn, buf)
    if impl == "crc32c_sw":
        assert fn(buf) == _core.crc32c(buf)  # the two paths agree
