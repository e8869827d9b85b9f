"""pytest-benchmark: the one-time-nonce table (engine/native/replay_table.c).

    .venv/bin/python -m pytest bench/test_replay_bench.py

The server's traffic shape: batches of 20 fresh keys, each kept 65 s, the clock moving
with a fixed rate of keys per second.  One round is 20,000 calls on a table that keeps
its state across rounds, so growth, migrations and the sweeps of expired entries fall
inside the timed rounds (divide by 400,000 for a key; the keys are made beforehand).
"""

from __future__ import annotations

import os

from engine.replay import MemoryReplayCache

RATE = 21_773  # keys per second
WINDOW_MS = 65_000
BATCH = 20


def test_replay_steady_traffic(benchmark, quick):
    calls = 2_000 if quick else 20_000
    table = MemoryReplayCache()
    batches = [[os.urandom(32) for _ in range(BATCH)] for _ in range(calls)]
    step_ms = BATCH * 1000 / RATE
    clock = {"call": 0}

    def run():
        check, c0 = table.check_and_record, clock["call"]
        for i, keys in enumerate(batches):
            now = 1_000_000 + int((c0 + i) * step_ms)
            check(keys, [now + WINDOW_MS] * BATCH, now)
        clock["call"] = c0 + calls

    benchmark.group = f"replay table, {BATCH} keys a call"
    benchmark.pedantic(run, rounds=5 if quick else 20, iterations=1)
    assert table.live(1_000_000 + int(clock["call"] * step_ms)) > 0
