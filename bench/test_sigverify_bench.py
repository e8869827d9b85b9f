"""pytest-benchmark suite: Ed25519 verification by method and batch size.

    .venv/bin/python -m pytest bench/test_sigverify_bench.py

One call of ``verify_batch`` per round on one thread; the groups put the three
methods side by side for each batch size (divide by the size for the cost per
signature).  ``--benchmark-only`` and the other pytest-benchmark options apply.
"""

from __future__ import annotations

import pytest

from bench.compare_sigverify import workload
from engine.sigverify import verify_batch

SIZES = [1, 16, 64, 256, 1024]


@pytest.fixture(scope="module", params=["distinct", "real mix"])
def items(request):
    return request.param, workload(request.param, max(SIZES))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", ["single", "batch", "auto"])
def test_verify(benchmark, items, method, size):
    kind, (msgs, sigs, pks) = items
    m, s, k = msgs[:size], sigs[:size], pks[:size]
    benchmark.group = f"{kind}, batch {size}"
    benchmark.extra_info["signatures"] = size
    ok = benchmark(verify_batch, m, s, k, method=method, threads=1)
    assert ok.all()
