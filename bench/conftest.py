"""Fixtures for the pytest-benchmark suites (run: python -m pytest bench/).

ESSC_BENCH_QUICK=1 (set by CI) shrinks sizes so the suites run in seconds and never rot;
their timings are then only a smoke signal, never asserted.
"""

from __future__ import annotations

import os
import time

import pytest

QUICK = os.environ.get("ESSC_BENCH_QUICK") == "1"


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    from engine.tools.pki import init

    return init(tmp_path_factory.mktemp("bench-pki") / "pki")


@pytest.fixture(scope="session")
def scenarios(pki):
    from engine.tools.scenarios import Scenarios

    return Scenarios(pki, int(time.time()), holders_per_outcome=64)
