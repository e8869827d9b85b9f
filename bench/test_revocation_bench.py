"""pytest-benchmark suite for revocation look-ups (CI benchmark runs, not the test suite).

    .venv/bin/python -m pytest bench/test_revocation_bench.py --benchmark-only

One million entries (the quick size of bench/compare_revocation.py), batches of 4096
credential serials, 1% revoked.  Each case is one batch; compare cases by their means.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.compare_revocation import BATCH, QUICK_ENTRIES, queries, snapshot
from engine.revocation.store import RevocationStore


@pytest.fixture(scope="module")
def store():
    path, _ = snapshot(QUICK_ENTRIES, quiet=True)
    return RevocationStore(path)


@pytest.fixture(scope="module")
def batch():
    rows, _ = queries(QUICK_ENTRIES, BATCH)
    return rows


def test_contains_numpy_batch(benchmark, store, batch):
    ids = batch.view("S16").reshape(-1)
    result = benchmark(store.contains, "credential", ids)
    assert result.sum() == int(BATCH * 0.01)


def test_contains_list_batch(benchmark, store, batch):
    ids = [r.tobytes() for r in batch]
    result = benchmark(store.contains, "credential", ids)
    assert result.sum() == int(BATCH * 0.01)


def test_bare_bloom_probe_batch(benchmark, store, batch):
    ids = batch.view("S16").reshape(-1)
    result = benchmark(store.bloom_contains, "credential", ids)
    assert result.sum() >= int(BATCH * 0.01)


def test_rbloom_per_key_batch(benchmark, batch):
    import rbloom

    from bench.compare_revocation import _population_bytes

    bf = rbloom.Bloom(QUICK_ENTRIES, 0.01)
    for ids in _population_bytes(QUICK_ENTRIES):
        bf.update(ids)
    keys = [r.tobytes() for r in batch]
    hits = benchmark(lambda: sum(map(bf.__contains__, keys)))
    assert hits >= int(BATCH * 0.01)


def test_pybloomfiltermmap3_per_key_batch(benchmark, batch):
    import pybloomfilter

    from bench.compare_revocation import _population_bytes

    bf = pybloomfilter.BloomFilter(QUICK_ENTRIES, 0.01)
    for ids in _population_bytes(QUICK_ENTRIES):
        bf.update(ids)
    keys = [r.tobytes() for r in batch]
    hits = benchmark(lambda: sum(map(bf.__contains__, keys)))
    assert hits >= int(BATCH * 0.01)


def test_reload(benchmark, store):
    # Open, checksum and swap in the whole snapshot again (18 MiB).
    benchmark(store.reload)
    assert store.contains("credential", np.zeros(1, dtype="S16")).shape == (1,)
